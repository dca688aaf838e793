"""Reads for the accounts list and the account page."""

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Q

from accounts.models import OPEN_TICKET_STATUSES, Account, Activity, Contact, Invoice, Task, Ticket
from health.models import HealthModel, HealthScore
from integrations.selectors import source_freshness
from signals.models import Signal

COMPONENT_LABELS = {
    "usage": "Usage & adoption",
    "engagement": "Client engagement",
    "support": "Support",
    "billing": "Billing",
    "onboarding": "Onboarding progress",
}


def latest_scored_day(*, org) -> date | None:
    return HealthScore.objects.filter(org=org).order_by("-date").values_list("date", flat=True).first()


def account_list(*, org, csm_id=None, tier="", band="", stage="", search=""):
    """Accounts with their latest score, as a queryset of dicts ready for a table."""
    day = latest_scored_day(org=org)
    accounts = Account.objects.filter(org=org)
    if csm_id:
        accounts = accounts.filter(csm_id=csm_id)
    if tier:
        accounts = accounts.filter(tier=tier)
    if stage:
        accounts = accounts.filter(stage=stage)
    if search:
        accounts = accounts.filter(Q(name__icontains=search) | Q(domain__icontains=search) | Q(external_id=search))
    scores = HealthScore.objects.filter(org=org, date=day)
    if band:
        accounts = accounts.filter(pk__in=scores.filter(band=band).values("account_id"))
    return accounts.select_related("csm").order_by("name", "pk"), day


def scores_for(*, org, day, account_ids) -> dict[int, HealthScore]:
    return {s.account_id: s for s in HealthScore.objects.filter(org=org, date=day, account_id__in=account_ids)}


@dataclass
class ComponentRow:
    key: str
    label: str
    value: float | None
    previous: float | None
    weight: float
    newest: str | None
    excluded: str | None
    age_days: int | None = None  # the newest data's age on the score's day

    @property
    def change(self) -> float | None:
        if self.value is None or self.previous is None:
            return None
        return round(self.value - self.previous, 1)


def health_explained(*, org, history: list[HealthScore]) -> list[ComponentRow]:
    """Each component of the latest score beside the day before: why the score moved."""
    if not history:
        return []
    latest = history[-1]
    previous = history[-2] if len(history) > 1 else None
    model = HealthModel.objects.filter(org=org, version=latest.model_version).first()
    weights = model.weights if model else {}
    keys = list(dict.fromkeys([*COMPONENT_LABELS, *latest.components, *latest.excluded]))
    return [
        ComponentRow(
            key=key,
            label=COMPONENT_LABELS.get(key, key.title()),
            value=latest.components.get(key),
            previous=previous.components.get(key) if previous else None,
            weight=weights.get(key, 0),
            newest=latest.component_dates.get(key),
            excluded=latest.excluded.get(key),
            age_days=_age(latest.date, latest.component_dates.get(key)),
        )
        for key in keys
    ]


def _age(day: date, newest: str | None) -> int | None:
    try:
        return (day - date.fromisoformat(newest)).days if newest else None
    except ValueError:
        return None


def account_page(*, org, account_id: int) -> dict:
    """Everything the account page shows, in a fixed number of queries."""
    account = Account.objects.select_related("csm", "am").get(org=org, pk=account_id)
    history = list(HealthScore.objects.filter(org=org, account=account).order_by("-date")[:90])[::-1]
    recent = (history[-1].date if history else date.today()) - timedelta(days=30)
    return {
        "account": account,
        "history": history,
        "latest": history[-1] if history else None,
        "components": health_explained(org=org, history=history),
        "signals": list(
            Signal.objects.filter(org=org, account=account)
            .filter(Q(cleared_on__isnull=True) | Q(cleared_on__gte=recent))
            .order_by("cleared_on", "-severity", "-last_seen")[:30]
        ),
        "tasks": list(Task.objects.filter(org=org, account=account).order_by("status", "due_date", "pk")),
        "contacts": list(Contact.objects.filter(org=org, account=account).order_by("-is_champion", "name")),
        "tickets": list(
            Ticket.objects.filter(org=org, account=account, status__in=OPEN_TICKET_STATUSES).order_by("-opened_at")[:20]
        ),
        "invoices": list(Invoice.objects.filter(org=org, account=account).order_by("-issued_at")[:12]),
        "timeline": list(Activity.objects.filter(org=org, account=account).order_by("-occurred_at")[:40]),
        "sources": source_freshness(org=org),
    }
