"""Open conditions (signals), the ranked triage list of a day, and the record of nightly runs."""

from django.conf import settings
from django.db import models

from accounts.models import Account, Organization


class SignalType(models.TextChoices):
    BLOCKED_TASK = "blocked_task", "Blocked task"
    SILENT_ACCOUNT = "silent_account", "Silent account"
    HEALTH_DROP = "health_drop", "Health drop"
    GO_LIVE_SOON = "go_live_soon", "Go-live soon"
    FOLLOW_UP_DUE = "follow_up_due", "Follow-up due"
    RENEWAL_SOON = "renewal_soon", "Renewal soon"
    PLAN_LIMIT = "plan_limit", "Near plan limit"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    SUPPORT_SPIKE = "support_spike", "Support spike"


class SignalStatus(models.TextChoices):
    OPEN = "open"
    DONE = "done"
    SNOOZED = "snoozed"


class SignalThresholds(models.Model):
    """Per-organization thresholds of the signal rules (defaults from the product rules)."""

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+")
    silent_days = models.PositiveSmallIntegerField(default=10)
    health_drop_points = models.PositiveSmallIntegerField(default=10)
    go_live_days = models.PositiveSmallIntegerField(default=7)
    follow_up_days = models.PositiveSmallIntegerField(default=2)
    renewal_days = models.PositiveSmallIntegerField(default=90)
    plan_limit_percent = models.PositiveSmallIntegerField(default=80)
    payment_lookback_days = models.PositiveSmallIntegerField(default=30)
    support_spike_min_tickets = models.PositiveSmallIntegerField(default=3)
    support_spike_ratio = models.DecimalField(max_digits=4, decimal_places=2, default=2)

    class Meta:
        verbose_name_plural = "signal thresholds"


class Signal(models.Model):
    """One condition on one account (and the task, ticket or invoice behind it, if any).

    A row is *active* while `cleared_on` is null; at most one active row per key. When the
    condition clears, the next run sets `cleared_on`; if it appears again, a new row starts.
    """

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="signals")
    type = models.CharField(max_length=20, choices=SignalType.choices)
    entity_key = models.CharField(max_length=120, blank=True, help_text="e.g. task:T-1; empty for account-wide")
    status = models.CharField(max_length=8, choices=SignalStatus.choices, default=SignalStatus.OPEN)
    severity = models.PositiveSmallIntegerField()
    first_seen = models.DateField()
    last_seen = models.DateField()
    is_new = models.BooleanField(default=True)
    cause = models.TextField()
    action = models.CharField(max_length=200)
    evidence = models.JSONField(default=dict)
    deadline = models.DateField(null=True, blank=True)
    snoozed_until = models.DateField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    cleared_on = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "account", "type", "entity_key"],
                condition=models.Q(cleared_on__isnull=True),
                name="signal_one_active_per_condition",
            )
        ]
        indexes = [models.Index(fields=["org", "status", "last_seen"], name="signal_org_status_seen")]


class TriageItem(models.Model):
    """An account's place in the ranked list of one day, with the reasons for it."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    date = models.DateField()
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    priority = models.FloatField()
    group = models.CharField(max_length=20)
    reasons = models.JSONField(default=list)
    signal_ids = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "date", "account"], name="triage_org_date_account"),
        ]
        indexes = [models.Index(fields=["org", "date", "rank"], name="triage_org_date_rank")]


class RunStatus(models.TextChoices):
    QUEUED = "queued"  # claimed by the dispatcher, its task not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NightlyRun(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    run_date = models.DateField()
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    stage_timings = models.JSONField(default=dict)
    counts = models.JSONField(default=dict)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "run_date"], name="nightlyrun_org_date")]
