"""Reads for the Revenue page: renewals ahead with their risk, expansion windows, risky expansions.

Each section is one set-based query over the accounts in scope (an Account Manager's own, or the
whole organization for leaders), joined to the latest day's score, the score 30 days before and
the active signals; pandas then labels the risk. Sparklines come from one more query for the rows
on screen only. The number of queries does not grow with the number of accounts.
"""

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from accounts.models import Membership, Role
from health.models import HealthScore
from health.portfolio import latest_scored_day
from signals.models import SignalThresholds

RENEWAL_WINDOWS = (90, 180)
TREND_DAYS = 30
# "Declining" everywhere on this page: the score fell by more than this over TREND_DAYS.
DECLINE_POINTS = 10
# Active conditions that put a renewal at risk, with the label shown for each.
RISK_SIGNALS = {"payment_failed": "Payment failed", "support_spike": "Support spike"}
RENEWALS_PER_PAGE = 50
EXPANSIONS_SHOWN = 50


@dataclass
class RevenueRow:
    account_id: int
    name: str
    tier: str
    arr: float
    currency: str
    score: float | None
    band: str | None
    trend: float | None
    risks: list[str] = field(default_factory=list)
    renewal_date: date | None = None
    days_left: int | None = None
    plan: str = ""
    seat_limit: int | None = None
    seats_used: int | None = None
    spark: list[float] = field(default_factory=list)

    @property
    def seat_share(self) -> int | None:
        if not self.seat_limit or self.seats_used is None:
            return None
        return round(100 * self.seats_used / self.seat_limit)


@dataclass
class WindowSummary:
    days: int
    accounts: int
    arr: float
    at_risk: int
    at_risk_arr: float


@dataclass
class RevenuePage:
    today: date
    day: date | None
    window: int
    summaries: list[WindowSummary]
    renewals: list[RevenueRow]
    renewals_total: int
    page: int
    pages: int
    expansions: list[RevenueRow]
    expansions_total: int
    expansions_arr: float
    risky: list[RevenueRow]
    risky_total: int
    risky_arr: float
    plan_limit_percent: int


def am_choices(*, org) -> list[tuple[int, str]]:
    users = get_user_model().objects.filter(memberships__org=org, memberships__role=Role.AM).order_by("email")
    return list(users.values_list("pk", "email"))


def revenue_am_filter(*, membership: Membership, am_id: int | None) -> int | None:
    """Whose accounts the page shows: an AM always their own; leaders and admins all, or one AM's."""
    if membership.role == Role.AM:
        return membership.user_id
    return am_id


# The trend compares the latest day's score with the score 30 days before it, or, where that day
# has none (a missed run, a new account), the first score after it; none before the latest day
# means no trend yet. The fallback is a scalar
# subquery inside CASE so PostgreSQL only runs it for the rows that need it.
SCORE_JOINS = """
    LEFT JOIN health_healthscore h ON h.org_id = a.org_id AND h.account_id = a.id AND h.date = %(day)s
    LEFT JOIN health_healthscore b ON b.org_id = a.org_id AND b.account_id = a.id AND b.date = %(since)s
"""
SCORE_BEFORE = """
    CASE WHEN b.score IS NOT NULL THEN b.score ELSE (
        SELECT p.score FROM health_healthscore p
        WHERE p.org_id = a.org_id AND p.account_id = a.id AND p.date > %(since)s AND p.date < %(day)s
        ORDER BY p.date LIMIT 1
    ) END::float8
"""

# Signals count while their condition holds (cleared_on IS NULL), even when a CSM has marked
# them done or snoozed them: an unpaid invoice is a risk to the renewal either way.
RENEWALS_SQL = f"""
    SELECT a.id, a.name, a.tier, a.arr::float8, a.currency, a.renewal_date,
           h.score::float8, h.band, {SCORE_BEFORE}, coalesce(risk.types, ARRAY[]::text[])
    FROM accounts_account a
    {SCORE_JOINS}
    LEFT JOIN (
        SELECT account_id, array_agg(DISTINCT type) AS types FROM signals_signal
        WHERE org_id = %(org)s AND type = ANY(%(risk_types)s) AND cleared_on IS NULL
        GROUP BY account_id
    ) risk ON risk.account_id = a.id
    WHERE a.org_id = %(org)s AND a.stage <> 'churned' AND a.renewal_date BETWEEN %(today)s AND %(until)s {{scope}}
    ORDER BY a.renewal_date, a.name, a.id
"""
RENEWAL_COLUMNS = [
    "account_id",
    "name",
    "tier",
    "arr",
    "currency",
    "renewal_date",
    "score",
    "band",
    "score_before",
    "signals",
]

# Near the plan limit: an active plan_limit signal (the nightly rule, on each account's latest usage
# day as of the run), or seats used on the organization's latest usage day up to today at or above
# the plan-limit percentage (what arrived since the run). Reading that one day through the
# (org, date) index avoids a latest-row probe per account into the largest table.
EXPANSION_SQL = f"""
    WITH usage AS (
        SELECT u.account_id, u.seats_used FROM accounts_usageday u
        WHERE u.org_id = %(org)s
          AND u.date = (SELECT max(date) FROM accounts_usageday WHERE org_id = %(org)s AND date <= %(today)s)
    ),
    flagged AS (
        SELECT account_id, (evidence ->> 'seats_used')::int AS seats_used FROM signals_signal
        WHERE org_id = %(org)s AND type = 'plan_limit' AND entity_key = '' AND cleared_on IS NULL
    ),
    near AS MATERIALIZED (
        SELECT a.id, a.org_id, a.name, a.tier, a.arr, a.currency, a.plan, a.seat_limit,
               coalesce(usage.seats_used, flagged.seats_used) AS seats_used
        FROM accounts_account a
        LEFT JOIN usage ON usage.account_id = a.id
        LEFT JOIN flagged ON flagged.account_id = a.id
        WHERE a.org_id = %(org)s AND a.stage <> 'churned' {{scope}}
          AND (flagged.account_id IS NOT NULL OR usage.seats_used * 100 >= a.seat_limit * %(percent)s)
    )
    SELECT a.id, a.name, a.tier, a.arr::float8, a.currency, a.plan, a.seat_limit, a.seats_used,
           h.score::float8, h.band, {SCORE_BEFORE}
    FROM near a
    {SCORE_JOINS}
    ORDER BY a.arr DESC, a.name, a.id
"""
EXPANSION_COLUMNS = [
    "account_id",
    "name",
    "tier",
    "arr",
    "currency",
    "plan",
    "seat_limit",
    "seats_used",
    "score",
    "band",
    "score_before",
]


def _read(sql: str, params: dict, columns: list[str]) -> pd.DataFrame:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def _with_trend(frame: pd.DataFrame) -> pd.DataFrame:
    frame[["score", "score_before"]] = frame[["score", "score_before"]].astype(float)
    frame["trend"] = (frame["score"] - frame["score_before"]).round(1)
    frame["declining"] = (frame["trend"] < -DECLINE_POINTS).fillna(False).astype(bool)
    frame["red"] = frame["band"] == "red"
    return frame


def _decline_label(trend: float) -> str:
    return f"Down {-trend:g} pts in 30 days"


def health_risks(record: dict) -> list[str]:
    reasons = ["Red health"] if record["red"] else []
    if record["declining"]:
        reasons.append(_decline_label(record["trend"]))
    return reasons


def renewal_risks(record: dict) -> list[str]:
    """Why one renewal is at risk, in the order a reader weighs it."""
    return health_risks(record) + [RISK_SIGNALS[kind] for kind in sorted(record["signals"])]


def renewals_frame(*, org, day: date | None, today: date, until: date, am_id: int | None) -> pd.DataFrame:
    params = {
        "org": org.pk,
        "day": day,
        "since": day - timedelta(days=TREND_DAYS) if day else None,
        "today": today,
        "until": until,
        "risk_types": list(RISK_SIGNALS),
        "am": am_id,
    }
    scope = " AND a.am_id = %(am)s" if am_id else ""
    frame = _with_trend(_read(RENEWALS_SQL.format(scope=scope), params, RENEWAL_COLUMNS))
    frame["at_risk"] = frame["red"] | frame["declining"] | (frame["signals"].str.len() > 0)
    frame["days_left"] = (pd.to_datetime(frame["renewal_date"]) - pd.Timestamp(today)).dt.days
    return frame


def expansion_frame(*, org, day: date | None, today: date, am_id: int | None, percent: int) -> pd.DataFrame:
    """Accounts near their plan limit, each marked as an expansion window, a risky one, or neither."""
    params = {
        "org": org.pk,
        "day": day,
        "since": day - timedelta(days=TREND_DAYS) if day else None,
        "today": today,
        "percent": percent,
        "am": am_id,
    }
    scope = " AND a.am_id = %(am)s" if am_id else ""
    frame = _with_trend(_read(EXPANSION_SQL.format(scope=scope), params, EXPANSION_COLUMNS))
    frame["window"] = (frame["band"] == "green") & ~frame["declining"]
    frame["risky"] = frame["red"] | frame["declining"]
    return frame


def _rows(frame: pd.DataFrame, risks=None) -> list[RevenueRow]:
    """Rows for the template; `risks(record)` labels each one (only rows on screen pay for it)."""
    rows = []
    for record in frame.to_dict("records"):
        rows.append(
            RevenueRow(
                account_id=int(record["account_id"]),
                name=record["name"],
                tier=record["tier"],
                arr=float(record["arr"]),
                currency=record["currency"],
                score=None if pd.isna(record["score"]) else float(record["score"]),
                band=record["band"] if isinstance(record["band"], str) else None,
                trend=None if pd.isna(record["trend"]) else float(record["trend"]),
                risks=risks(record) if risks else [],
                renewal_date=record.get("renewal_date"),
                days_left=None if pd.isna(record.get("days_left", np.nan)) else int(record["days_left"]),
                plan=record.get("plan") or "",
                seat_limit=None if pd.isna(record.get("seat_limit", np.nan)) else int(record["seat_limit"]),
                seats_used=None if pd.isna(record.get("seats_used", np.nan)) else int(record["seats_used"]),
            )
        )
    return rows


def _attach_sparklines(*, org, day: date | None, rows: list[RevenueRow]) -> None:
    if day is None or not rows:
        return
    by_account: dict[int, list[RevenueRow]] = {}
    for row in rows:
        by_account.setdefault(row.account_id, []).append(row)
    scores = (
        HealthScore.objects.filter(
            org=org, account_id__in=list(by_account), date__gt=day - timedelta(days=TREND_DAYS), date__lte=day
        )
        .order_by("date")
        .values_list("account_id", "score")
    )
    for account_id, score in scores:
        for row in by_account[account_id]:
            row.spark.append(float(score))


def revenue_page(*, org, am_id: int | None, window: int = 90, page: int = 1, today: date | None = None) -> RevenuePage:
    """Renewals of the next `window` days (90 or 180, from today in the organization's time zone)
    with their risk, and the expansion windows and risky expansions, for one AM or everyone."""
    today = today or timezone.now().astimezone(org.tz).date()
    window = window if window in RENEWAL_WINDOWS else RENEWAL_WINDOWS[0]
    day = latest_scored_day(org=org)
    renewals = renewals_frame(
        org=org, day=day, today=today, until=today + timedelta(days=max(RENEWAL_WINDOWS)), am_id=am_id
    )
    summaries = []
    for days in RENEWAL_WINDOWS:
        inside = renewals[renewals["days_left"] <= days]
        summaries.append(
            WindowSummary(
                days=days,
                accounts=len(inside),
                arr=float(inside["arr"].sum()),
                at_risk=int(inside["at_risk"].sum()),
                at_risk_arr=float(inside.loc[inside["at_risk"], "arr"].sum()),
            )
        )
    shown = renewals[renewals["days_left"] <= window]
    pages = max(1, -(-len(shown) // RENEWALS_PER_PAGE))
    page = min(max(page, 1), pages)
    page_rows = _rows(shown.iloc[(page - 1) * RENEWALS_PER_PAGE : page * RENEWALS_PER_PAGE], risks=renewal_risks)

    thresholds = SignalThresholds.objects.filter(org=org).first()
    percent = thresholds.plan_limit_percent if thresholds else 80
    near = expansion_frame(org=org, day=day, today=today, am_id=am_id, percent=percent)
    windows, risky = near[near["window"]], near[near["risky"]]
    window_rows = _rows(windows.head(EXPANSIONS_SHOWN))
    risky_rows = _rows(risky.head(EXPANSIONS_SHOWN), risks=health_risks)
    _attach_sparklines(org=org, day=day, rows=page_rows + window_rows + risky_rows)
    return RevenuePage(
        today=today,
        day=day,
        window=window,
        summaries=summaries,
        renewals=page_rows,
        renewals_total=len(shown),
        page=page,
        pages=pages,
        expansions=window_rows,
        expansions_total=len(windows),
        expansions_arr=float(windows["arr"].sum()),
        risky=risky_rows,
        risky_total=len(risky),
        risky_arr=float(risky["arr"].sum()),
        plan_limit_percent=percent,
    )
