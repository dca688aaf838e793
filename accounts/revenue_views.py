"""The Revenue page (Account Managers, leaders and admins)."""

from django.views.generic import TemplateView

from accounts.models import Role
from accounts.revenue import RENEWAL_WINDOWS, am_choices, revenue_am_filter, revenue_page
from csm.tenancy import OrgViewMixin


def _number(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


class RevenueView(OrgViewMixin, TemplateView):
    template_name = "accounts/revenue.html"
    allowed_roles = (Role.ADMIN, Role.LEADER, Role.AM)

    def get_context_data(self, **kwargs):
        params = self.request.GET
        can_pick_am = self.membership.role in (Role.ADMIN, Role.LEADER)
        am_id = revenue_am_filter(membership=self.membership, am_id=_number(params.get("am", "")))
        revenue = revenue_page(
            org=self.org,
            am_id=am_id,
            window=_number(params.get("window", "")) or RENEWAL_WINDOWS[0],
            page=_number(params.get("page", "")) or 1,
        )
        query = params.copy()
        query.pop("page", None)
        return super().get_context_data(
            revenue=revenue,
            am_id=am_id,
            ams=am_choices(org=self.org) if can_pick_am else [],
            can_pick_am=can_pick_am,
            windows=RENEWAL_WINDOWS,
            query=query.urlencode(),
            **kwargs,
        )
