"""Reads for the Morning page: the day's ranked list for one person, with trends and freshness."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.contrib.auth import get_user_model

from accounts.models import Account, Membership, Role
from health.models import HealthScore
from integrations.selectors import SourceFreshness, source_freshness
from signals.models import NightlyRun, RunStatus, Signal, SignalStatus, TriageItem

# The order of the morning review, then proactive work.
GROUPS = (
    ("blocked", "New blocked tasks"),
    ("silent", "Silent accounts"),
    ("health_drop", "Health drops"),
    ("go_live", "Go-lives this week"),
    ("proactive", "Proactive work"),
)
TREND_DAYS = 30
PAGE_SIZE = 50


@dataclass
class MorningItem:
    rank: int
    group: str
    reasons: list[str]
    account: Account
    signals: list[Signal]
    score: float | None = None
    band: str | None = None
    delta: float | None = None
    trend: list[float] = field(default_factory=list)

    @property
    def lead(self) -> Signal:
        return self.signals[0]

    @property
    def has_new(self) -> bool:
        return any(s.is_new for s in self.signals)


@dataclass
class Freshness:
    day: date | None
    last_success: NightlyRun | None
    last_run: NightlyRun | None
    sources: list[SourceFreshness] = field(default_factory=list)

    @property
    def failed_sources(self) -> list[SourceFreshness]:
        return [source for source in self.sources if source.failed]

    @property
    def failed(self) -> bool:
        return self.last_run is not None and self.last_run.status == RunStatus.FAILED


def freshness(*, org) -> Freshness:
    runs = list(NightlyRun.objects.filter(org=org).order_by("-run_date", "-started_at")[:5])
    last_success = next((r for r in runs if r.status == RunStatus.SUCCEEDED), None)
    if last_success is None:
        last_success = NightlyRun.objects.filter(org=org, status=RunStatus.SUCCEEDED).order_by("-run_date").first()
    return Freshness(
        day=last_success.run_date if last_success else None,
        last_success=last_success,
        last_run=runs[0] if runs else None,
        sources=source_freshness(org=org),
    )


def morning_scope(*, membership: Membership, csm_id: int | None) -> dict:
    """Which accounts a person reviews: a CSM their own, an AM theirs, a leader any CSM's or all."""
    if membership.role == Role.CSM:
        return {"account__csm_id": membership.user_id}
    if membership.role == Role.AM:
        return {"account__am_id": membership.user_id}
    return {"account__csm_id": csm_id} if csm_id else {}


def morning_items(*, org, day: date | None, scope: dict, limit: int = PAGE_SIZE) -> tuple[list[MorningItem], int]:
    """The first `limit` ranked items of the day whose signals are still open, and how many there are."""
    if day is None:
        return [], 0
    ranked = TriageItem.objects.filter(org=org, date=day, **scope)
    # Best first and bounded: a leader's "all CSMs" view of a large organization stays fast.
    triage = list(ranked.select_related("account", "account__csm").order_by("rank")[:limit])
    total = ranked.count() if len(triage) == limit else len(triage)
    wanted = [signal_id for item in triage for signal_id in item.signal_ids]
    open_signals = {
        s.pk: s
        for s in Signal.objects.filter(org=org, pk__in=wanted, status=SignalStatus.OPEN, cleared_on__isnull=True)
    }
    items = []
    for entry in triage:
        signals = [open_signals[i] for i in entry.signal_ids if i in open_signals]
        if signals:
            items.append(MorningItem(entry.rank, entry.group, entry.reasons, entry.account, signals))
    _attach_health(org=org, day=day, items=items)
    return items, total


def _attach_health(*, org, day: date, items: list[MorningItem]) -> None:
    by_account = {item.account.pk: item for item in items}
    rows = (
        HealthScore.objects.filter(
            org=org, account_id__in=list(by_account), date__gt=day - timedelta(days=TREND_DAYS), date__lte=day
        )
        .order_by("date")
        .values_list("account_id", "date", "score", "band", "delta")
    )
    trends = defaultdict(list)
    for account_id, scored_on, score, band, change in rows:
        trends[account_id].append(float(score))
        if scored_on == day:
            item = by_account[account_id]
            item.score, item.band = float(score), band
            item.delta = float(change) if change is not None else None
    for account_id, values in trends.items():
        by_account[account_id].trend = values


def grouped(items: list[MorningItem]) -> list[tuple[str, str, list[MorningItem]]]:
    buckets = defaultdict(list)
    for item in items:
        buckets[item.group if item.group in dict(GROUPS) else "proactive"].append(item)
    return [(key, label, buckets[key]) for key, label in GROUPS if buckets[key]]


def csm_choices(*, org) -> list[tuple[int, str]]:
    users = get_user_model().objects.filter(memberships__org=org, memberships__role=Role.CSM).order_by("email")
    return list(users.values_list("pk", "email"))
