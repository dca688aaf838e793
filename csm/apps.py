from django.apps import AppConfig


class CsmConfig(AppConfig):
    name = "csm"
    verbose_name = "Vigil"
