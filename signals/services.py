"""Writes for signals, thresholds, the triage list and the record of nightly runs.

Signals are written set-based: one statement reopens what an earlier run of the same day had
closed, one closes every active signal whose condition no longer holds, one upserts every
condition that holds (keyed by type, account and entity, among the active rows only).
"""

import json
from datetime import date, datetime, timedelta

import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from health.bulk import server_cursor, stage_frame
from health.scoring import Frames, localize
from health.selectors import org_frames, scores_frame
from signals.models import NightlyRun, RunStatus, Signal, SignalStatus, SignalThresholds, TriageItem
from signals.ranking import rank_accounts
from signals.rules import Thresholds, evaluate
from signals.selectors import open_signals_frame, previous_run_day


def thresholds_ensure(*, org) -> SignalThresholds:
    thresholds, _ = SignalThresholds.objects.get_or_create(org=org)
    return thresholds


KEY_MATCH = "{a}.account_id = {b}.account_id AND {a}.type = {b}.type AND {a}.entity_key = {b}.entity_key"

# A re-run of a day first undoes that day's closings, so it decides afresh and leaves the same rows.
REOPEN_SAME_DAY = f"""
    UPDATE signals_signal s SET cleared_on = NULL
    WHERE s.org_id = %(org)s AND s.cleared_on = %(day)s
      AND s.id = (SELECT max(o.id) FROM signals_signal o
                  WHERE o.org_id = s.org_id AND {KEY_MATCH.format(a="o", b="s")} AND o.cleared_on = %(day)s)
      AND NOT EXISTS (SELECT 1 FROM signals_signal a
                      WHERE a.org_id = s.org_id AND {KEY_MATCH.format(a="a", b="s")} AND a.cleared_on IS NULL)
"""

STAGED_SIGNALS = {
    "account_id": "bigint",
    "type": "text",
    "entity_key": "text",
    "severity": "int",
    "cause": "text",
    "action": "text",
    "evidence": "jsonb",
    "deadline": "date",
    "is_new": "bool",
}

CLEAR_GONE = f"""
    UPDATE signals_signal s SET cleared_on = %(day)s
    WHERE s.org_id = %(org)s AND s.cleared_on IS NULL AND s.first_seen <= %(day)s
      AND NOT EXISTS (SELECT 1 FROM staged_signals f WHERE {KEY_MATCH.format(a="f", b="s")})
"""

# open stays open, done stays done, snoozed comes back once its snooze has ended; `is_new` means
# first seen today, except for blocked tasks, where the rule itself says what is new.
UPSERT_FIRED = """
    INSERT INTO signals_signal AS s
        (org_id, account_id, type, entity_key, status, severity, first_seen, last_seen, is_new,
         cause, action, evidence, deadline, snoozed_until, done_at, done_by_id, cleared_on)
    SELECT %(org)s, f.account_id, f.type, f.entity_key, 'open', f.severity, %(day)s, %(day)s, f.is_new,
           f.cause, f.action, f.evidence, f.deadline, NULL, NULL, NULL, NULL
    FROM staged_signals f
    ON CONFLICT (org_id, account_id, type, entity_key) WHERE cleared_on IS NULL DO UPDATE SET
        severity = EXCLUDED.severity,
        last_seen = EXCLUDED.last_seen,
        cause = EXCLUDED.cause,
        action = EXCLUDED.action,
        evidence = EXCLUDED.evidence,
        deadline = EXCLUDED.deadline,
        is_new = CASE WHEN s.type = 'blocked_task' THEN EXCLUDED.is_new ELSE s.first_seen = EXCLUDED.last_seen END,
        status = CASE WHEN s.status = 'snoozed' AND s.snoozed_until <= EXCLUDED.last_seen THEN 'open'
                      ELSE s.status END,
        snoozed_until = CASE WHEN s.status = 'snoozed' AND s.snoozed_until <= EXCLUDED.last_seen THEN NULL
                             ELSE s.snoozed_until END
    RETURNING (xmax = 0) AS inserted
"""


def _iso(value) -> str | None:
    if value is None or (not isinstance(value, date | datetime) and pd.isna(value)):
        return None
    return value.isoformat()[:10]


def signals_write(*, org, day: date, found: pd.DataFrame) -> dict:
    """Apply one day's conditions (signals.rules.evaluate) to the stored signals; returns counts."""
    found = found.drop_duplicates(["account_id", "type", "entity_key"])
    staged = found.assign(
        evidence=[json.dumps(value) for value in found["evidence"]],
        deadline=[_iso(value) for value in found["deadline"]],
    )
    params = {"org": org.pk, "day": day}
    with server_cursor() as cursor:
        stage_frame(cursor, "staged_signals", STAGED_SIGNALS, staged)
        cursor.execute(REOPEN_SAME_DAY, params)
        cursor.execute(CLEAR_GONE, params)
        cleared = cursor.rowcount
        inserted = 0
        if len(found):
            cursor.execute(UPSERT_FIRED, params)
            inserted = sum(1 for (was_inserted,) in cursor.fetchall() if was_inserted)
    return {"signals_holding": len(found), "signals_started": inserted, "signals_cleared": cleared}


def signals_refresh(
    *, org, day: date, frames: Frames | None = None, previous_scores: pd.DataFrame | None = None
) -> dict:
    """Evaluate every rule for (org, D) against the stored scores and update the signals."""
    if frames is None:
        frames = localize(org_frames(org=org, day=day), tz=org.tz, day=day)
    thresholds = Thresholds.from_model(thresholds_ensure(org=org))
    found = evaluate(
        frames,
        day=day,
        thresholds=thresholds,
        scores=scores_frame(org=org, day=day),
        previous_scores=(
            scores_frame(org=org, day=day - timedelta(days=1)) if previous_scores is None else previous_scores
        ),
        previous_run_day=previous_run_day(org=org, day=day),
    )
    return signals_write(org=org, day=day, found=found)


# An upsert rather than delete-and-insert, so re-running a day leaves the very same rows.
UPSERT_TRIAGE = """
    INSERT INTO signals_triageitem (org_id, date, account_id, rank, priority, "group", reasons, signal_ids)
    SELECT %(org)s, %(day)s, t.account_id, t.rank, t.priority, t.grp, t.reasons, t.signal_ids
    FROM staged_triage t
    ON CONFLICT (org_id, date, account_id) DO UPDATE SET
        rank = EXCLUDED.rank, priority = EXCLUDED.priority, "group" = EXCLUDED."group",
        reasons = EXCLUDED.reasons, signal_ids = EXCLUDED.signal_ids
"""
STAGED_TRIAGE = {
    "account_id": "bigint",
    "rank": "int",
    "priority": "float8",
    "grp": "text",
    "reasons": "jsonb",
    "signal_ids": "jsonb",
}


def triage_build(*, org, day: date, accounts: pd.DataFrame) -> dict:
    """Replace the day's triage list with a fresh ranking of the accounts' open signals."""
    items = rank_accounts(open_signals_frame(org=org, day=day), accounts, day=day)
    staged = items.assign(
        grp=items["group"],
        reasons=[json.dumps(value) for value in items["reasons"]],
        signal_ids=["[" + ",".join(map(str, value)) + "]" for value in items["signal_ids"]],
    )
    params = {"org": org.pk, "day": day}
    with server_cursor() as cursor:
        stage_frame(cursor, "staged_triage", STAGED_TRIAGE, staged)
        cursor.execute(
            "DELETE FROM signals_triageitem i WHERE i.org_id = %(org)s AND i.date = %(day)s"
            " AND NOT EXISTS (SELECT 1 FROM staged_triage t WHERE t.account_id = i.account_id)",
            params,
        )
        if len(items):
            cursor.execute(UPSERT_TRIAGE, params)
    return {"triage_items": len(items)}


def _leave_triage(*, org, signal: Signal) -> None:
    """Take the signal off the list of the day it was last seen, and drop items left with nothing."""
    items = TriageItem.objects.select_for_update().filter(org=org, date=signal.last_seen, account=signal.account_id)
    for item in items:
        item.signal_ids = [i for i in item.signal_ids if i != signal.pk]
        if item.signal_ids:
            item.save(update_fields=["signal_ids"])
        else:
            item.delete()


def signal_done(*, org, signal: Signal, user) -> Signal:
    """Mark a signal done: it leaves the list and stays done until its condition clears and comes back."""
    with transaction.atomic():
        signal = Signal.objects.select_for_update().get(org=org, pk=signal.pk)
        signal.status = SignalStatus.DONE
        signal.done_at = timezone.now()
        signal.done_by = user
        signal.snoozed_until = None
        signal.save(update_fields=["status", "done_at", "done_by", "snoozed_until"])
        _leave_triage(org=org, signal=signal)
    return signal


def signal_snooze(*, org, signal: Signal, until: date, user) -> Signal:
    """Hide a signal until `until`: the first run on or after that date brings it back if it still holds."""
    with transaction.atomic():
        signal = Signal.objects.select_for_update().get(org=org, pk=signal.pk)
        signal.status = SignalStatus.SNOOZED
        signal.snoozed_until = until
        signal.save(update_fields=["status", "snoozed_until"])
        _leave_triage(org=org, signal=signal)
    return signal


# --- the record of nightly runs -------------------------------------------------------------


CLAIM_RUN = """
    INSERT INTO signals_nightlyrun (org_id, run_date, status, started_at, attempts, stage_timings, counts, error)
    VALUES (%s, %s, 'queued', now(), 0, '{}'::jsonb, '{}'::jsonb, '')
    ON CONFLICT (org_id, run_date) DO NOTHING
    RETURNING id
"""


def nightly_claim(*, org, day: date) -> bool:
    """Claim (org, D) for the scheduler; False when it was claimed (or run) before."""
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_RUN, [org.pk, day])
        return cursor.fetchone() is not None


def nightly_unclaim(*, org, day: date) -> None:
    """Give a claim back when its task could not be queued, so the next dispatch tries again."""
    NightlyRun.objects.filter(org=org, run_date=day, status=RunStatus.QUEUED, attempts=0).delete()


def nightly_record_start(*, org, day: date) -> NightlyRun:
    with transaction.atomic():
        run, _ = NightlyRun.objects.select_for_update().get_or_create(
            org=org, run_date=day, defaults={"started_at": timezone.now()}
        )
        run.status = RunStatus.RUNNING
        run.started_at = timezone.now()
        run.finished_at = None
        run.attempts += 1
        run.error = ""
        run.stage_timings = {}
        run.counts = {}
        run.save()
    return run


def nightly_record_finish(*, org, run: NightlyRun, timings: dict, counts: dict) -> NightlyRun:
    NightlyRun.objects.filter(org=org, pk=run.pk).update(
        status=RunStatus.SUCCEEDED, finished_at=timezone.now(), stage_timings=timings, counts=counts, error=""
    )
    run.refresh_from_db()
    return run


def nightly_record_failure(*, org, run: NightlyRun, timings: dict, counts: dict, error: str) -> NightlyRun:
    NightlyRun.objects.filter(org=org, pk=run.pk).update(
        status=RunStatus.FAILED, finished_at=timezone.now(), stage_timings=timings, counts=counts, error=error
    )
    run.refresh_from_db()
    return run
