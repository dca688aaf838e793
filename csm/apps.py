from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class CsmConfig(AppConfig):
    name = "csm"
    verbose_name = "Vigil"


class VigilAdminConfig(AdminConfig):
    default_site = "csm.admin.OrgAdminSite"
