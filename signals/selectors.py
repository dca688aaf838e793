"""Reads for signals, the triage list and nightly runs."""

from dataclasses import dataclass
from datetime import date

import pandas as pd

from accounts.models import Account
from health.bulk import read_frame
from health.models import HealthScore
from signals.models import NightlyRun, RunStatus, Signal, SignalStatus, TriageItem


def previous_run_day(*, org, day: date) -> date | None:
    """The date of the latest succeeded nightly run before D (None when there is none)."""
    run = (
        NightlyRun.objects.filter(org=org, status=RunStatus.SUCCEEDED, run_date__lt=day)
        .order_by("-run_date")
        .only("run_date")
        .first()
    )
    return run.run_date if run else None


def open_signals_frame(*, org, day: date) -> pd.DataFrame:
    """The open signals seen on D, as a frame for ranking (done and snoozed ones do not count)."""
    frame = read_frame(
        "SELECT id, account_id, type, severity, is_new, deadline - DATE '1970-01-01' AS deadline"
        " FROM signals_signal"
        " WHERE org_id = %(org)s AND cleared_on IS NULL AND status = 'open' AND last_seen = %(day)s",
        {"org": org.pk, "day": day},
        [
            ("id", "int"),
            ("account_id", "int"),
            ("type", "str"),
            ("severity", "int"),
            ("is_new", "bool"),
            ("deadline", "day"),
        ],
    )
    return frame


def open_signals(*, org, day: date | None = None, account: Account | int | None = None) -> list[Signal]:
    """Active open signals (of one account when given), most severe first."""
    signals = Signal.objects.filter(org=org, cleared_on__isnull=True, status=SignalStatus.OPEN)
    if day is not None:
        signals = signals.filter(last_seen=day)
    if account is not None:
        signals = signals.filter(account=account)
    return list(signals.select_related("account").order_by("-severity", "type", "id"))


@dataclass
class TriageEntry:
    """One line of the morning list: the account, why it ranks there, its health and open signals."""

    item: TriageItem
    account: Account
    health: HealthScore | None
    signals: list[Signal]

    @property
    def rank(self) -> int:
        return self.item.rank


def triage_for_day(*, org, day: date, csm=None) -> list[TriageEntry]:
    """The ranked list of D (of one CSM's accounts when given), in three queries.

    Signals marked done or snoozed since the run are left out, and so are items left with none.
    """
    items = TriageItem.objects.filter(org=org, date=day).select_related("account", "account__csm")
    if csm is not None:
        items = items.filter(account__csm=csm)
    items = list(items.order_by("rank"))
    signal_ids = [signal_id for item in items for signal_id in item.signal_ids]
    signals = {
        signal.pk: signal for signal in Signal.objects.filter(org=org, pk__in=signal_ids, status=SignalStatus.OPEN)
    }
    scores = {
        score.account_id: score
        for score in HealthScore.objects.filter(org=org, date=day, account_id__in=[item.account_id for item in items])
    }
    entries = []
    for item in items:
        open_ = [signals[i] for i in item.signal_ids if i in signals]
        if open_:
            entries.append(
                TriageEntry(item=item, account=item.account, health=scores.get(item.account_id), signals=open_)
            )
    return entries


def latest_run(*, org, status: str | None = None) -> NightlyRun | None:
    """The organization's most recent nightly run (of that status when given)."""
    runs = NightlyRun.objects.filter(org=org)
    if status is not None:
        runs = runs.filter(status=status)
    return runs.order_by("-run_date").first()


def runs_recent(*, org, limit: int = 30) -> list[NightlyRun]:
    return list(NightlyRun.objects.filter(org=org).order_by("-run_date")[:limit])
