"""Health model and signal thresholds settings (admins only)."""

from django.views.generic import TemplateView

from accounts.models import Role
from csm.tenancy import OrgViewMixin


class HealthSettingsView(OrgViewMixin, TemplateView):
    template_name = "accounts/placeholder.html"
    allowed_roles = (Role.ADMIN,)
