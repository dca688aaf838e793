"""The Portfolio page (CS leaders and admins)."""

from django.views.generic import TemplateView

from accounts.models import Role, Stage
from csm.tenancy import OrgViewMixin
from health.portfolio import MOVER_POINTS, PortfolioFilters, portfolio
from signals.morning import csm_choices


class PortfolioView(OrgViewMixin, TemplateView):
    template_name = "health/portfolio.html"
    allowed_roles = (Role.ADMIN, Role.LEADER)

    def get_context_data(self, **kwargs):
        filters = PortfolioFilters.from_query(self.request.GET)
        return super().get_context_data(
            portfolio=portfolio(org=self.org, filters=filters),
            filters=filters,
            stages=Stage.choices,
            csms=csm_choices(org=self.org),
            mover_points=MOVER_POINTS,
            **kwargs,
        )
