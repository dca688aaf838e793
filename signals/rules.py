"""The nine signal rules, exactly as ARCHITECTURE.md "Signals (exact rules)" states them.

Each rule is a pure function of the localized frames (health.scoring.localize: every timestamp
is already a calendar date in the organization's time zone, nothing dated after D is left) and
the day D, vectorized over the whole organization. Each returns one row per condition with the
columns of SIGNAL_COLUMNS; `signals/services.py` turns them into lasting Signal rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from health.scoring import Frames

SIGNAL_COLUMNS = ["account_id", "type", "entity_key", "severity", "cause", "action", "evidence", "deadline", "is_new"]

ACTIONS = {
    "blocked_task": "write a response plan today",
    "silent_account": "proactive outreach today",
    "health_drop": "review what changed",
    "go_live_soon": "readiness check",
    "follow_up_due": "send a follow-up",
    "renewal_soon": "prepare the executive summary",
    "plan_limit": "flag an expansion conversation",
    "payment_failed": "coordinate with billing",
    "support_spike": "check the account's support situation",
}

# 1 (an opportunity) to 5 (revenue at risk now). Ranking weighs severity exponentially.
SEVERITY = {
    "blocked_task": 4,
    "silent_account": 4,
    "health_drop": 4,
    "health_drop_red": 5,
    "go_live_soon": 3,
    "follow_up_due": 2,
    "renewal_soon": 2,
    "renewal_soon_near": 3,  # within 30 days
    "plan_limit": 1,
    "payment_failed": 4,
    "payment_uncollectible": 5,
    "urgent_ticket": 4,
    "ticket_spike": 3,
}

KIND_LABELS = {"email": "e-mail", "call": "call", "meeting": "meeting", "message": "message", "note": "note"}
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


@dataclass(frozen=True)
class Thresholds:
    """The per-organization numbers of the rules (signals.models.SignalThresholds)."""

    silent_days: int = 10
    health_drop_points: int = 10
    go_live_days: int = 7
    follow_up_days: int = 2
    renewal_days: int = 90
    plan_limit_percent: int = 80
    payment_lookback_days: int = 30
    support_spike_min_tickets: int = 3
    support_spike_ratio: float = 2.0

    @classmethod
    def from_model(cls, model) -> Thresholds:
        return cls(**{name: getattr(model, name) for name in cls.__dataclass_fields__}) if model else cls()


# --- formatting -------------------------------------------------------------------------------


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_label(value, today: pd.Timestamp) -> str:
    """'3 Nov', or '3 Nov 2025' when not in D's year (a date or Timestamp, called once per signal)."""
    text = f"{value.day} {MONTHS[value.month - 1]}"
    return text if value.year == today.year else f"{text} {value.year}"


def iso(value) -> str | None:
    if value is None or value != value:  # None, NaT or NaN
        return None
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def money(amount: float, currency: str) -> str:
    symbol = CURRENCY_SYMBOLS.get((currency or "USD").upper())
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


def in_days(days: int) -> str:
    return "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=SIGNAL_COLUMNS)


def _signals(rows: pd.DataFrame, type_: str, *, entity_key, severity, cause, evidence, deadline=None, is_new=True):
    if rows.empty:
        return _empty()
    out = pd.DataFrame(
        {
            "account_id": rows["account_id"].astype("int64").to_numpy(),
            "type": type_,
            "entity_key": list(entity_key) if not isinstance(entity_key, str) else entity_key,
            "severity": severity if np.isscalar(severity) else np.asarray(severity),
            "cause": list(cause),
            "action": ACTIONS[type_],
            "evidence": list(evidence),
            "deadline": list(deadline) if deadline is not None else None,
            "is_new": is_new if np.isscalar(is_new) else np.asarray(is_new),
        }
    )
    return out[SIGNAL_COLUMNS]


def _day(day: date) -> pd.Timestamp:
    return pd.Timestamp(day)


# --- the rules --------------------------------------------------------------------------------


def blocked_task(frames: Frames, *, day: date, previous_run_day: date | None) -> pd.DataFrame:
    """A task with status blocked; new when it became blocked on or after the previous run's date P.

    P is the date of the latest succeeded run before D, or D-1 when there is none.
    """
    d = _day(day)
    p = pd.Timestamp(previous_run_day) if previous_run_day is not None else d - pd.Timedelta(days=1)
    tasks = frames.tasks
    rows = tasks[tasks["status_on_day"] == "blocked"]
    # A task without a recorded status change counts as blocked since it was created.
    since = rows["status_changed_on"].fillna(rows["created_on"])
    is_new = (since >= p).fillna(False).to_numpy()
    causes = [
        f"{side.capitalize()} task “{title}” blocked"
        + (f" since {day_label(when, d)}" if not pd.isna(when) else "")
        + (f": {reason}" if reason else "")
        for side, title, when, reason in zip(
            rows["owner_side"], rows["title"], since, rows["blocked_reason"], strict=True
        )
    ]
    evidence = [
        {"task": ext, "title": title, "owner_side": side, "blocked_since": iso(when)}
        for ext, title, side, when in zip(rows["external_id"], rows["title"], rows["owner_side"], since, strict=True)
    ]
    return _signals(
        rows,
        "blocked_task",
        entity_key=("task:" + rows["external_id"]).tolist(),
        severity=SEVERITY["blocked_task"],
        cause=causes,
        evidence=evidence,
        is_new=is_new,
    )


def last_client_touch(frames: Frames) -> pd.DataFrame:
    """Each account's latest client activity: a client-side activity or a client-owned task completed."""
    acts = frames.activity_summary
    acts = acts[acts["last_client_at"].notna()]
    acts = pd.DataFrame(
        {
            "account_id": acts["account_id"],
            "at": acts["last_client_at"],
            "on": acts["last_client_on"],
            "what": acts["last_client_kind"].map(KIND_LABELS).fillna(acts["last_client_kind"]),
            "who": acts["last_client_actor"].fillna(""),
            "ref": "activity:" + acts["last_client_ref"],
        }
    )
    tasks = frames.tasks
    done = tasks.loc[(tasks["owner_side"] == "client") & tasks["completed_on"].notna()]
    done = pd.DataFrame(
        {
            "account_id": done["account_id"],
            "at": done["completed_at"],
            "on": done["completed_on"],
            "what": "task “" + done["title"] + "” completed",
            "who": "",
            "ref": "task:" + done["external_id"],
        }
    )
    touches = pd.concat([t for t in (acts, done) if not t.empty] or [acts], ignore_index=True)
    touches = touches.sort_values(["account_id", "at", "ref"])
    return touches.groupby("account_id").tail(1).set_index("account_id")


def silent_account(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """Not churned, and the last client activity (or else the account's creation) is N+ days before D."""
    d = _day(day)
    accounts = frames.accounts.set_index("account_id")
    accounts = accounts[~accounts["is_churned"]]
    last = last_client_touch(frames).reindex(accounts.index)
    since = last["on"].fillna(accounts["created_on"])
    days = (d - since).dt.days
    fired = accounts[(days >= thresholds.silent_days).fillna(False)].index
    if fired.empty:
        return _empty()
    last, since, days = last.loc[fired], since.loc[fired], days.loc[fired].astype(int)
    causes, evidence = [], []
    for n, on, what, who, ref in zip(days, since, last["what"], last["who"], last["ref"], strict=True):
        if isinstance(ref, str):
            source = f"{what} from {who}" if who else what
            causes.append(f"No client activity for {n} days — last: {source} on {day_label(on, d)}")
            evidence.append({"days_silent": n, "last_activity": ref, "last_activity_on": iso(on), "kind": what})
        else:
            causes.append(f"No client activity for {n} days — none since the account was created on {day_label(on, d)}")
            evidence.append({"days_silent": n, "last_activity": None, "counted_from_created_on": iso(on)})
    rows = pd.DataFrame({"account_id": fired})
    return _signals(
        rows, "silent_account", entity_key="", severity=SEVERITY["silent_account"], cause=causes, evidence=evidence
    )


def health_drop(scores: pd.DataFrame, previous: pd.DataFrame, *, thresholds: Thresholds) -> pd.DataFrame:
    """The score fell by N+ points since the previous day's score, or entered the red band.

    Both compare with the stored score of D-1: with no score the day before, nothing is known to
    have fallen or entered (so a first run does not flag every red account at once).
    """
    if scores.empty or previous.empty:
        return _empty()
    both = scores.merge(previous, on="account_id", suffixes=("", "_before"))
    change = (both["score"] - both["score_before"]).round(1)
    fell = change <= -thresholds.health_drop_points
    entered_red = (both["band"] == "red") & (both["band_before"] != "red")
    rows = both[fell | entered_red]
    change = change[fell | entered_red]
    causes, evidence = [], []
    for row, delta in zip(rows.itertuples(index=False), change, strict=True):
        moves = _component_moves(row.components_before, row.components)
        if delta <= -thresholds.health_drop_points:
            text = f"Health fell {abs(delta):g} points to {row.score:g} ({row.band})"
        else:
            text = f"Health entered the red band at {row.score:g} (from {row.score_before:g}, {row.band_before})"
        details = [f"{name} {before:g}→{after:g}" for name, before, after in moves[:2]]
        if row.gate:
            details.append(f"capped: {row.gate}")
        causes.append(text + (" — " + ", ".join(details) if details else ""))
        evidence.append(
            {
                "score": row.score,
                "previous_score": row.score_before,
                "change": float(delta),
                "band": row.band,
                "previous_band": row.band_before,
                "gate": row.gate or None,
                "components": {name: [before, after] for name, before, after in moves},
                "model_version": int(row.model_version),
            }
        )
    severity = np.where(rows["band"] == "red", SEVERITY["health_drop_red"], SEVERITY["health_drop"])
    return _signals(rows, "health_drop", entity_key="", severity=severity, cause=causes, evidence=evidence)


def _component_moves(before, after) -> list[tuple[str, float, float]]:
    """Components that went down, biggest fall first (a component that dropped out is left aside)."""
    before, after = _parsed(before), _parsed(after)
    moves = [(name, before[name], after[name]) for name in after if name in before and after[name] < before[name]]
    return sorted(moves, key=lambda move: move[2] - move[1])


def _parsed(components) -> dict:
    # Stored scores come with their components as JSON text (health.selectors.scores_frame).
    if isinstance(components, str):
        return json.loads(components)
    return components or {}


def go_live_soon(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """Stage onboarding and go-live date between D and D+N inclusive."""
    d = _day(day)
    accounts = frames.accounts
    go_live = accounts["go_live_date"]
    rows = accounts[
        (accounts["stage"] == "onboarding")
        & (go_live >= d)
        & (go_live <= d + pd.Timedelta(days=thresholds.go_live_days))
    ]
    days = (rows["go_live_date"] - d).dt.days.astype(int)
    causes = [
        f"Go-live {in_days(n)}, on {day_label(when, d)}" for n, when in zip(days, rows["go_live_date"], strict=True)
    ]
    evidence = [{"go_live_date": iso(when), "days_left": n} for n, when in zip(days, rows["go_live_date"], strict=True)]
    return _signals(
        rows,
        "go_live_soon",
        entity_key="",
        severity=SEVERITY["go_live_soon"],
        cause=causes,
        evidence=evidence,
        deadline=[when.date() for when in rows["go_live_date"]],
    )


def follow_up_due(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """A client-owned task not done whose due date is N+ days before D."""
    d = _day(day)
    tasks = frames.tasks
    rows = tasks[
        (tasks["owner_side"] == "client")
        & (tasks["status_on_day"] != "done")
        & (tasks["due_date"] <= d - pd.Timedelta(days=thresholds.follow_up_days))
    ]
    late = (d - rows["due_date"]).dt.days.astype(int)
    causes = [
        f"Client task “{title}” was due on {day_label(due, d)}, {n} days ago, and is not done"
        for title, due, n in zip(rows["title"], rows["due_date"], late, strict=True)
    ]
    evidence = [
        {"task": ext, "title": title, "due_date": iso(due), "days_overdue": n, "status": status}
        for ext, title, due, n, status in zip(
            rows["external_id"], rows["title"], rows["due_date"], late, rows["status_on_day"], strict=True
        )
    ]
    return _signals(
        rows,
        "follow_up_due",
        entity_key=("task:" + rows["external_id"]).tolist(),
        severity=SEVERITY["follow_up_due"],
        cause=causes,
        evidence=evidence,
    )


def renewal_soon(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """Renewal date between D and D+N inclusive."""
    d = _day(day)
    accounts = frames.accounts
    renewal = accounts["renewal_date"]
    rows = accounts[(renewal >= d) & (renewal <= d + pd.Timedelta(days=thresholds.renewal_days))]
    days = (rows["renewal_date"] - d).dt.days.astype(int)
    causes = [
        f"Renewal {in_days(n)}, on {day_label(when, d)}" + (f" — ARR {money(arr, cur)}" if arr > 0 else "")
        for n, when, arr, cur in zip(days, rows["renewal_date"], rows["arr"].fillna(0), rows["currency"], strict=True)
    ]
    evidence = [
        {"renewal_date": iso(when), "days_left": n, "arr": float(arr)}
        for n, when, arr in zip(days, rows["renewal_date"], rows["arr"].fillna(0), strict=True)
    ]
    severity = np.where(days <= 30, SEVERITY["renewal_soon_near"], SEVERITY["renewal_soon"])
    return _signals(
        rows,
        "renewal_soon",
        entity_key="",
        severity=severity,
        cause=causes,
        evidence=evidence,
        deadline=[when.date() for when in rows["renewal_date"]],
    )


def plan_limit(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """Seats used on the latest usage day on or before D are at least N% of the seat limit."""
    d = _day(day)
    latest = frames.usage_summary.rename(columns={"last_date": "date", "last_seats_used": "seats_used"})
    rows = latest.merge(frames.accounts[["account_id", "seat_limit"]], on="account_id")
    rows = rows[rows["seat_limit"] > 0]
    # Integer arithmetic: exactly 80% fires, 79.99% does not.
    rows = rows[rows["seats_used"] * 100 >= thresholds.plan_limit_percent * rows["seat_limit"]]
    limit = rows["seat_limit"].astype(int)
    percent = (100 * rows["seats_used"] / limit).round().astype(int)
    causes = [
        f"{used} of {lim} seats used ({pct}%) on {day_label(on, d)}"
        for used, lim, pct, on in zip(rows["seats_used"], limit, percent, rows["date"], strict=True)
    ]
    evidence = [
        {"seats_used": int(used), "seat_limit": int(lim), "percent": int(pct), "usage_date": iso(on)}
        for used, lim, pct, on in zip(rows["seats_used"], limit, percent, rows["date"], strict=True)
    ]
    return _signals(rows, "plan_limit", entity_key="", severity=SEVERITY["plan_limit"], cause=causes, evidence=evidence)


def payment_failed(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """An invoice issued between D-N and D inclusive that is past due or uncollectible on D.

    Past due means status past_due, or status open with a due date before D.
    """
    d = _day(day)
    invoices = frames.invoices
    status = invoices["status_on_day"]
    recent = (invoices["issued_at"] >= d - pd.Timedelta(days=thresholds.payment_lookback_days)) & (
        invoices["issued_at"] <= d
    )
    failed = status.isin(("past_due", "uncollectible")) | ((status == "open") & (invoices["due_date"] < d))
    rows = invoices[recent & failed]
    causes, evidence = [], []
    for ext, amount, cur, issued, due, state in zip(
        rows["external_id"],
        rows["amount"],
        rows["currency"],
        rows["issued_at"],
        rows["due_date"],
        rows["status_on_day"],
        strict=True,
    ):
        what = "uncollectible" if state == "uncollectible" else "past due"
        due_text = f" (due {day_label(due, d)})" if not pd.isna(due) else ""
        causes.append(f"Invoice {ext} of {money(amount, cur)} issued on {day_label(issued, d)} is {what}{due_text}")
        evidence.append(
            {
                "invoice": ext,
                "amount": float(amount),
                "currency": cur,
                "status": state,
                "issued_at": iso(issued),
                "due_date": iso(due),
                "days_overdue": None if pd.isna(due) else int((d - due).days),
            }
        )
    severity = np.where(
        rows["status_on_day"] == "uncollectible", SEVERITY["payment_uncollectible"], SEVERITY["payment_failed"]
    )
    return _signals(
        rows,
        "payment_failed",
        entity_key=("invoice:" + rows["external_id"]).tolist(),
        severity=severity,
        cause=causes,
        evidence=evidence,
    )


def support_spike(frames: Frames, *, day: date, thresholds: Thresholds) -> pd.DataFrame:
    """An open urgent ticket (one signal per ticket), or a spike of tickets opened (one per account).

    Spike: tickets opened from D-7 to D-1 number at least N and at least `ratio` times the weekly
    average (count / 4) of those opened from D-35 to D-8.
    """
    d = _day(day)
    tickets = frames.tickets
    urgent = tickets[(tickets["priority"] == "urgent") & tickets["open_on_day"]]
    urgent_signals = _signals(
        urgent,
        "support_spike",
        entity_key=("ticket:" + urgent["external_id"]).tolist(),
        severity=SEVERITY["urgent_ticket"],
        cause=[
            f"Urgent ticket {ext} open since {day_label(opened, d)}" + (f": “{subject}”" if subject else "")
            for ext, opened, subject in zip(urgent["external_id"], urgent["opened_on"], urgent["subject"], strict=True)
        ],
        evidence=[
            {"ticket": ext, "priority": "urgent", "status": status, "opened_on": iso(opened), "subject": subject}
            for ext, status, opened, subject in zip(
                urgent["external_id"], urgent["status"], urgent["opened_on"], urgent["subject"], strict=True
            )
        ],
    )

    opened = tickets["opened_on"]
    last_week = (opened >= d - pd.Timedelta(days=7)) & (opened <= d - pd.Timedelta(days=1))
    baseline = (opened >= d - pd.Timedelta(days=35)) & (opened <= d - pd.Timedelta(days=8))
    counts = pd.DataFrame(
        {
            "recent": last_week.groupby(tickets["account_id"]).sum(),
            "baseline": baseline.groupby(tickets["account_id"]).sum(),
        }
    ).fillna(0)
    ratio = float(thresholds.support_spike_ratio)
    # recent >= ratio * baseline / 4, multiplied out so no rounding decides a boundary.
    spiking = counts[
        (counts["recent"] >= thresholds.support_spike_min_tickets)
        & (4 * counts["recent"] >= ratio * counts["baseline"])
    ].reset_index(names="account_id")
    spike_signals = _signals(
        spiking,
        "support_spike",
        entity_key="",
        severity=SEVERITY["ticket_spike"],
        cause=[
            f"{int(recent)} tickets opened in the last 7 days, against a weekly average of {base / 4:g}"
            " over the 4 weeks before"
            for recent, base in zip(spiking["recent"], spiking["baseline"], strict=True)
        ],
        evidence=[
            {"opened_last_7_days": int(recent), "opened_previous_4_weeks": int(base), "weekly_average": base / 4}
            for recent, base in zip(spiking["recent"], spiking["baseline"], strict=True)
        ],
    )
    return pd.concat([urgent_signals, spike_signals], ignore_index=True)


def evaluate(
    frames: Frames,
    *,
    day: date,
    thresholds: Thresholds,
    scores: pd.DataFrame | None = None,
    previous_scores: pd.DataFrame | None = None,
    previous_run_day: date | None = None,
) -> pd.DataFrame:
    """Every rule over the whole organization: one row per condition that holds on D."""
    if not frames.localized:
        raise ValueError("the rules need localized frames (health.scoring.localize)")
    found = [
        blocked_task(frames, day=day, previous_run_day=previous_run_day),
        silent_account(frames, day=day, thresholds=thresholds),
        go_live_soon(frames, day=day, thresholds=thresholds),
        follow_up_due(frames, day=day, thresholds=thresholds),
        renewal_soon(frames, day=day, thresholds=thresholds),
        plan_limit(frames, day=day, thresholds=thresholds),
        payment_failed(frames, day=day, thresholds=thresholds),
        support_spike(frames, day=day, thresholds=thresholds),
    ]
    if scores is not None and previous_scores is not None:
        found.append(health_drop(scores, previous_scores, thresholds=thresholds))
    found = [frame for frame in found if not frame.empty]
    if not found:
        return _empty()
    return pd.concat(found, ignore_index=True)
