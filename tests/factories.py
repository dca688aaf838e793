"""Plain factory functions: each makes one realistic object, inside its organization."""

import itertools
from datetime import date, datetime, time
from decimal import Decimal

from accounts.models import Account, Activity, Contact, Invoice, Organization, Task, Ticket, UsageDay
from accounts.services import member_add, org_create
from csm.tenancy import tenant

_sequence = itertools.count(1)


def make_org(slug: str | None = None, *, timezone_name: str = "America/New_York") -> Organization:
    n = next(_sequence)
    slug = slug or f"org-{n}"
    return org_create(slug=slug, name=slug.replace("-", " ").title(), timezone_name=timezone_name)


def make_member(org: Organization, *, role: str = "csm", email: str | None = None, password: str = "correct-horse-42"):
    email = email or f"{role}{next(_sequence)}@{org.slug}.example"
    return member_add(org=org, email=email, role=role, password=password).user


def local_dt(org: Organization, day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=org.tz)


def make_account(org: Organization, **fields) -> Account:
    n = next(_sequence)
    defaults = dict(
        external_id=f"A-{n}",
        name=f"Customer {n}",
        domain=f"customer{n}.example",
        tier="mid_market",
        arr=Decimal("50000"),
        stage="steady",
        created_at=local_dt(org, date(2026, 1, 1)),
    )
    defaults.update(fields)
    with tenant(org):
        return Account.objects.create(org=org, **defaults)


def _make(model, org: Organization, account: Account, prefix: str, fields: dict, defaults: dict):
    values = {"external_id": f"{prefix}-{next(_sequence)}", **defaults, **fields}
    with tenant(org):
        return model.objects.create(org=org, account=account, **values)


def make_task(org, account, **fields) -> Task:
    defaults = dict(title="Connect SSO", owner_side="client", status="todo", created_at=local_dt(org, date(2026, 1, 1)))
    return _make(Task, org, account, "T", fields, defaults)


def make_activity(org, account, **fields) -> Activity:
    defaults = dict(occurred_at=local_dt(org, date(2026, 1, 1)), kind="email", direction="inbound", actor_side="client")
    return _make(Activity, org, account, "ACT", fields, defaults)


def make_contact(org, account, **fields) -> Contact:
    defaults = dict(name="Jane Doe", email="jane@customer.example")
    return _make(Contact, org, account, "C", fields, defaults)


def make_ticket(org, account, **fields) -> Ticket:
    defaults = dict(opened_at=local_dt(org, date(2026, 1, 1)), status="open", priority="normal", subject="Login fails")
    return _make(Ticket, org, account, "TK", fields, defaults)


def make_invoice(org, account, **fields) -> Invoice:
    defaults = dict(issued_at=date(2026, 1, 1), amount=Decimal("1000"), status="paid")
    return _make(Invoice, org, account, "INV", fields, defaults)


def make_usage(org, account, *, day: date, active_users=10, seats_used=10, events=100) -> UsageDay:
    with tenant(org):
        return UsageDay.objects.create(
            org=org, account=account, date=day, active_users=active_users, seats_used=seats_used, events=events
        )


def make_score(org, account, *, day: date, score: float, band: str | None = None, delta=None, components=None, gate=""):
    """A stored health score as a nightly run leaves it (band from the default thresholds)."""
    from health.models import HealthScore

    band = band or ("green" if score >= 70 else "yellow" if score >= 40 else "red")
    with tenant(org):
        return HealthScore.objects.create(
            org=org,
            account=account,
            date=day,
            model_version=1,
            score=Decimal(str(score)),
            band=band,
            delta=None if delta is None else Decimal(str(delta)),
            components=components if components is not None else {"usage": score},
            gate=gate,
        )


def make_signal(org, account, *, type: str, day: date, entity_key: str = "", evidence=None, **fields):
    """An active signal (its condition holds) first and last seen on `day`."""
    from signals.models import Signal

    values = dict(severity=50, cause=f"{type} on {day}", action="look", status="open", is_new=True)
    values.update(fields)
    with tenant(org):
        return Signal.objects.create(
            org=org,
            account=account,
            type=type,
            entity_key=entity_key,
            first_seen=day,
            last_seen=day,
            evidence=evidence or {},
            **values,
        )


def make_arr_change(org, account, *, day: date, arr):
    from accounts.models import ArrChange

    with tenant(org):
        return ArrChange.objects.create(org=org, account=account, effective_date=day, arr=Decimal(str(arr)))
