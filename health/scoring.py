"""The health formula: pure functions of one organization's frames and a date D.

Nothing here touches the database. `health/selectors.py` reads the frames, `localize` turns every
timestamp into a calendar date in the organization's time zone and drops what is dated after D,
`score_accounts` computes every account's score at once with vectorized pandas, and
`health/services.py` writes the result. The signal rules (signals/rules.py) read the same
localized frames.

Each component is 0-100 and never decreases when the account gets more usage, fewer open urgent
tickets or pays an invoice (tests/health/test_monotonic.py checks it with hypothesis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from health.models import COMPONENTS, DEFAULT_BANDS, DEFAULT_GATES, DEFAULT_STALE_AFTER_DAYS, DEFAULT_WEIGHTS

UTC_TS = "datetime64[ns, UTC]"
DAY = "datetime64[ns]"

# The raw shape of each frame, as the selectors deliver it. Timestamps are UTC; DAY columns are
# calendar dates already (DateField in the database).
SCHEMA: dict[str, dict[str, str]] = {
    "accounts": {
        "account_id": "int64",
        "external_id": "str",
        "name": "str",
        "tier": "str",
        "arr": "float64",
        "currency": "str",
        "stage": "str",
        "seat_limit": "float64",
        "go_live_date": DAY,
        "renewal_date": DAY,
        "churned_on": DAY,
        "created_at": UTC_TS,
    },
    "usage": {"account_id": "int64", "date": DAY, "active_users": "int64", "seats_used": "int64", "events": "int64"},
    "activities": {
        "account_id": "int64",
        "external_id": "str",
        "occurred_at": UTC_TS,
        "kind": "str",
        "actor_side": "str",
        "actor_name": "str",
    },
    "tickets": {
        "account_id": "int64",
        "external_id": "str",
        "opened_at": UTC_TS,
        "status": "str",
        "priority": "str",
        "solved_at": UTC_TS,
        "subject": "str",
    },
    "invoices": {
        "account_id": "int64",
        "external_id": "str",
        "issued_at": DAY,
        "amount": "float64",
        "currency": "str",
        "status": "str",
        "due_date": DAY,
        "paid_at": UTC_TS,
    },
    "tasks": {
        "account_id": "int64",
        "external_id": "str",
        "title": "str",
        "owner_side": "str",
        "status": "str",
        "blocked_reason": "str",
        "due_date": DAY,
        "created_at": UTC_TS,
        "status_changed_at": UTC_TS,
        "completed_at": UTC_TS,
    },
    "contacts": {
        "account_id": "int64",
        "external_id": "str",
        "name": "str",
        "is_champion": "bool",
        "left_on": DAY,
    },
}

OPEN_TICKET_STATUSES = ("new", "open", "pending", "hold")
OUTSTANDING_INVOICE_STATUSES = ("open", "past_due", "uncollectible")


def _coerce(frame: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    columns = {}
    for column, kind in schema.items():
        if column in frame:
            values = frame[column].reset_index(drop=True)
        else:
            values = pd.Series([None] * len(frame), dtype=object)
        if kind == UTC_TS:
            columns[column] = values if values.dtype == kind else pd.to_datetime(values, utc=True)
        elif kind == DAY:
            columns[column] = values if values.dtype == kind else pd.to_datetime(values).astype(DAY)
        elif kind == "str":
            columns[column] = values.fillna("").astype(str)
        elif kind == "bool":
            columns[column] = values.fillna(False).astype(bool)
        elif kind == "int64":
            columns[column] = pd.to_numeric(values).fillna(0).astype("int64")
        else:
            columns[column] = pd.to_numeric(values).astype(kind)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


@dataclass
class Frames:
    """One organization's source data as DataFrames (one per source), shaped by SCHEMA."""

    accounts: pd.DataFrame
    usage: pd.DataFrame
    activities: pd.DataFrame
    tickets: pd.DataFrame
    invoices: pd.DataFrame
    tasks: pd.DataFrame
    contacts: pd.DataFrame
    # Per account: usage sums over the window ending on D and the latest usage day (see
    # summarize_usage). The database reader computes it in SQL instead of shipping every row.
    usage_summary: pd.DataFrame | None = None
    # Per account: client touches of the engagement window and the latest activities (see
    # summarize_activities); also computed in SQL by the database reader.
    activity_summary: pd.DataFrame | None = None
    localized: bool = field(default=False, repr=False)

    @classmethod
    def build(
        cls, *, usage_summary: pd.DataFrame | None = None, activity_summary: pd.DataFrame | None = None, **sources
    ) -> Frames:
        """Frames from lists of dicts or DataFrames; missing sources are empty, missing columns null."""
        built = {"usage_summary": usage_summary, "activity_summary": activity_summary}
        for name, schema in SCHEMA.items():
            source = sources.pop(name, None)
            if source is None:
                source = pd.DataFrame(columns=list(schema))
            elif not isinstance(source, pd.DataFrame):
                source = pd.DataFrame(list(source), columns=None)
            built[name] = _coerce(source, schema)
        if sources:
            raise TypeError(f"unknown sources: {', '.join(sources)}")
        return cls(**built)


USAGE_WINDOW_DAYS = 14
USAGE_SUMMARY_COLUMNS = ["account_id", "window_active_users", "window_events", "last_date", "last_seats_used"]


def summarize_usage(usage: pd.DataFrame, *, day: date) -> pd.DataFrame:
    """Per account with usage up to D: active users and events summed over the USAGE_WINDOW_DAYS
    days ending on D, and the latest usage day on or before D with its seats used."""
    d = pd.Timestamp(day)
    usage = usage[usage["date"] <= d]
    latest = usage.sort_values(["account_id", "date"]).groupby("account_id").tail(1).set_index("account_id")
    window = usage[usage["date"] > d - pd.Timedelta(days=USAGE_WINDOW_DAYS)]
    sums = window.groupby("account_id")[["active_users", "events"]].sum()
    summary = pd.DataFrame(
        {
            "window_active_users": sums["active_users"].reindex(latest.index, fill_value=0),
            "window_events": sums["events"].reindex(latest.index, fill_value=0),
            "last_date": latest["date"],
            "last_seats_used": latest["seats_used"],
        }
    )
    return summary.rename_axis("account_id").reset_index()[USAGE_SUMMARY_COLUMNS]


ENGAGEMENT_WINDOW_DAYS = 30
ACTIVITY_SUMMARY_COLUMNS = [
    "account_id",
    "client_touches",
    "last_any_at",
    "last_client_at",
    "last_client_ref",
    "last_client_kind",
    "last_client_actor",
]


def summarize_activities(activities: pd.DataFrame, *, tz: ZoneInfo | str, day: date) -> pd.DataFrame:
    """Per account with activity up to D: client-side activities on the ENGAGEMENT_WINDOW_DAYS local
    days ending on D, the newest activity of either side, and the latest client-side one."""
    tz = ZoneInfo(tz) if isinstance(tz, str) else tz
    d = pd.Timestamp(day)
    on = _local_day(activities["occurred_at"], tz)
    acts = activities[on <= d]
    on = on[on <= d]
    client = acts[acts["actor_side"] == "client"]
    latest = (client.sort_values(["account_id", "occurred_at", "external_id"]).groupby("account_id").tail(1)).set_index(
        "account_id"
    )
    in_window = on[client.index] > d - pd.Timedelta(days=ENGAGEMENT_WINDOW_DAYS)
    last_any = acts.groupby("account_id")["occurred_at"].max()
    summary = pd.DataFrame(
        {
            "client_touches": client[in_window].groupby("account_id").size().reindex(last_any.index, fill_value=0),
            "last_any_at": last_any,
            "last_client_at": latest["occurred_at"].reindex(last_any.index),
            "last_client_ref": latest["external_id"].reindex(last_any.index, fill_value=""),
            "last_client_kind": latest["kind"].reindex(last_any.index, fill_value=""),
            "last_client_actor": latest["actor_name"].reindex(last_any.index, fill_value=""),
        }
    )
    return summary.rename_axis("account_id").reset_index()[ACTIVITY_SUMMARY_COLUMNS]


def _local_day(values: pd.Series, tz: ZoneInfo) -> pd.Series:
    """The calendar date, in the organization's time zone, of each UTC timestamp (NaT stays NaT)."""
    return values.dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()


def localize(frames: Frames, *, tz: ZoneInfo | str, day: date) -> Frames:
    """Turn timestamps into local dates (`*_on` columns) and forget everything dated after D.

    State that only the present knows (a task's status, a ticket's, an invoice's) is walked back
    to D where its own timestamps allow: a ticket solved after D was open on D, an invoice paid
    after D was unpaid, a task whose status changed after D had some other, unfinished status.
    """
    tz = ZoneInfo(tz) if isinstance(tz, str) else tz
    d = pd.Timestamp(day)

    # Accounts are kept whatever their creation time, for the same reason as tasks (below).
    accounts = frames.accounts.copy()
    accounts["created_on"] = _local_day(accounts["created_at"], tz)
    # An account whose churn date is after D had not churned yet on D.
    churned_later = accounts["churned_on"] > d
    accounts["is_churned"] = (accounts["stage"] == "churned") & ~churned_later

    usage = frames.usage[frames.usage["date"] <= d]
    usage_summary = summarize_usage(usage, day=day) if frames.usage_summary is None else frames.usage_summary

    activities = frames.activities.copy()
    activities["occurred_on"] = _local_day(activities["occurred_at"], tz)
    activities = activities[activities["occurred_on"] <= d]
    activity_summary = frames.activity_summary
    if activity_summary is None:
        activity_summary = summarize_activities(frames.activities, tz=tz, day=day)
    activity_summary = activity_summary.assign(
        last_any_on=_local_day(activity_summary["last_any_at"], tz),
        last_client_on=_local_day(activity_summary["last_client_at"], tz),
    )

    tickets = frames.tickets.copy()
    tickets["opened_on"] = _local_day(tickets["opened_at"], tz)
    tickets = tickets[tickets["opened_on"] <= d].copy()
    solved_on = _local_day(tickets["solved_at"], tz)
    tickets["solved_on"] = solved_on.where(solved_on <= d)
    closed_now = ~tickets["status"].isin(OPEN_TICKET_STATUSES)
    # Closed today with no solve date: take the status at its word. Solved after D: open on D.
    tickets["open_on_day"] = ~closed_now | (solved_on > d)

    invoices = frames.invoices[frames.invoices["issued_at"] <= d].copy()
    paid_on = _local_day(invoices["paid_at"], tz)
    invoices["paid_on"] = paid_on.where(paid_on <= d)
    paid_later = (invoices["status"] == "paid") & (paid_on > d)
    invoices["status_on_day"] = invoices["status"].where(~paid_later, "open")
    invoices["due_on"] = invoices["due_date"].fillna(invoices["issued_at"])

    # Tasks are not dropped by their creation time: an import without `created_at` stamps the
    # import's own time, which would hide every task from a run for an earlier date. What a task
    # was on D is read from its status timestamps instead.
    tasks = frames.tasks.copy()
    created_on = _local_day(tasks["created_at"], tz)
    tasks["created_on"] = created_on.where(created_on <= d)
    changed_on = _local_day(tasks["status_changed_at"], tz)
    # A task marked done without a completion time was completed when its status last changed.
    tasks["completed_at"] = tasks["completed_at"].fillna(tasks["status_changed_at"].where(tasks["status"] == "done"))
    completed_on = _local_day(tasks["completed_at"], tz)
    tasks["status_changed_on"] = changed_on.where(changed_on <= d)
    tasks["completed_on"] = completed_on.where(completed_on <= d)
    done_by_day = (tasks["status"] == "done") & (completed_on <= d)
    unknown_on_day = ~done_by_day & ((changed_on > d) | ((tasks["status"] == "done") & (completed_on > d)))
    tasks["status_on_day"] = tasks["status"].where(~unknown_on_day, "todo")

    contacts = frames.contacts.copy()
    contacts["left_on"] = contacts["left_on"].where(contacts["left_on"] <= d)

    return Frames(
        accounts=accounts,
        usage=usage,
        activities=activities,
        tickets=tickets,
        invoices=invoices,
        tasks=tasks,
        contacts=contacts,
        usage_summary=usage_summary,
        activity_summary=activity_summary,
        localized=True,
    )


@dataclass(frozen=True)
class HealthConfig:
    """The parts of a HealthModel version the formula needs."""

    version: int = 1
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    bands: dict = field(default_factory=lambda: dict(DEFAULT_BANDS))
    gates: dict = field(default_factory=lambda: dict(DEFAULT_GATES))
    stale_after_days: int = DEFAULT_STALE_AFTER_DAYS

    @classmethod
    def from_model(cls, model) -> HealthConfig:
        return cls(
            version=model.version,
            weights={**DEFAULT_WEIGHTS, **(model.weights or {})},
            bands={**DEFAULT_BANDS, **(model.bands or {})},
            gates={**DEFAULT_GATES, **(model.gates or {})},
            stale_after_days=model.stale_after_days,
        )


# Windows and scales of the components. Each is chosen so the component saturates for a
# healthy account and moves in one direction only with its input.
USAGE_UNLIMITED_SCALE = 5.0  # active users at which an account without a seat limit is half adopted
USAGE_EVENTS_SCALE = 100.0  # daily events at which depth is half way
ENGAGEMENT_FULL_TOUCHES = 8  # client touches in 30 days for full volume
TICKET_PENALTY = {"urgent": 30.0, "high": 15.0, "normal": 5.0, "low": 2.0}
TASK_BLOCKED_PENALTY = 10.0

SCORE_COLUMNS = [
    "account_id",
    "model_version",
    "score",
    "band",
    "delta",
    "components",
    "component_dates",
    "excluded",
    "gate",
]


def band_for(score: pd.Series, bands: dict) -> pd.Series:
    return pd.Series(
        np.select([score >= bands["green"], score >= bands["yellow"]], ["green", "yellow"], "red"), index=score.index
    )


def _latest(values: pd.Series, keys: pd.Series, ids: pd.Index) -> pd.Series:
    return values.groupby(keys).max().reindex(ids)


def _newest(*series: pd.Series) -> pd.Series:
    return pd.concat(series, axis=1).max(axis=1)


def score_components(frames: Frames, *, day: date, config: HealthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per account: each component's value (0-100) and the date of the newest data behind it."""
    if not frames.localized:
        raise ValueError("score_components needs localized frames (health.scoring.localize)")
    d = pd.Timestamp(day)
    ids = pd.Index(frames.accounts["account_id"], name="account_id")
    accounts = frames.accounts.set_index("account_id")
    values = pd.DataFrame(index=ids, columns=list(COMPONENTS), dtype="float64")
    dates = pd.DataFrame(index=ids, columns=list(COMPONENTS), dtype=DAY)

    # usage / adoption: average active users over a fixed window (missing days count as zero, so
    # a day of usage more can only raise it) against the seat limit, plus depth from events.
    usage = frames.usage_summary.set_index("account_id")
    dates["usage"] = usage["last_date"].reindex(ids)
    active = usage["window_active_users"].reindex(ids, fill_value=0) / USAGE_WINDOW_DAYS
    events = usage["window_events"].reindex(ids, fill_value=0) / USAGE_WINDOW_DAYS
    limit = accounts["seat_limit"].where(accounts["seat_limit"] > 0)
    adoption = (active / limit).clip(upper=1.0).fillna(active / (active + USAGE_UNLIMITED_SCALE))
    depth = events / (events + USAGE_EVENTS_SCALE)
    values["usage"] = 100.0 * (0.7 * adoption + 0.3 * depth)

    # engagement: client touches (client-side activities, client-owned tasks completed), by
    # recency and volume; the data behind it is every activity, whichever side acted.
    tasks = frames.tasks
    activity = frames.activity_summary.set_index("account_id")
    client_done = tasks.loc[(tasks["owner_side"] == "client") & tasks["completed_on"].notna()]
    done_recently = client_done["completed_on"] > d - pd.Timedelta(days=ENGAGEMENT_WINDOW_DAYS)
    touch_count = activity["client_touches"].reindex(ids, fill_value=0) + done_recently.groupby(
        client_done["account_id"]
    ).sum().reindex(ids, fill_value=0)
    last_done = _latest(client_done["completed_on"], client_done["account_id"], ids)
    last_touch = _newest(activity["last_client_on"].reindex(ids), last_done)
    recency = (1 - (d - last_touch).dt.days / ENGAGEMENT_WINDOW_DAYS).clip(lower=0, upper=1).fillna(0)
    volume = (touch_count / ENGAGEMENT_FULL_TOUCHES).clip(upper=1)
    values["engagement"] = 100.0 * (0.6 * recency + 0.4 * volume)
    dates["engagement"] = _newest(activity["last_any_on"].reindex(ids), last_done)

    # support: penalties for tickets open on D, by priority. An open ticket is a fact about D
    # itself, so it keeps the component current.
    tickets = frames.tickets
    open_tickets = tickets[tickets["open_on_day"]]
    penalty = open_tickets["priority"].map(TICKET_PENALTY).fillna(TICKET_PENALTY["normal"])
    values["support"] = (100.0 - penalty.groupby(open_tickets["account_id"]).sum().reindex(ids, fill_value=0)).clip(
        lower=0
    )
    support_dates = _newest(
        _latest(tickets["opened_on"], tickets["account_id"], ids),
        _latest(tickets["solved_on"], tickets["account_id"], ids),
    )
    has_open = pd.Series(ids.isin(open_tickets["account_id"]), index=ids)
    dates["support"] = support_dates.mask(has_open, d)

    # billing: penalties for overdue invoices, growing with the days overdue; an outstanding
    # invoice keeps the component current, as an open ticket does.
    invoices = frames.invoices
    overdue, days_over = overdue_invoices(frames, day=day)
    penalty = pd.Series(30.0 + days_over.clip(lower=0, upper=60) / 2, index=invoices.index)
    penalty = penalty.where(invoices["status_on_day"] != "uncollectible", 70.0)[overdue]
    values["billing"] = (
        100.0 - penalty.groupby(invoices.loc[overdue, "account_id"]).sum().reindex(ids, fill_value=0)
    ).clip(lower=0)
    outstanding = invoices["status_on_day"].isin(OUTSTANDING_INVOICE_STATUSES)
    billing_dates = _newest(
        _latest(invoices["issued_at"], invoices["account_id"], ids),
        _latest(invoices["paid_on"], invoices["account_id"], ids),
    )
    dates["billing"] = billing_dates.mask(pd.Series(ids.isin(invoices.loc[outstanding, "account_id"]), index=ids), d)

    # onboarding: the mutual action plan on schedule (tasks due before D that are done), less
    # blocked tasks; an unfinished task keeps it current.
    done = tasks["status_on_day"] == "done"
    was_due = tasks["due_date"].notna() & (tasks["due_date"] < d)
    due_count = was_due.groupby(tasks["account_id"]).sum().reindex(ids, fill_value=0)
    due_done = (was_due & done).groupby(tasks["account_id"]).sum().reindex(ids, fill_value=0)
    on_track = (due_done / due_count.where(due_count > 0)).fillna(1.0)
    blocked = (tasks["status_on_day"] == "blocked").groupby(tasks["account_id"]).sum().reindex(ids, fill_value=0)
    values["onboarding"] = (100.0 * on_track - TASK_BLOCKED_PENALTY * blocked).clip(lower=0, upper=100)
    task_dates = _newest(
        _latest(tasks["created_on"], tasks["account_id"], ids),
        _latest(tasks["status_changed_on"], tasks["account_id"], ids),
        _latest(tasks["completed_on"], tasks["account_id"], ids),
    )
    unfinished = pd.Series(ids.isin(tasks.loc[~done, "account_id"]), index=ids)
    dates["onboarding"] = task_dates.mask(unfinished, d)
    values["onboarding"] = values["onboarding"].where(dates["onboarding"].notna())

    return values, dates


def overdue_invoices(frames: Frames, *, day: date) -> tuple[pd.Series, pd.Series]:
    """Which invoices are overdue on D (a boolean mask) and by how many days."""
    invoices = frames.invoices
    d = pd.Timestamp(day)
    days_over = (d - invoices["due_on"]).dt.days.fillna(0)
    status = invoices["status_on_day"]
    overdue = status.isin(("past_due", "uncollectible")) | ((status == "open") & (days_over > 0))
    return overdue, days_over


def gates_on_day(frames: Frames, *, day: date, config: HealthConfig) -> pd.Series:
    """Per account, the critical conditions that cap the score in the red band ('' for none)."""
    ids = pd.Index(frames.accounts["account_id"], name="account_id")
    reasons = pd.Series("", index=ids, dtype=object)
    gates = config.gates

    limit_days = gates.get("invoice_past_due_days")
    if limit_days is not None:
        invoices = frames.invoices
        overdue, days_over = overdue_invoices(frames, day=day)
        late = invoices.assign(days_over=days_over)[overdue & (days_over > limit_days)]
        worst = late.sort_values(["days_over", "external_id"]).groupby("account_id").tail(1).set_index("account_id")
        text = (
            "invoice " + worst["external_id"] + " is " + worst["days_over"].astype(int).astype(str) + " days past due"
        )
        reasons = _join_reason(reasons, text.reindex(ids))

    if gates.get("champion_gone"):
        champions = frames.contacts[frames.contacts["is_champion"]]
        gone = champions[champions["left_on"].notna()]
        still_here = set(champions.loc[champions["left_on"].isna(), "account_id"])
        gone = gone[~gone["account_id"].isin(still_here)]
        last = gone.sort_values(["left_on", "external_id"]).groupby("account_id").tail(1).set_index("account_id")
        names = last["name"].where(last["name"] != "", last["external_id"])
        text = "champion " + names + " left on " + last["left_on"].dt.strftime("%Y-%m-%d")
        reasons = _join_reason(reasons, text.reindex(ids))
    return reasons


def _join_reason(reasons: pd.Series, more: pd.Series) -> pd.Series:
    more = more.fillna("")
    both = (reasons != "") & (more != "")
    return (reasons + np.where(both, "; ", "") + more).astype(object)


def score_accounts(
    frames: Frames, *, day: date, config: HealthConfig, previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per scorable account: score, band, delta vs `previous` (the stored scores of D-1).

    A component with no data, or whose newest data is more than `stale_after_days` before D, is
    left out and its weight spread over the others; an account with no component left gets no
    score at all rather than a made-up one.
    """
    d = pd.Timestamp(day)
    if frames.accounts.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    values, dates = score_components(frames, day=day, config=config)
    weights = pd.Series({name: float(config.weights.get(name, 0) or 0) for name in COMPONENTS})
    oldest_fresh = d - pd.Timedelta(days=int(config.stale_after_days))
    fresh = dates.notna() & (dates >= oldest_fresh) & values.notna()
    counted = fresh & (weights > 0).to_numpy()
    weight_sum = counted.mul(weights, axis=1).sum(axis=1)
    weighted = values.where(counted, 0.0).mul(weights, axis=1).sum(axis=1)
    scorable = weight_sum > 0
    score = (weighted / weight_sum.where(scorable)).round(1)

    gate = gates_on_day(frames, day=day, config=config)
    cap = float(config.gates.get("red_cap", DEFAULT_GATES["red_cap"]))
    score = score.where(gate == "", np.minimum(score, cap))

    keep = scorable[scorable].index
    score = score.loc[keep].astype(float)
    out = pd.DataFrame({"account_id": keep.to_numpy(), "score": score.to_numpy()})
    out["model_version"] = config.version
    out["band"] = band_for(score, config.bands).to_numpy()
    out["gate"] = gate.loc[keep].to_numpy()
    if previous is not None and len(previous):
        before = previous.set_index("account_id")["score"].astype(float)
        out["delta"] = (score - before.reindex(keep)).round(1).to_numpy()
    else:
        out["delta"] = np.nan

    names = list(COMPONENTS)
    shown = values.loc[keep].round(1).where(counted.loc[keep])
    date_text = dates.loc[keep].apply(lambda column: column.dt.strftime("%Y-%m-%d"))
    weighted_names = [name for name in names if weights[name] > 0]
    out["components"] = [
        {name: float(v) for name, v in zip(names, row, strict=True) if v == v} for row in shown.to_numpy()
    ]
    out["component_dates"] = [
        {name: (v if isinstance(v, str) else None) for name, v in zip(names, row, strict=True)}
        for row in date_text.to_numpy()
    ]
    stale = counted.loc[keep]
    out["excluded"] = [
        {
            name: ("no data" if not isinstance(when, str) else f"stale since {when}")
            for name, when, ok in zip(names, row, flags, strict=True)
            if name in weighted_names and not ok
        }
        for row, flags in zip(date_text.to_numpy(), stale.to_numpy(), strict=True)
    ]
    return out[SCORE_COLUMNS]
