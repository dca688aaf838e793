"""Reads for health: the organization's source frames for a day, scores, and the current model.

`org_frames` reads each source with one query into pandas. High-volume sources (usage,
activities, tickets, invoices) are read as a recent window plus each account's latest row before
it (a LATERAL probe per account on the (org, account, date) index): every formula and rule only
looks at those windows or at "the latest row", so the result is the same as reading everything.
"""

import json
from datetime import date, datetime, time, timedelta

import pandas as pd
from django.db import connection

from health.models import HealthModel, HealthScore
from health.scoring import Frames

# Widest look-back any rule or component needs: the support spike's D-35..D-8 baseline.
WINDOW_DAYS = 40

EPOCH_DAYS = "({col} - DATE '1970-01-01')"
EPOCH_US = "(extract(epoch FROM {col}) * 1000000)::bigint"


def _select(table_alias: str, columns: list[tuple[str, str]]) -> str:
    parts = []
    for name, kind in columns:
        col = f"{table_alias}.{name}"
        if kind == "ts":
            parts.append(f"{EPOCH_US.format(col=col)} AS {name}")
        elif kind == "day":
            parts.append(f"{EPOCH_DAYS.format(col=col)} AS {name}")
        elif kind == "float":
            parts.append(f"{col}::float8 AS {name}")
        else:
            parts.append(f"{col} AS {name}")
    return ", ".join(parts)


def _read(sql: str, params: dict, columns: list[tuple[str, str]]) -> pd.DataFrame:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    names = [name for name, _ in columns]
    frame = pd.DataFrame.from_records(rows, columns=names)
    for name, kind in columns:
        if kind == "ts":
            frame[name] = pd.to_datetime(pd.to_numeric(frame[name], downcast=None), unit="us", utc=True)
        elif kind == "day":
            frame[name] = pd.to_datetime(pd.to_numeric(frame[name]), unit="D")
    return frame


def _window_and_latest(
    table: str,
    columns: list[tuple[str, str]],
    *,
    time_column: str,
    window_filter: str,
    latest_filter: str = "",
    until: str = "< %(end)s",
) -> str:
    """Rows matching `window_filter`, plus each account's latest row up to the end of D."""
    select_t = _select("t", columns)
    select_l = _select("l", columns)
    inner = ", ".join(["t.id", *[f"t.{name}" for name, _ in columns if name != "account_id"], "t.account_id"])
    return f"""
        SELECT t.id, {select_t} FROM {table} t
        WHERE t.org_id = %(org)s AND {window_filter}
        UNION
        SELECT l.id, {select_l} FROM accounts_account a
        CROSS JOIN LATERAL (
            SELECT {inner} FROM {table} t
            WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.{time_column} {until} {latest_filter}
            ORDER BY t.{time_column} DESC LIMIT 1
        ) l
        WHERE a.org_id = %(org)s
    """


ACCOUNT_COLUMNS = [
    ("id", "int"),
    ("external_id", "str"),
    ("name", "str"),
    ("tier", "str"),
    ("arr", "float"),
    ("currency", "str"),
    ("stage", "str"),
    ("seat_limit", "float"),
    ("go_live_date", "day"),
    ("renewal_date", "day"),
    ("churned_on", "day"),
    ("created_at", "ts"),
]
USAGE_COLUMNS = [
    ("account_id", "int"),
    ("date", "day"),
    ("active_users", "int"),
    ("seats_used", "int"),
    ("events", "int"),
]
ACTIVITY_COLUMNS = [
    ("account_id", "int"),
    ("external_id", "str"),
    ("occurred_at", "ts"),
    ("kind", "str"),
    ("actor_side", "str"),
    ("actor_name", "str"),
]
TICKET_COLUMNS = [
    ("account_id", "int"),
    ("external_id", "str"),
    ("opened_at", "ts"),
    ("status", "str"),
    ("priority", "str"),
    ("solved_at", "ts"),
    ("subject", "str"),
]
INVOICE_COLUMNS = [
    ("account_id", "int"),
    ("external_id", "str"),
    ("issued_at", "day"),
    ("amount", "float"),
    ("currency", "str"),
    ("status", "str"),
    ("due_date", "day"),
    ("paid_at", "ts"),
]
TASK_COLUMNS = [
    ("account_id", "int"),
    ("external_id", "str"),
    ("title", "str"),
    ("owner_side", "str"),
    ("status", "str"),
    ("blocked_reason", "str"),
    ("due_date", "day"),
    ("created_at", "ts"),
    ("status_changed_at", "ts"),
    ("completed_at", "ts"),
]
CONTACT_COLUMNS = [
    ("account_id", "int"),
    ("external_id", "str"),
    ("name", "str"),
    ("is_champion", "bool"),
    ("left_on", "day"),
]


def day_bounds(*, org, day: date, days_back: int = 0) -> tuple[datetime, datetime]:
    """[start of D-days_back, start of D+1) as aware instants of the organization's local midnights."""
    tz = org.tz
    start = datetime.combine(day - timedelta(days=days_back), time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start, end


def org_frames(*, org, day: date) -> Frames:
    """Everything the health formula and the signal rules read for (org, D), nothing dated after D."""
    window_start, end = day_bounds(org=org, day=day, days_back=WINDOW_DAYS)
    params = {"org": org.pk, "day": day, "end": end, "from": window_start, "from_day": day - timedelta(WINDOW_DAYS)}

    accounts = _read(
        f"SELECT {_select('a', ACCOUNT_COLUMNS)} FROM accounts_account a WHERE a.org_id = %(org)s",
        params,
        ACCOUNT_COLUMNS,
    ).rename(columns={"id": "account_id"})

    usage = _read(
        _window_and_latest(
            "accounts_usageday",
            USAGE_COLUMNS,
            time_column="date",
            window_filter="t.date > %(from_day)s AND t.date <= %(day)s",
            until="<= %(day)s",
        ),
        params,
        [("id", "int"), *USAGE_COLUMNS],
    )
    activities = _read(
        _window_and_latest(
            "accounts_activity",
            ACTIVITY_COLUMNS,
            time_column="occurred_at",
            window_filter="t.occurred_at >= %(from)s AND t.occurred_at < %(end)s",
        )
        # ...and each account's latest client activity, however old: the silent rule counts from it.
        + " UNION "
        + _window_and_latest(
            "accounts_activity",
            ACTIVITY_COLUMNS,
            time_column="occurred_at",
            window_filter="false",
            latest_filter="AND t.actor_side = 'client'",
        ),
        params,
        [("id", "int"), *ACTIVITY_COLUMNS],
    )
    tickets = _read(
        _window_and_latest(
            "accounts_ticket",
            TICKET_COLUMNS,
            time_column="opened_at",
            # open now, or solved after the window began: either may have been open on D
            window_filter="t.opened_at < %(end)s AND (t.opened_at >= %(from)s OR t.solved_at IS NULL"
            " OR t.solved_at >= %(from)s OR t.status IN ('new', 'open', 'pending', 'hold'))",
        ),
        params,
        [("id", "int"), *TICKET_COLUMNS],
    )
    invoices = _read(
        _window_and_latest(
            "accounts_invoice",
            INVOICE_COLUMNS,
            time_column="issued_at",
            window_filter="t.issued_at <= %(day)s AND (t.issued_at > %(from_day)s OR t.paid_at IS NULL"
            " OR t.paid_at >= %(from)s OR t.status NOT IN ('paid', 'void', 'draft'))",
            until="<= %(day)s",
        ),
        params,
        [("id", "int"), *INVOICE_COLUMNS],
    )
    tasks = _read(
        f"SELECT {_select('t', TASK_COLUMNS)} FROM accounts_task t WHERE t.org_id = %(org)s",
        params,
        TASK_COLUMNS,
    )
    # Only champions matter (the champion-gone gate).
    contacts = _read(
        f"SELECT {_select('c', CONTACT_COLUMNS)} FROM accounts_contact c WHERE c.org_id = %(org)s AND c.is_champion",
        params,
        CONTACT_COLUMNS,
    )
    return Frames.build(
        accounts=accounts,
        usage=usage.drop(columns="id"),
        activities=activities.drop(columns="id"),
        tickets=tickets.drop(columns="id"),
        invoices=invoices.drop(columns="id"),
        tasks=tasks,
        contacts=contacts,
    )


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def scores_frame(*, org, day: date) -> pd.DataFrame:
    """The stored scores of one day as a frame (account_id, score, band, gate, components, model_version)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT account_id, score::float8, band, gate, components, model_version FROM health_healthscore"
            " WHERE org_id = %s AND date = %s",
            [org.pk, day],
        )
        rows = cursor.fetchall()
    frame = pd.DataFrame.from_records(
        rows, columns=["account_id", "score", "band", "gate", "components", "model_version"]
    )
    frame["components"] = frame["components"].map(_json)
    return frame


def health_model_current(*, org) -> HealthModel | None:
    return HealthModel.objects.filter(org=org).order_by("-version").first()


def health_history(*, org, account, days: int = 90, until: date | None = None) -> list[HealthScore]:
    """An account's scores, oldest first, for the last `days` days up to `until` (default: all)."""
    scores = HealthScore.objects.filter(org=org, account=account)
    if until is not None:
        scores = scores.filter(date__lte=until, date__gt=until - timedelta(days=days))
    return list(scores.order_by("date"))


def scores_for_day(*, org, day: date, account_ids=None) -> dict[int, HealthScore]:
    """The stored scores of a day by account id."""
    scores = HealthScore.objects.filter(org=org, date=day)
    if account_ids is not None:
        scores = scores.filter(account_id__in=list(account_ids))
    return {score.account_id: score for score in scores}
