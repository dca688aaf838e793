"""Reads for health: the organization's source frames for a day, scores, and the current model.

`org_frames` reads each source with one query into pandas. Usage and activities, the largest
sources, are summed in SQL to one row per account (health.scoring.summarize_usage and
summarize_activities say what, and tests hold the two versions equal). Tickets and invoices are
read as a recent window plus each account's latest row before it (a LATERAL probe per account on
the (org, account, date) index): every formula and rule only looks at those windows or at "the
latest row", so the result is the same as reading everything.
"""

from datetime import date, datetime, time, timedelta

import pandas as pd

from health.bulk import read_frame
from health.models import HealthModel, HealthScore
from health.scoring import ENGAGEMENT_WINDOW_DAYS, USAGE_WINDOW_DAYS, Frames

# How far back each source is read in full; older rows only as each account's latest one.
# The support spike's baseline reaches D-35.
TICKET_WINDOW_DAYS = 36
INVOICE_WINDOW_DAYS = 36

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


def _window_and_latest(
    table: str,
    columns: list[tuple[str, str]],
    *,
    time_column: str,
    window_filter: str,
    before_window: str,
    latest_filter: str = "",
) -> str:
    """Rows matching `window_filter`, plus each account's latest row from before the window."""
    select_t = _select("t", columns)
    select_l = _select("l", columns)
    inner = ", ".join(["t.id", *[f"t.{name}" for name, _ in columns if name != "account_id"], "t.account_id"])
    return f"""
        SELECT t.id, {select_t} FROM {table} t
        WHERE t.org_id = %(org)s AND {window_filter}
        UNION ALL
        SELECT l.id, {select_l} FROM accounts_account a
        CROSS JOIN LATERAL (
            SELECT {inner} FROM {table} t
            WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.{time_column} {before_window} {latest_filter}
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
# health.scoring.summarize_usage, in SQL: the same sums over the same window, the same latest day.
USAGE_SUMMARY_SQL = """
    SELECT a.id AS account_id, w.active_users AS window_active_users, w.events AS window_events,
           l.date - DATE '1970-01-01' AS last_date, l.seats_used AS last_seats_used
    FROM accounts_account a
    JOIN LATERAL (
        SELECT t.date, t.seats_used FROM accounts_usageday t
        WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.date <= %(day)s
        ORDER BY t.date DESC LIMIT 1
    ) l ON true
    -- Per account on the (org, account, date) index: cheaper than a scan of the organization's days.
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(t.active_users), 0) AS active_users, COALESCE(sum(t.events), 0) AS events
        FROM accounts_usageday t
        WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.date > %(usage_from)s AND t.date <= %(day)s
    ) w
    WHERE a.org_id = %(org)s
"""
# health.scoring.summarize_activities, in SQL. Ties on the same instant go to the larger
# external id, as the pandas version sorts them.
ACTIVITY_SUMMARY_SQL = f"""
    SELECT a.id AS account_id, COALESCE(w.client_touches, 0) AS client_touches,
           {EPOCH_US.format(col="la.occurred_at")} AS last_any_at,
           {EPOCH_US.format(col="lc.occurred_at")} AS last_client_at,
           lc.external_id AS last_client_ref, lc.kind AS last_client_kind, lc.actor_name AS last_client_actor
    FROM accounts_account a
    JOIN LATERAL (
        SELECT t.occurred_at FROM accounts_activity t
        WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.occurred_at < %(end)s
        ORDER BY t.occurred_at DESC LIMIT 1
    ) la ON true
    LEFT JOIN LATERAL (
        SELECT t.occurred_at, t.external_id, t.kind, t.actor_name FROM accounts_activity t
        WHERE t.org_id = a.org_id AND t.account_id = a.id AND t.occurred_at < %(end)s AND t.actor_side = 'client'
        ORDER BY t.occurred_at DESC, t.external_id DESC LIMIT 1
    ) lc ON true
    LEFT JOIN (
        SELECT account_id, count(*) AS client_touches FROM accounts_activity
        WHERE org_id = %(org)s AND actor_side = 'client'
          AND occurred_at >= %(engagement_from)s AND occurred_at < %(end)s
        GROUP BY account_id
    ) w ON w.account_id = a.id
    WHERE a.org_id = %(org)s
"""
ACTIVITY_SUMMARY_READ = [
    ("account_id", "int"),
    ("client_touches", "int"),
    ("last_any_at", "ts"),
    ("last_client_at", "ts"),
    ("last_client_ref", "str"),
    ("last_client_kind", "str"),
    ("last_client_actor", "str"),
]
USAGE_SUMMARY_READ = [
    ("account_id", "int"),
    ("window_active_users", "int"),
    ("window_events", "int"),
    ("last_date", "day"),
    ("last_seats_used", "int"),
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


def org_frames(*, org, day: date, stale_after_days: int = 0) -> Frames:
    """Everything the health formula and the signal rules read for (org, D), nothing dated after D.

    Windows reach at least as far back as the health model's staleness limit, so the newest data
    behind each component is always among the rows read.
    """
    tz = org.tz
    reach = stale_after_days + 1

    def local_midnight(days_back: int) -> datetime:
        return datetime.combine(day - timedelta(days=max(days_back, reach)), time(0), tzinfo=tz)

    params = {
        "org": org.pk,
        "day": day,
        "end": datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz),
        "usage_from": day - timedelta(days=USAGE_WINDOW_DAYS),
        # The engagement window: the local days D-29..D.
        "engagement_from": datetime.combine(day - timedelta(days=ENGAGEMENT_WINDOW_DAYS - 1), time(0), tzinfo=tz),
        "ticket_from": local_midnight(TICKET_WINDOW_DAYS),
        "invoice_from": day - timedelta(days=max(INVOICE_WINDOW_DAYS, reach)),
    }
    with_id = [("id", "int")]

    accounts = read_frame(
        f"SELECT {_select('a', ACCOUNT_COLUMNS)} FROM accounts_account a WHERE a.org_id = %(org)s",
        params,
        ACCOUNT_COLUMNS,
    ).rename(columns={"id": "account_id"})
    # Usage is the largest source (a row per account and day): summed in SQL, one row per account.
    usage_summary = read_frame(USAGE_SUMMARY_SQL, params, USAGE_SUMMARY_READ)
    activity_summary = read_frame(ACTIVITY_SUMMARY_SQL, params, ACTIVITY_SUMMARY_READ)
    tickets = read_frame(
        _window_and_latest(
            "accounts_ticket",
            TICKET_COLUMNS,
            time_column="opened_at",
            # Opened in the window, or older but possibly open on D (open now, or solved lately).
            window_filter="t.opened_at < %(end)s AND (t.opened_at >= %(ticket_from)s"
            " OR t.status IN ('new', 'open', 'pending', 'hold') OR t.solved_at >= %(ticket_from)s)",
            before_window="< %(ticket_from)s",
        ),
        params,
        with_id + TICKET_COLUMNS,
    )
    invoices = read_frame(
        _window_and_latest(
            "accounts_invoice",
            INVOICE_COLUMNS,
            time_column="issued_at",
            # Issued in the window, or older but possibly unpaid on D (unpaid now, or paid lately).
            window_filter="t.issued_at <= %(day)s AND (t.issued_at > %(invoice_from)s"
            " OR t.status NOT IN ('paid', 'void', 'draft') OR t.paid_at >= %(ticket_from)s)",
            before_window="<= %(invoice_from)s",
        ),
        params,
        with_id + INVOICE_COLUMNS,
    )
    tasks = read_frame(
        f"SELECT {_select('t', TASK_COLUMNS)} FROM accounts_task t WHERE t.org_id = %(org)s",
        params,
        TASK_COLUMNS,
    )
    # Only champions matter (the champion-gone gate).
    contacts = read_frame(
        f"SELECT {_select('c', CONTACT_COLUMNS)} FROM accounts_contact c WHERE c.org_id = %(org)s AND c.is_champion",
        params,
        CONTACT_COLUMNS,
    )
    # A row can come both from a window and as a latest row: keep it once.
    return Frames.build(
        accounts=accounts,
        usage_summary=usage_summary,
        activity_summary=activity_summary,
        tickets=tickets.drop_duplicates("id").drop(columns="id"),
        invoices=invoices.drop_duplicates("id").drop(columns="id"),
        tasks=tasks,
        contacts=contacts,
    )


def scores_frame(*, org, day: date) -> pd.DataFrame:
    """The stored scores of one day: account_id, score, band, gate, components (JSON text), model_version."""
    frame = read_frame(
        "SELECT account_id, score::float8 AS score, band, gate, components::text AS components, model_version"
        " FROM health_healthscore WHERE org_id = %(org)s AND date = %(day)s",
        {"org": org.pk, "day": day},
        [
            ("account_id", "int"),
            ("score", "float"),
            ("band", "str"),
            ("gate", "str"),
            ("components", "str"),
            ("model_version", "int"),
        ],
    )
    frame["gate"] = frame["gate"].fillna("")
    # Left as JSON text: only the few scores a rule reports on need their components parsed.
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
