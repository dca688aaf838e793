from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CsmConfig(AppConfig):
    default = True
    name = "csm"
    verbose_name = "Vigil"


class VigilAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "csm.admin.OrgAdminSite"
