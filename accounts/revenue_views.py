"""The Revenue page (Account Managers, leaders and admins)."""

from django.views.generic import TemplateView

from accounts.models import Role
from csm.tenancy import OrgViewMixin


class RevenueView(OrgViewMixin, TemplateView):
    template_name = "accounts/placeholder.html"
    allowed_roles = (Role.ADMIN, Role.LEADER, Role.AM)
