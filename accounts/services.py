"""Writes for organizations, members, invitations and API tokens."""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Invitation, Membership, Organization, Role
from csm.tenancy import tenant

INVITATION_LIFETIME = timedelta(days=7)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def org_create(*, slug: str, name: str, timezone_name: str = "UTC", nightly_hour: int = 5) -> Organization:
    """Create an organization with its default health model and signal thresholds."""
    from health.services import health_model_ensure
    from signals.services import thresholds_ensure

    org = Organization(slug=slug, name=name, timezone=timezone_name, nightly_hour=nightly_hour)
    org.full_clean()
    with transaction.atomic():
        org.save()
        with tenant(org):
            health_model_ensure(org=org)
            thresholds_ensure(org=org)
    return org


def member_add(*, org: Organization, email: str, role: str, password: str | None = None) -> Membership:
    """Add (or re-role) a member, creating the user if needed."""
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}; choose one of {', '.join(Role.values)}.")
    User = get_user_model()
    email = email.strip().lower()
    with transaction.atomic():
        user = User.objects.filter(username=email).first()
        if user is None:
            user = User(username=email, email=email)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        with tenant(org):
            membership, _ = Membership.objects.update_or_create(org=org, user=user, defaults={"role": role})
    return membership


def api_token_create(*, org: Organization, user) -> str:
    """Issue a token for the user in this organization; returns the key, shown once."""
    secret = secrets.token_urlsafe(32)
    with tenant(org):
        if not Membership.objects.filter(org=org, user=user).exists():
            raise ValidationError(f"{user.email} is not a member of {org.slug}.")
        ApiToken.objects.create(org=org, user=user, key_hash=_sha256(secret))
    return f"{org.pk}.{secret}"


def api_token_find(*, org_id: int, secret: str) -> ApiToken | None:
    """Look a key up inside its organization (the caller has entered the tenant)."""
    return ApiToken.objects.select_related("user", "org").filter(org_id=org_id, key_hash=_sha256(secret)).first()


def invitation_create(*, org: Organization, email: str, role: str, invited_by, accept_url_for) -> Invitation:
    """Record an invitation and e-mail its link; `accept_url_for(token)` builds the absolute link."""
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        org=org,
        email=email.strip().lower(),
        role=role,
        token_hash=_sha256(token),
        invited_by=invited_by,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    send_mail(
        subject=f"You are invited to {org.name} on Vigil",
        message=(
            f"{invited_by.email} invited you to join {org.name} on Vigil as {Role(role).label}.\n\n"
            f"Set your password and join: {accept_url_for(token)}\n\n"
            f"The link works for {INVITATION_LIFETIME.days} days."
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )
    return invitation


def invitation_find(*, org: Organization, token: str) -> Invitation | None:
    """A pending, unexpired invitation of this organization for this token."""
    return Invitation.objects.filter(
        org=org, token_hash=_sha256(token), accepted_at__isnull=True, expires_at__gt=timezone.now()
    ).first()


def invitation_accept(*, org: Organization, invitation: Invitation, password: str) -> Membership:
    membership = member_add(org=org, email=invitation.email, role=invitation.role, password=password)
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


def task_update(*, org: Organization, task, status: str, blocked_reason: str = "", due_date=None):
    """Change a MAP item from the account page; the status clock restarts on a status change."""
    from accounts.models import TaskStatus

    if status not in TaskStatus.values:
        raise ValidationError(f"Unknown status {status!r}.")
    now = timezone.now()
    if status != task.status:
        task.status_changed_at = now
        task.completed_at = now if status == TaskStatus.DONE else None
    task.status = status
    task.blocked_reason = blocked_reason.strip()[:300] if status == TaskStatus.BLOCKED else ""
    task.due_date = due_date
    task.save(update_fields=["status", "status_changed_at", "completed_at", "blocked_reason", "due_date"])
    return task
