"""Organizations (the tenants), their members, and the customer data Vigil watches.

Every model with an `org` foreign key is a tenant table under Row Level Security (csm/rls.py),
and every unique key of a tenant table starts with `org`.
"""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}; use an IANA name such as Europe/Paris.")


class Organization(models.Model):
    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    nightly_hour = models.PositiveSmallIntegerField(
        default=5, help_text="Local hour after which the nightly run starts."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    LEADER = "leader", "CS leader"
    CSM = "csm", "CSM"
    AM = "am", "Account Manager"


class Membership(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="membership_org_user")]
        indexes = [models.Index(fields=["user"], name="membership_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.org} as {self.role}"


class Invitation(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices)
    token_hash = models.CharField(max_length=64)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "token_hash"], name="invitation_org_token")]


class ApiToken(models.Model):
    """A key for `Authorization: Token <org_id>.<secret>`; only the secret's SHA-256 is stored."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "key_hash"], name="apitoken_org_key")]


class Stage(models.TextChoices):
    ONBOARDING = "onboarding"
    ADOPTING = "adopting"
    STEADY = "steady"
    CHURNED = "churned"


class Account(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    external_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    domain = models.CharField(max_length=200, blank=True)
    tier = models.CharField(max_length=50, blank=True)
    arr = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True, default="USD")
    plan = models.CharField(max_length=100, blank=True)
    seat_limit = models.PositiveIntegerField(null=True, blank=True)
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.ONBOARDING)
    csm = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    am = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    go_live_date = models.DateField(null=True, blank=True)
    renewal_date = models.DateField(null=True, blank=True)
    contract_start = models.DateField(null=True, blank=True)
    churned_on = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="account_org_external_id")]
        indexes = [
            models.Index(fields=["org", "csm"], name="account_org_csm"),
            models.Index(fields=["org", "renewal_date"], name="account_org_renewal"),
            # Identity resolution matches provider records by lower-cased domain.
            models.Index(models.F("org"), Lower("domain"), name="account_org_domain_lower"),
        ]

    def __str__(self) -> str:
        return self.name


class ArrChange(models.Model):
    """ARR history: one row each time an account's ARR changes (for retention metrics)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="arr_changes")
    effective_date = models.DateField()
    arr = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "account", "effective_date"], name="arrchange_org_account_date")
        ]


class Contact(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="contacts")
    external_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    email = models.CharField(max_length=254, blank=True)
    phone = models.CharField(max_length=50, blank=True)
    title = models.CharField(max_length=200, blank=True)
    is_champion = models.BooleanField(default=False)
    left_on = models.DateField(null=True, blank=True, help_text="When the contact left the customer.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="contact_org_external_id")]
        indexes = [models.Index(fields=["org", "account"], name="contact_org_account")]


class Side(models.TextChoices):
    CLIENT = "client"
    VENDOR = "vendor"


class TaskStatus(models.TextChoices):
    TODO = "todo", "To do"
    IN_PROGRESS = "in_progress", "In progress"
    BLOCKED = "blocked", "Blocked"
    DONE = "done", "Done"


class Task(models.Model):
    """A mutual-action-plan item."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tasks")
    external_id = models.CharField(max_length=100)
    title = models.CharField(max_length=300)
    owner_side = models.CharField(max_length=6, choices=Side.choices)
    status = models.CharField(max_length=12, choices=TaskStatus.choices)
    blocked_reason = models.CharField(max_length=300, blank=True)
    due_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField()
    status_changed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    verified_by_client = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="task_org_external_id")]
        indexes = [models.Index(fields=["org", "account"], name="task_org_account")]


class ActivityKind(models.TextChoices):
    EMAIL = "email", "E-mail"
    CALL = "call", "Call"
    MEETING = "meeting", "Meeting"
    MESSAGE = "message", "Message"
    NOTE = "note", "Note"
    LOGIN = "login", "Login"


class Direction(models.TextChoices):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Activity(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="activities")
    external_id = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    kind = models.CharField(max_length=10, choices=ActivityKind.choices)
    direction = models.CharField(max_length=10, choices=Direction.choices, blank=True)
    actor_side = models.CharField(max_length=6, choices=Side.choices, blank=True)
    actor_name = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "activities"
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="activity_org_external_id")]
        indexes = [models.Index(fields=["org", "account", "occurred_at"], name="activity_org_account_time")]


class UsageDay(models.Model):
    """One account's product usage on one day."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="usage_days")
    date = models.DateField()
    active_users = models.PositiveIntegerField(default=0)
    seats_used = models.PositiveIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "account", "date"], name="usage_org_account_date")]
        indexes = [models.Index(fields=["org", "date"], name="usage_org_date")]


class TicketStatus(models.TextChoices):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    HOLD = "hold"
    SOLVED = "solved"
    CLOSED = "closed"


OPEN_TICKET_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING, TicketStatus.HOLD)


class TicketPriority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Ticket(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="tickets")
    external_id = models.CharField(max_length=100)
    opened_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=TicketStatus.choices)
    priority = models.CharField(max_length=8, choices=TicketPriority.choices, default=TicketPriority.NORMAL)
    solved_at = models.DateTimeField(null=True, blank=True)
    csat = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    subject = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="ticket_org_external_id")]
        indexes = [models.Index(fields=["org", "account", "opened_at"], name="ticket_org_account_opened")]


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    PAST_DUE = "past_due", "Past due"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class Invoice(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="invoices")
    external_id = models.CharField(max_length=100)
    issued_at = models.DateField()
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True, default="USD")
    status = models.CharField(max_length=14, choices=InvoiceStatus.choices)
    due_date = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "external_id"], name="invoice_org_external_id")]
        indexes = [models.Index(fields=["org", "account", "issued_at"], name="invoice_org_account_issued")]
