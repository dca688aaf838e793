"""Connections to each organization's tools, their sync runs, and what could not be matched."""

from django.db import models

from accounts.models import Account, Organization


class Provider(models.TextChoices):
    HUBSPOT = "hubspot", "HubSpot"
    STRIPE = "stripe", "Stripe"
    SEGMENT = "segment", "Product usage (Segment-style events)"
    SALESFORCE = "salesforce", "Salesforce"
    ZENDESK = "zendesk", "Zendesk"
    INTERCOM = "intercom", "Intercom"


class ConnectionStatus(models.TextChoices):
    CONNECTED = "connected"
    FAILING = "failing"
    DISCONNECTED = "disconnected"


class Connection(models.Model):
    """One provider of one organization. Credentials are AES-256-GCM ciphertext (integrations/credentials.py)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=12, choices=Provider.choices)
    status = models.CharField(max_length=12, choices=ConnectionStatus.choices, default=ConnectionStatus.CONNECTED)
    credentials = models.BinaryField(default=bytes, editable=False)
    settings = models.JSONField(default=dict, blank=True)
    # {stream name: cursor}; advanced in the same transaction as the page it follows.
    cursors = models.JSONField(default=dict, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "provider"], name="connection_org_provider")]

    def __str__(self) -> str:
        return self.get_provider_display()


class SyncStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial", "Stopped early (rate limit or budget); resumes next run"
    FAILED = "failed"


class SyncRun(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=10, default="nightly")  # nightly | manual | first
    status = models.CharField(max_length=10, choices=SyncStatus.choices, default=SyncStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unmatched = models.PositiveIntegerField(default=0)
    # Stream being read now and records so far: the page shows progress from it.
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["org", "connection", "-started_at"], name="syncrun_org_conn_started")]


class AccountMapping(models.Model):
    """An admin's explicit link from a provider's record to an account (beats domain matching)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=12, choices=Provider.choices)
    external_id = models.CharField(max_length=120)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "provider", "external_id"], name="mapping_org_provider_external")
        ]


class UnmatchedRecord(models.Model):
    """A provider record that matched no account: counted and listed, never silently dropped."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="unmatched_records")
    stream = models.CharField(max_length=40)
    external_id = models.CharField(max_length=120)
    name = models.CharField(max_length=200, blank=True)
    domain = models.CharField(max_length=200, blank=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "connection", "stream", "external_id"], name="unmatched_org_conn_stream_external"
            )
        ]


class SourceRecord(models.Model):
    """Which account a provider's record landed on, so later pages (and deletions) find it again."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=12, choices=Provider.choices)
    object_type = models.CharField(max_length=40)
    external_id = models.CharField(max_length=120)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["org", "provider", "object_type", "external_id"], name="sourcerecord_org_provider_object"
            )
        ]


class IntakeMessage(models.Model):
    """A product-usage event already counted (deduplication by the sender's message id)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=120)
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "message_id"], name="intake_org_message")]


class UsageUserDay(models.Model):
    """A user seen active in an account on a day: the daily usage counts distinct users from it."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    date = models.DateField()
    user_id = models.CharField(max_length=120)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "account", "date", "user_id"], name="usageuser_org_account_date")
        ]


class UserAccount(models.Model):
    """Which account a product user belongs to (from `group` calls), for later `track` calls."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=120)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user_id"], name="useraccount_org_user")]


class ParkedEvent(models.Model):
    """A usage event that matched no account, kept (for a while) under the key it is listed by on the
    connection page, so that mapping that key to an account counts it after all."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=130)  # the group id, or "user:<id>" for a call naming no group
    type = models.CharField(max_length=10)
    message_id = models.CharField(max_length=120)
    user_id = models.CharField(max_length=120)
    group_id = models.CharField(max_length=120, blank=True)
    day = models.DateField()
    at = models.DateTimeField()
    domain = models.CharField(max_length=200, blank=True)
    name = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["org", "key"], name="parkedevent_org_key"),
            models.Index(fields=["org", "received_at"], name="parkedevent_org_received"),
        ]
