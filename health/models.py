"""The organization's health model (versioned) and one score per account per day."""

from django.conf import settings
from django.db import models

from accounts.models import Account, Organization

# The components every score is made of; weights are per organization.
COMPONENTS = ("usage", "engagement", "support", "billing", "onboarding")

DEFAULT_WEIGHTS = {"usage": 30, "engagement": 25, "support": 15, "billing": 15, "onboarding": 15}
DEFAULT_BANDS = {"green": 70, "yellow": 40}  # green >= 70, yellow 40-69, red < 40
DEFAULT_GATES = {"invoice_past_due_days": 30, "champion_gone": True, "red_cap": 39}
DEFAULT_STALE_AFTER_DAYS = 7


class HealthModel(models.Model):
    """One version of an organization's health configuration; a change makes a new row."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    weights = models.JSONField(default=dict)
    bands = models.JSONField(default=dict)
    gates = models.JSONField(default=dict)
    stale_after_days = models.PositiveSmallIntegerField(default=DEFAULT_STALE_AFTER_DAYS)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "version"], name="healthmodel_org_version")]

    def __str__(self) -> str:
        return f"health model v{self.version}"


class Band(models.TextChoices):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class HealthScore(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="health_scores")
    date = models.DateField()
    model_version = models.PositiveIntegerField()
    score = models.DecimalField(max_digits=5, decimal_places=1)
    band = models.CharField(max_length=6, choices=Band.choices)
    delta = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    # {component: 0-100} for the components that counted
    components = models.JSONField(default=dict)
    # {component: "YYYY-MM-DD"} newest data behind each component, null when none
    component_dates = models.JSONField(default=dict)
    # {component: "no data" | "stale since YYYY-MM-DD"} left out, weight redistributed
    excluded = models.JSONField(default=dict)
    gate = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "account", "date"], name="healthscore_org_account_date")]
        indexes = [models.Index(fields=["org", "date", "band"], name="healthscore_org_date_band")]
