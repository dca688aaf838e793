"""Reads for the Portfolio page: health by CSM and by stage, overnight movers, and outcome metrics.

The page costs the same few queries for ten accounts or fifty thousand. One query reads the whole
organization once, joined to the latest day's scores, the silent-account signals and the ARR
history, and returns it grouped by (CSM, stage, tier): a few hundred rows whose figures are all
sums or counts. A second reads the day's movers. The filters, the CSM and stage tables, the total
and the metrics are then computed from those two frames in pandas, so a filter costs no pass over
the accounts; and the frames are cached under a key that changes with the data (see STATE_SQL).
"""

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from hashlib import sha1

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from accounts.models import Stage
from csm.tenancy import tenant

log = logging.getLogger(__name__)

# A score change of at least this many points overnight makes an account a mover (both ways).
MOVER_POINTS = 10
# Movers named per CSM; the counts cover all of them.
MOVERS_SHOWN = 5


@dataclass(frozen=True)
class PortfolioFilters:
    stage: str = ""
    tier: str = ""
    csm_id: int | None = None

    @classmethod
    def from_query(cls, params) -> "PortfolioFilters":
        stage = params.get("stage", "")
        csm = params.get("csm", "")
        return cls(
            stage=stage if stage in Stage.values else "",
            tier=params.get("tier", "").strip(),
            csm_id=int(csm) if csm.isdigit() else None,
        )

    @property
    def active(self) -> bool:
        return bool(self.stage or self.tier or self.csm_id)


@dataclass
class Mover:
    account_id: int
    name: str
    score: float
    band: str
    delta: float


@dataclass
class HealthGroup:
    """Accounts, ARR and health distribution of one CSM, one stage, or the whole selection."""

    key: int | str | None
    label: str
    email: str = ""
    accounts: int = 0
    arr: float = 0.0
    green: int = 0
    yellow: int = 0
    red: int = 0
    silent: int = 0
    movers_down: int = 0
    movers_up: int = 0
    movers: list[Mover] = field(default_factory=list)
    # CSS widths of the load bars ("42.0"): this row's accounts and ARR against the largest CSM's.
    load_accounts_width: str = "0"
    load_arr_width: str = "0"

    # Cached: a page renders each of these for a few hundred rows.
    @cached_property
    def scored(self) -> int:
        return self.green + self.yellow + self.red

    def _share(self, count: int) -> float:
        return round(100.0 * count / self.scored, 1) if self.scored else 0.0

    @cached_property
    def green_pct(self) -> float:
        return self._share(self.green)

    @cached_property
    def yellow_pct(self) -> float:
        return self._share(self.yellow)

    @cached_property
    def red_pct(self) -> float:
        return self._share(self.red)

    @cached_property
    def widths(self) -> tuple[str, str, str]:
        """CSS widths of the green, yellow and red parts of the distribution bar."""
        return f"{self.green_pct:.1f}", f"{self.yellow_pct:.1f}", f"{self.red_pct:.1f}"

    @cached_property
    def shares_text(self) -> str:
        return f"{self.green_pct:.0f} / {self.yellow_pct:.0f} / {self.red_pct:.0f}%"

    @cached_property
    def distribution_text(self) -> str:
        return (
            f"{self.green:,} green ({self.green_pct:.0f}%), {self.yellow:,} yellow ({self.yellow_pct:.0f}%),"
            f" {self.red:,} red ({self.red_pct:.0f}%)"
        )

    @property
    def movers_more(self) -> int:
        return self.movers_down + self.movers_up - len(self.movers)


@dataclass
class OutcomeMetrics:
    """Trailing-12-month outcomes; ratios are None when there is nothing to divide by."""

    start: date
    end: date
    starting_arr: float
    retained_arr: float
    ending_arr: float
    cohort_accounts: int
    churned_accounts: int
    ttv_median_days: float | None
    onboardings_live: int
    silent_accounts: int = 0
    active_accounts: int = 0

    @property
    def gross_retention(self) -> float | None:
        return 100.0 * self.retained_arr / self.starting_arr if self.starting_arr else None

    @property
    def net_retention(self) -> float | None:
        return 100.0 * self.ending_arr / self.starting_arr if self.starting_arr else None

    @property
    def logo_churn(self) -> float | None:
        return 100.0 * self.churned_accounts / self.cohort_accounts if self.cohort_accounts else None

    @property
    def silent_share(self) -> float | None:
        return 100.0 * self.silent_accounts / self.active_accounts if self.active_accounts else None


@dataclass
class Portfolio:
    day: date | None
    as_of: date
    total: HealthGroup
    by_csm: list[HealthGroup]
    by_stage: list[HealthGroup]
    metrics: OutcomeMetrics
    tiers: list[str]


def one_year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def latest_scored_day(*, org) -> date | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(date) FROM health_healthscore WHERE org_id = %s", [org.pk])
        return cursor.fetchone()[0]


# ARR on a date is the latest ArrChange on or before it; an account without any history up to the
# window's end falls back to its current ARR from its creation (local date) on; churned on or before the date means 0.
# The retention cohort is the accounts with ARR above 0 at the start of the window. The silent
# figures count a condition while it holds (cleared_on IS NULL), whether or not a CSM has marked it
# done or snoozed it: the leader asks how many accounts are silent, not what is left on a list.
# Money is float8 from the first read (numeric sums cost several times more), and "created on or
# before a local date" is compared as a timestamp against the next local midnight.
GROUPED_SQL = """
    WITH history AS (
        SELECT c.account_id,
               (array_agg(c.arr ORDER BY c.effective_date DESC) FILTER (WHERE c.effective_date <= %(start)s))[1]::float8
                   AS arr_start,
               (array_agg(c.arr ORDER BY c.effective_date DESC) FILTER (WHERE c.effective_date <= %(end)s))[1]::float8
                   AS arr_end
        FROM accounts_arrchange c
        WHERE c.org_id = %(org)s AND c.effective_date <= %(end)s
        GROUP BY c.account_id
    ),
    per_account AS (
        SELECT a.csm_id, a.stage, a.tier, a.arr::float8 AS arr, a.churned_on, h.band, h.delta,
               a.id IN (SELECT account_id FROM signals_signal
                        WHERE org_id = %(org)s AND type = 'silent_account' AND entity_key = '' AND cleared_on IS NULL)
                   AS silent,
               CASE WHEN a.churned_on <= %(start)s THEN 0
                    WHEN history.account_id IS NOT NULL THEN coalesce(history.arr_start, 0)
                    WHEN a.created_at < %(start_ends)s THEN a.arr::float8
                    ELSE 0 END AS arr_start,
               CASE WHEN a.churned_on <= %(end)s THEN 0
                    WHEN history.account_id IS NOT NULL THEN coalesce(history.arr_end, 0)
                    WHEN a.created_at < %(end_ends)s THEN a.arr::float8
                    ELSE 0 END AS arr_end,
               CASE WHEN a.go_live_date > %(start)s AND a.go_live_date <= %(end)s
                    THEN a.go_live_date - a.contract_start END AS ttv_days
        FROM accounts_account a
        LEFT JOIN health_healthscore h ON h.org_id = a.org_id AND h.account_id = a.id AND h.date = %(day)s
        LEFT JOIN history ON history.account_id = a.id
        WHERE a.org_id = %(org)s
    )
    SELECT csm_id, stage, tier,
           count(*), coalesce(sum(arr), 0),
           count(*) FILTER (WHERE band = 'green'),
           count(*) FILTER (WHERE band = 'yellow'),
           count(*) FILTER (WHERE band = 'red'),
           count(*) FILTER (WHERE silent),
           count(*) FILTER (WHERE delta <= -%(points)s),
           count(*) FILTER (WHERE delta >= %(points)s),
           coalesce(sum(arr_start) FILTER (WHERE arr_start > 0), 0),
           coalesce(sum(least(arr_start, arr_end)) FILTER (WHERE arr_start > 0), 0),
           coalesce(sum(arr_end) FILTER (WHERE arr_start > 0), 0),
           count(*) FILTER (WHERE arr_start > 0),
           count(*) FILTER (WHERE arr_start > 0 AND churned_on > %(start)s AND churned_on <= %(end)s),
           array_agg(ttv_days) FILTER (WHERE ttv_days IS NOT NULL)
    FROM per_account
    GROUP BY csm_id, stage, tier
"""
FIGURES = ["accounts", "arr", "green", "yellow", "red", "silent", "movers_down", "movers_up"]
RETENTION = ["starting_arr", "retained_arr", "ending_arr", "cohort_accounts", "churned_accounts"]
COLUMNS = ["csm_id", "stage", "tier", *FIGURES, *RETENTION, "ttv_days"]

# Every mover of the day with the keys the filters use; a bad night is a few thousand rows.
MOVERS_SQL = """
    SELECT a.csm_id, a.stage, a.tier, a.id, a.name, h.score::float8, h.band, h.delta::float8
    FROM health_healthscore h
    JOIN accounts_account a ON a.id = h.account_id AND a.org_id = h.org_id
    WHERE h.org_id = %(org)s AND h.date = %(day)s AND (h.delta <= -%(points)s OR h.delta >= %(points)s)
"""
MOVER_COLUMNS = ["csm_id", "stage", "tier", "account_id", "name", "score", "band", "delta"]

# What the figures depend on besides the dates: the accounts (every import and sync stamps
# updated_at, and writes the ARR history in the same statement) and the nightly runs (scores,
# signals). Read with the latest scored day in one round trip.
STATE_SQL = """
    SELECT (SELECT max(date) FROM health_healthscore WHERE org_id = %(org)s),
           (SELECT count(*)::text || '/' || coalesce(max(updated_at)::text, '')
            FROM accounts_account WHERE org_id = %(org)s),
           (SELECT coalesce(max(finished_at)::text, '') || '/' || count(*)::text
            FROM signals_nightlyrun WHERE org_id = %(org)s)
"""
# The grouped figures only change with a nightly run or an import, while a leader opens the page
# and flips its filters many times a day: keep them a while under a key that changes with the data.
CACHE_SECONDS = 15 * 60


def next_local_midnight(day: date, tz) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)


def grouped_accounts(*, org, day: date | None, start: date, end: date) -> pd.DataFrame:
    """The whole organization grouped by (csm_id, stage, tier), one frame row per group."""
    params = {
        "org": org.pk,
        "day": day,
        "start": start,
        "end": end,
        "start_ends": next_local_midnight(start, org.tz),
        "end_ends": next_local_midnight(end, org.tz),
        "points": MOVER_POINTS,
    }
    with connection.cursor() as cursor:
        # One pass over 50,000 accounts hashes a few megabytes: with the default 4 MB it spills to
        # disk. A parallel plan here rebuilds every hash table in each worker, more work in total
        # for a page served next to others. SET LOCAL ends with the request's transaction.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(GROUPED_SQL, params)
        rows = cursor.fetchall()
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame["csm_id"] = frame["csm_id"].astype("Int64")
    return frame


def movers_frame(*, org, day: date | None) -> pd.DataFrame:
    if day is None:
        return pd.DataFrame(columns=MOVER_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(MOVERS_SQL, {"org": org.pk, "day": day, "points": MOVER_POINTS})
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=MOVER_COLUMNS)
    frame["csm_id"] = frame["csm_id"].astype("Int64")
    return frame


def _selected(frame: pd.DataFrame, filters: PortfolioFilters, *, with_stage: bool) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if filters.tier:
        keep &= frame["tier"] == filters.tier
    if filters.csm_id:
        keep &= frame["csm_id"] == filters.csm_id
    if with_stage:
        # Churned accounts stay out of the health tables unless asked for by the stage filter.
        keep &= (frame["stage"] == filters.stage) if filters.stage else (frame["stage"] != Stage.CHURNED)
    return frame[keep.fillna(False)]


def _group(key, label: str, sums: dict, email: str = "") -> HealthGroup:
    figures = {name: float(sums[name]) if name == "arr" else int(sums[name]) for name in FIGURES}
    return HealthGroup(key=key, label=label, email=email, **figures)


def _csm_labels(csm_ids: list[int]) -> dict[int, tuple[str, str]]:
    if not csm_ids:
        return {}
    users = get_user_model().objects.filter(pk__in=csm_ids).values_list("pk", "email", "first_name", "last_name")
    return {pk: (f"{first} {last}".strip() or email, email) for pk, email, first, last in users}


def health_groups(frame: pd.DataFrame) -> tuple[HealthGroup, list[HealthGroup], list[HealthGroup]]:
    """The selection's total, one row per CSM (by ARR, unassigned last) and one per stage."""
    figures = frame[FIGURES].astype({"arr": float})
    total = _group(None, "All accounts", figures.sum().to_dict())
    by_csm_sums = figures.groupby(frame["csm_id"].fillna(0)).sum().to_dict("index")
    labels = _csm_labels([int(pk) for pk in by_csm_sums if pk])
    by_csm = []
    for csm_id, sums in by_csm_sums.items():
        label, email = labels.get(int(csm_id), (f"User {csm_id}", "")) if csm_id else ("Unassigned", "")
        by_csm.append(_group(int(csm_id) or None, label, sums, email))
    by_csm.sort(key=lambda row: (row.key is None, -row.arr, row.label))
    most_accounts = max((row.accounts for row in by_csm), default=0) or 1
    most_arr = max((row.arr for row in by_csm), default=0.0) or 1.0
    for row in by_csm:
        row.load_accounts_width = f"{100.0 * row.accounts / most_accounts:.1f}"
        row.load_arr_width = f"{100.0 * row.arr / most_arr:.1f}"
    stage_labels = dict(Stage.choices)
    stage_sums = figures.groupby(frame["stage"]).sum().to_dict("index")
    by_stage = [
        _group(stage, stage_labels.get(stage, stage).capitalize(), stage_sums[stage])
        for stage in Stage.values
        if stage in stage_sums
    ]
    return total, by_csm, by_stage


def outcome_metrics(frame: pd.DataFrame, *, start: date, end: date) -> OutcomeMetrics:
    """GRR, NRR, logo churn and time-to-value from the grouped rows of the selection."""
    sums = frame[RETENTION].sum()
    ttv = [days for group in frame["ttv_days"] if group for days in group]
    return OutcomeMetrics(
        start=start,
        end=end,
        starting_arr=float(sums["starting_arr"]),
        retained_arr=float(sums["retained_arr"]),
        ending_arr=float(sums["ending_arr"]),
        cohort_accounts=int(sums["cohort_accounts"]),
        churned_accounts=int(sums["churned_accounts"]),
        ttv_median_days=float(np.median(ttv)) if ttv else None,
        onboardings_live=len(ttv),
    )


def top_movers(movers: pd.DataFrame) -> dict[int | None, list[Mover]]:
    """The biggest overnight moves of each CSM (at most MOVERS_SHOWN each), largest first."""
    if movers.empty:
        return {}
    ranked = movers.assign(size=movers["delta"].abs()).sort_values(
        ["size", "name", "account_id"], ascending=[False, True, True]
    )
    shown = ranked.groupby(ranked["csm_id"].fillna(0), sort=False).head(MOVERS_SHOWN)
    top: dict[int | None, list[Mover]] = {}
    for record in shown.to_dict("records"):
        csm_id = None if pd.isna(record["csm_id"]) else int(record["csm_id"])
        top.setdefault(csm_id, []).append(
            Mover(int(record["account_id"]), record["name"], record["score"], record["band"], record["delta"])
        )
    return top


def organization_frames(
    *, org, today: date | None = None, refresh: bool = False
) -> tuple[date | None, date, pd.DataFrame, pd.DataFrame]:
    """The latest scored day, the as-of date, and the grouped and movers frames (cached).

    `refresh` computes them even when cached: the nightly run primes the cache this way.
    """
    with connection.cursor() as cursor:
        cursor.execute(STATE_SQL, {"org": org.pk})
        day, accounts_state, runs_state = cursor.fetchone()
    as_of = day or today or timezone.now().astimezone(org.tz).date()
    key = (
        "portfolio:" + sha1(f"{org.pk}|{org.timezone}|{day}|{as_of}|{accounts_state}|{runs_state}".encode()).hexdigest()
    )
    cached = None if refresh else cache.get(key)
    if cached is None:
        grouped = grouped_accounts(org=org, day=day, start=one_year_before(as_of), end=as_of)
        cached = (grouped, movers_frame(org=org, day=day))
        cache.set(key, cached, CACHE_SECONDS)
    return day, as_of, *cached


def portfolio(*, org, filters: PortfolioFilters, today: date | None = None) -> Portfolio:
    """Everything the Portfolio page shows, as of the latest scored day (or today, before any run).

    Retention and churn follow the tier and CSM filters but not the stage filter: a churned
    account has left every other stage, so filtering by stage would hide the churn they measure.
    """
    day, as_of, frame, movers = organization_frames(org=org, today=today)
    total, by_csm, by_stage = health_groups(_selected(frame, filters, with_stage=True))
    top = top_movers(_selected(movers, filters, with_stage=True))
    for row in by_csm:
        row.movers = top.get(row.key, [])
    metrics = outcome_metrics(_selected(frame, filters, with_stage=False), start=one_year_before(as_of), end=as_of)
    metrics.silent_accounts, metrics.active_accounts = total.silent, total.accounts
    tiers = sorted(tier for tier in frame["tier"].unique() if tier)
    return Portfolio(day=day, as_of=as_of, total=total, by_csm=by_csm, by_stage=by_stage, metrics=metrics, tiers=tiers)


def portfolio_prime(*, org) -> None:
    """Compute the organization's figures into the shared cache, so the first leader of the morning
    finds the Portfolio ready. Run by the worker after each nightly run and sync; a cache that is
    down costs the page its speed, never the run its result."""
    try:
        with tenant(org):
            organization_frames(org=org, refresh=True)
    except Exception:
        log.exception("could not prime the Portfolio figures of %s", org.slug)
