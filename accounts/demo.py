"""Demo organizations: a realistic, deterministic customer base for the demo and the benchmarks.

The frame builders are pure: each takes the account plan, the day and its own random stream
(numpy `Generator`, never Python's global `random` or the clock) and returns a pandas frame whose
columns are the table's columns. `demo_org_generate` runs them in order and COPYs each frame into
its table inside the tenant. The same seed and day give the same rows, whatever the organization.

Dates are handled as integer day numbers (days since 1970-01-01) while building, so that every
rule ("renewal within 90 days", "silent for 10 days") is plain integer arithmetic; timestamps are
drawn as local wall-clock times in the organization's time zone and stored in UTC.
"""

import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.db import connection
from psycopg import sql

from accounts.models import (
    Account,
    Activity,
    ArrChange,
    Contact,
    Invoice,
    Membership,
    Organization,
    Role,
    Task,
    Ticket,
    UsageDay,
)
from accounts.services import member_add
from csm.tenancy import tenant

DEMO_PASSWORD = "vigil-demo"
USAGE_DAYS = 90
ACTIVITY_DAYS = 90
TICKET_DAYS = 120  # longer than the 35-day support-spike baseline, so the baseline is populated
HISTORY_DAYS = 365

STAGE_SHARES = {"onboarding": 0.15, "adopting": 0.25, "steady": 0.55, "churned": 0.05}
TIER_SHARES = {"enterprise": 0.10, "mid_market": 0.35, "smb": 0.55}
SILENT_SHARE = 0.10

# ARR is log-normal per tier around these medians; seats follow from ARR at a price per seat.
# (median, log-sigma, floor, ceiling)
TIER_ARR = {
    "enterprise": (180_000, 0.5, 80_000, 1_500_000),
    "mid_market": (40_000, 0.45, 12_000, 150_000),
    "smb": (7_000, 0.5, 1_200, 20_000),
}
TIER_SEAT_PRICE = {"enterprise": 300, "mid_market": 330, "smb": 450}
TIER_PLANS = {
    "enterprise": ("Enterprise", "Enterprise Plus"),
    "mid_market": ("Business", "Growth"),
    "smb": ("Starter", "Team"),
}
TIER_CONTACTS = {"enterprise": (4, 6), "mid_market": (3, 5), "smb": (2, 4)}
# Expected activities and tickets per day: bigger customers talk more and file more tickets.
TIER_ACTIVITY_RATE = {"enterprise": 0.55, "mid_market": 0.30, "smb": 0.14}
TIER_TICKET_RATE = {"enterprise": 0.12, "mid_market": 0.05, "smb": 0.02}

NAME_STEMS = (
    "North Blue Silver Iron Green Bright Red Clear High Deep Swift Gold Oak Pine Star Sun Moon Cedar River Summit "
    "Harbor Maple Frost Ember Falcon Crystal Granite Copper Eagle Amber Coral Orchid Atlas Nova Terra Lumen Vertex "
    "Apex Prime Birch Willow Aspen Cobalt Sterling Horizon Arrow Wolf"
).split()
NAME_ENDINGS = (
    "wind peak bridge field gate wave point line stone light forge brook crest ridge path works stream vale haven "
    "port leaf rock shore view wood spring mark core scale grid fall bay"
).split()
INDUSTRIES = (
    "Logistics Health Analytics Foods Energy Robotics Media Capital Insurance Software Biotech Retail Freight Pharma "
    "Telecom Security Labs Systems Consulting Manufacturing Realty Travel Education Payments Mobility Aerospace "
    "Apparel Studios Networks Materials Dynamics Ventures"
).split()
LEGAL_SUFFIXES = ("", "Group", "Inc", "Co")
TOP_LEVEL_DOMAINS = np.array(["com", "com", "com", "io", "co", "net"])

FIRST_NAMES = (
    "Emma Liam Olivia Noah Ava Lucas Mia Hugo Sofia Leo Chloe Adam Alice Louis Julia Arthur Lina Jules Nora Paul "
    "Sarah Ethan Camille Omar Ines Victor Grace Samuel Zoe Daniel Maya Tom Anna Felix Clara Marco Elena Yusuf Hannah "
    "David Priya Kenji Amara Diego Lea Mateo Ingrid Rafael"
).split()
LAST_NAMES = (
    "Martin Bernard Dubois Smith Johnson Garcia Muller Rossi Nguyen Kim Laurent Moreau Fischer Weber Brown Wilson "
    "Lopez Silva Costa Novak Schmidt Fontaine Leroy Girard Jensen Larsen Patel Khan Tanaka Sato Okafor Mendes Roux "
    "Blanc Fournier Keller Meyer Walsh Murphy Byrne Dupont Petit Lambert Morel Chevalier Andersen Cohen Rivera"
).split()
CHAMPION_TITLES = np.array(
    ["Head of Operations", "VP Customer Experience", "Director of IT", "Operations Manager", "Head of Sales Ops"]
)
CONTACT_TITLES = np.array(
    ["IT Administrator", "Finance Manager", "Procurement Lead", "CTO", "Team Lead", "Data Analyst", "Project Manager"]
)

# Mutual action plans: an onboarding plan runs through these steps in order; adopting accounts
# work on an adoption plan. (title, owner side)
ONBOARDING_STEPS = (
    ("Kickoff call and success criteria", "vendor"),
    ("Name project owner and stakeholders", "client"),
    ("Sign data processing agreement", "client"),
    ("Provide SSO metadata", "client"),
    ("Configure SSO", "vendor"),
    ("Send user list for provisioning", "client"),
    ("Provision workspaces", "vendor"),
    ("Grant CRM integration access", "client"),
    ("Validate data import", "vendor"),
    ("Admin training session", "vendor"),
    ("Complete security review", "client"),
    ("Pilot team rollout", "client"),
    ("Configure reporting dashboards", "vendor"),
    ("End-user training", "vendor"),
    ("Go-live sign-off", "client"),
)
ADOPTION_STEPS = (
    ("Define adoption KPIs", "client"),
    ("Champion enablement session", "vendor"),
    ("Roll out to second team", "client"),
    ("Enable advanced analytics", "vendor"),
    ("Connect data warehouse export", "client"),
    ("Retire legacy spreadsheet process", "client"),
    ("Quarterly business review", "vendor"),
    ("Executive sponsor check-in", "vendor"),
)
BLOCKED_REASONS = np.array(
    [
        "Waiting on IT security review",
        "SSO metadata not provided",
        "CRM admin access not granted",
        "Legal review of the DPA",
        "Client project owner on leave",
        "Data export fails validation",
    ]
)

ACTIVITY_KINDS = {
    "client": (("email", "call", "meeting", "message"), (0.55, 0.10, 0.15, 0.20)),
    "vendor": (("email", "call", "meeting", "message", "note"), (0.45, 0.15, 0.12, 0.08, 0.20)),
}
ACTIVITY_PREFIXES = {
    "email": ("Re: ", "Question about ", "Follow-up on ", "Update on "),
    "call": ("Call about ", "Check-in call: ", "Call: "),
    "meeting": ("Meeting: ", "Workshop on ", "Review of "),
    "message": ("Message about ", "Quick question on "),
    "note": ("Note: ", "Internal note on ", "Risk note: "),
}
TOPICS = np.array(
    [
        "SSO setup",
        "the renewal",
        "user provisioning",
        "the latest release",
        "reporting dashboards",
        "the last invoice",
        "API limits",
        "training sessions",
        "data export",
        "the roadmap",
        "adoption goals",
        "seat expansion",
    ]
)
TICKET_SUBJECTS = np.array(
    [
        "Login fails with SSO",
        "Dashboard loads slowly",
        "CSV export is missing rows",
        "Cannot invite new users",
        "API returns 500 errors",
        "Billing address change",
        "Report numbers look wrong",
        "Integration sync stopped",
        "Password reset e-mail not received",
        "Feature request: bulk edit",
    ]
)

EPOCH = date(1970, 1, 1)
SECONDS_PER_DAY = 86_400
COPY_CHUNK_ROWS = 100_000

Progress = Callable[[str, int], object]  # (label, total rows) -> something with update(n) and close()


# --- small vectorized helpers -------------------------------------------------------------------


def _day_number(value: date) -> int:
    return (value - EPOCH).days


def _dates(day_numbers) -> np.ndarray:
    """Day numbers to datetime64[D]; NaN (no date) becomes NaT."""
    values = np.asarray(day_numbers, dtype="float64")
    out = np.full(values.shape, np.datetime64("NaT"), dtype="datetime64[D]")
    known = ~np.isnan(values)
    out[known] = values[known].astype("int64").astype("datetime64[D]")
    return out


def _local_timestamps(day_numbers, seconds, tz: str) -> pd.DatetimeIndex:
    """Wall-clock times in the organization's time zone (day number + seconds after midnight), in UTC."""
    local = pd.to_datetime(np.asarray(day_numbers, dtype="int64") * SECONDS_PER_DAY + np.asarray(seconds), unit="s")
    # Times are drawn in working hours, so DST gaps and repeats (around 2-3 am) never happen;
    # the arguments only make that explicit.
    return local.tz_localize(tz, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")


def _working_seconds(rng: np.random.Generator, n: int, first_hour: int = 8, last_hour: int = 19) -> np.ndarray:
    return rng.integers(first_hour * 3600, last_hour * 3600, size=n)


def _quota(rng: np.random.Generator, n: int, shares: dict[str, float]) -> np.ndarray:
    """Labels in (almost) exact proportions, every label at least once when n allows, shuffled."""
    labels = list(shares)
    exact = np.array([shares[label] for label in labels]) * n
    counts = np.floor(exact).astype(int)
    if n >= len(labels):
        counts = np.maximum(counts, 1)
    while counts.sum() < n:  # largest remainders first
        counts[np.argmax(exact - counts)] += 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    return rng.permutation(np.repeat(np.array(labels, dtype=object), counts))


def _pick_share(rng: np.random.Generator, eligible: np.ndarray, share: float) -> np.ndarray:
    """A boolean mask choosing round(share × eligible) of the eligible rows (at least one if any)."""
    candidates = np.flatnonzero(eligible)
    count = min(len(candidates), max(1, round(share * len(candidates)))) if len(candidates) else 0
    mask = np.zeros(len(eligible), dtype=bool)
    mask[rng.choice(candidates, size=count, replace=False)] = True
    return mask


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For per-owner row counts: each row's owner index and its position within the owner."""
    counts = np.asarray(counts, dtype="int64")
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    position = np.arange(counts.sum()) - np.repeat(starts, counts)
    return owner, position


def _numbered(prefix: str, count: int) -> np.ndarray:
    return (prefix + pd.Series(np.arange(1, count + 1)).astype(str).str.zfill(7)).to_numpy()


def _choose_from(rng: np.random.Generator, options_by_key: dict, keys: np.ndarray) -> np.ndarray:
    """For each row, one option from the tuple its key maps to."""
    out = np.empty(len(keys), dtype=object)
    for key, options in options_by_key.items():
        rows = np.flatnonzero(keys == key)
        out[rows] = np.array(options, dtype=object)[rng.integers(0, len(options), size=len(rows))]
    return out


# --- the team ---------------------------------------------------------------------------------


def demo_team_size(accounts: int) -> dict[str, int]:
    """About one CSM per 60 accounts (3 to 200) and one AM per 150 accounts (at least 2)."""
    return {
        "admin": 1,
        "leader": 1,
        "csm": int(np.clip(round(accounts / 60), 3, 200)),
        "am": max(2, round(accounts / 150)),
    }


def team_frame(*, slug: str, accounts: int, rng: np.random.Generator) -> pd.DataFrame:
    """The demo team's e-mails, roles and names (admin@, leader@, csm1@, am1@ … at <slug>.demo)."""
    rows = []
    for role, count in demo_team_size(accounts).items():
        for number in range(1, count + 1):
            local = role if role in ("admin", "leader") else f"{role}{number}"
            rows.append((f"{local}@{slug}.demo", role))
    frame = pd.DataFrame(rows, columns=["email", "role"])
    frame["first_name"] = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), size=len(frame))]
    frame["last_name"] = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), size=len(frame))]
    return frame


def _team_ensure(*, org: Organization, team: pd.DataFrame) -> pd.DataFrame:
    """Create (or refresh) the demo users and memberships; returns the team with `user_id`.

    The admin and the leader go through `member_add`. CSMs and AMs (hundreds for a large
    organization) are written in bulk with one shared password hash: hashing costs about half a
    second per call, so one `member_add` each would dominate the whole generation.
    """
    User = get_user_model()
    for row in team[team.role.isin([Role.ADMIN, Role.LEADER])].itertuples():
        member_add(org=org, email=row.email, role=row.role)
    emails = team.email.tolist()
    existing = set(User.objects.filter(username__in=emails).values_list("username", flat=True))
    User.objects.bulk_create(
        [User(username=row.email, email=row.email) for row in team.itertuples() if row.email not in existing]
    )
    users = {user.username: user for user in User.objects.filter(username__in=emails)}
    password = make_password(DEMO_PASSWORD)
    for row in team.itertuples():
        user = users[row.email]
        user.first_name, user.last_name, user.password, user.is_active = row.first_name, row.last_name, password, True
    User.objects.bulk_update(list(users.values()), ["first_name", "last_name", "password", "is_active"], batch_size=500)
    with tenant(org):
        Membership.objects.bulk_create(
            [Membership(org=org, user=users[row.email], role=row.role) for row in team.itertuples()],
            update_conflicts=True,
            unique_fields=["org", "user"],
            update_fields=["role"],
        )
    return team.assign(user_id=team.email.map({email: user.pk for email, user in users.items()}))


# --- frame builders (pure) ----------------------------------------------------------------------


def accounts_frame(
    *, n: int, today: int, rng: np.random.Generator, csm_ids: np.ndarray, am_ids: np.ndarray
) -> pd.DataFrame:
    """The customer accounts, plus the plan columns (prefixed `_`) that later builders follow."""
    name_space = len(NAME_STEMS) * len(NAME_ENDINGS) * len(INDUSTRIES) * len(LEGAL_SUFFIXES)
    if not 1 <= n <= name_space:
        raise ValidationError(f"A demo organization holds 1 to {name_space} accounts, not {n}.")
    picks = rng.choice(name_space, size=n, replace=False)
    picks, suffix = np.divmod(picks, len(LEGAL_SUFFIXES))
    picks, industry = np.divmod(picks, len(INDUSTRIES))
    stem, ending = np.divmod(picks, len(NAME_ENDINGS))
    brand = pd.Series(np.array(NAME_STEMS, dtype=object)[stem] + np.array(NAME_ENDINGS, dtype=object)[ending])
    suffix_text = pd.Series(np.array(LEGAL_SUFFIXES, dtype=object)[suffix])
    name = brand + " " + pd.Series(np.array(INDUSTRIES, dtype=object)[industry])
    name = name.where(suffix_text == "", name + " " + suffix_text)
    domain = name.str.replace(" ", "", regex=False).str.lower() + "." + TOP_LEVEL_DOMAINS[rng.integers(0, 6, size=n)]

    stage = _quota(rng, n, STAGE_SHARES)
    tier = _quota(rng, n, TIER_SHARES)
    arr = np.zeros(n)
    seat_limit = np.zeros(n, dtype="int64")
    plan = np.empty(n, dtype=object)
    for name_of_tier, (median, sigma, low, high) in TIER_ARR.items():
        rows = np.flatnonzero(tier == name_of_tier)
        tier_arr = np.clip(rng.lognormal(np.log(median), sigma, size=len(rows)), low, high)
        arr[rows] = np.round(tier_arr, -2)
        seats = arr[rows] / TIER_SEAT_PRICE[name_of_tier] * rng.uniform(0.8, 1.2, size=len(rows))
        seat_limit[rows] = np.maximum(3, np.round(seats / 5) * 5).astype("int64")
        plan[rows] = np.array(TIER_PLANS[name_of_tier], dtype=object)[rng.integers(0, 2, size=len(rows))]

    churned = stage == "churned"
    onboarding = stage == "onboarding"
    adopting = stage == "adopting"
    # Contract age in days by stage; churned accounts left in the last 12 months.
    age = np.select(
        [onboarding, adopting, stage == "steady"],
        [rng.integers(5, 61, size=n), rng.integers(60, 241, size=n), rng.integers(240, 1461, size=n)],
        default=0,
    )
    churned_on = np.where(churned, today - rng.integers(1, 366, size=n), -1)
    contract_start = np.where(churned, churned_on - rng.integers(200, 1101, size=n), today - age)
    age = today - contract_start
    # The next anniversary of the contract, so renewals spread over the coming 12 months;
    # a churned account's last renewal is the one it did not sign, shortly before it left.
    next_anniversary = contract_start + np.ceil((age + 1) / 365).astype("int64") * 365
    renewal = np.where(churned, churned_on - rng.integers(0, 22, size=n), next_anniversary)
    # Onboarding accounts go live soon (about a third within a week); the others went live
    # three weeks to two and a half months after signing.
    upcoming = np.where(rng.random(n) < 0.3, rng.integers(0, 8, size=n), rng.integers(8, 76, size=n))
    went_live = contract_start + 21 + np.floor(rng.random(n) * (np.minimum(75, age - 1) - 21)).astype("int64")
    go_live = np.where(onboarding, today + upcoming, np.minimum(went_live, today - 1))
    created_day = contract_start - rng.integers(0, 31, size=n)

    # Round-robin over a shuffled book, then a few accounts moved around, so books differ a little.
    csm = np.asarray(csm_ids)[rng.permutation(np.arange(n) % len(csm_ids))]
    moved = rng.random(n) < 0.15
    csm[moved] = rng.choice(csm_ids, size=moved.sum())
    am = np.asarray(am_ids)[rng.permutation(np.arange(n) % len(am_ids))]

    live = ~churned
    silent = _pick_share(rng, live & (age >= 30), SILENT_SHARE)
    silent_since = np.where(silent, today - rng.integers(10, 41, size=n), -1)
    steady_ish = live & ~onboarding
    near_limit = _pick_share(rng, steady_ish & ~silent, 0.12)
    usage_stopped_on = np.where(
        _pick_share(rng, steady_ish & ~near_limit, 0.03), today - rng.integers(3, 7, size=n), -1
    )
    billing = np.where(
        tier == "enterprise",
        "annual",
        np.where((tier == "mid_market") & (rng.random(n) < 0.5), "annual", "monthly"),
    )
    billing = np.where((tier == "smb") & (rng.random(n) < 0.15), "annual", billing)

    return pd.DataFrame(
        {
            "external_id": _numbered("ACC-", n),
            "name": name.to_numpy(),
            "domain": domain.to_numpy(),
            "tier": tier,
            "arr": arr,
            "currency": "USD",
            "plan": plan,
            "seat_limit": seat_limit,
            "stage": stage,
            "csm_id": csm,
            "am_id": am,
            "go_live_date": _dates(go_live),
            "renewal_date": _dates(renewal),
            "contract_start": _dates(contract_start),
            "churned_on": _dates(np.where(churned, churned_on, np.nan)),
            "_created_day": created_day,
            "_contract_start": contract_start,
            "_churned_on": churned_on,
            "_silent_since": silent_since,
            "_near_limit": near_limit,
            "_usage_stopped_on": usage_stopped_on,
            "_billing": billing,
        }
    )


def _last_day(plan: pd.DataFrame, today: int) -> np.ndarray:
    """The last day an account can have data: yesterday, or the day before it churned."""
    churned_on = plan._churned_on.to_numpy()
    return np.where(churned_on >= 0, np.minimum(churned_on - 1, today - 1), today - 1)


def arr_changes_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator) -> pd.DataFrame:
    """ARR history: the contracted ARR at signing, expansions and contractions over the last
    12 months ending at today's ARR, and a drop to zero on the day a churned account left."""
    n = len(plan)
    arr = plan.arr.to_numpy()
    start = plan._contract_start.to_numpy()
    churned_on = plan._churned_on.to_numpy()
    window_start = np.maximum(start + 30, today - HISTORY_DAYS)
    window_end = _last_day(plan, today)
    span = window_end - window_start
    eligible = (plan.stage.to_numpy() != "onboarding") & (span > 0)
    changes = np.where(eligible, rng.choice(3, size=n, p=[0.6, 0.3, 0.1]), 0)
    owner, _ = _expand(changes)
    day = window_start[owner] + np.floor(rng.random(len(owner)) * span[owner]).astype("int64")
    expansion = rng.random(len(owner)) < 0.7
    factor = np.where(expansion, rng.uniform(1.08, 1.5, size=len(owner)), rng.uniform(0.65, 0.92, size=len(owner)))
    moves = pd.DataFrame({"account": owner, "day": day, "factor": factor})
    moves = moves.drop_duplicates(["account", "day"]).sort_values(["account", "day"], kind="stable")

    # Work backwards from today's ARR to the ARR at signing, then forwards again.
    total_factor = moves.groupby("account").factor.prod().reindex(range(n), fill_value=1.0).to_numpy()
    signed = np.round(arr / total_factor, -2)
    moves["arr"] = signed[moves.account] * moves.groupby("account").factor.cumprod().to_numpy()
    moves["arr"] = np.round(moves.arr, -2)
    last_move = ~moves.account.duplicated(keep="last")
    moves.loc[last_move, "arr"] = arr[moves.account[last_move]]  # rounding must not drift from today's ARR

    churned = np.flatnonzero(churned_on >= 0)
    frame = pd.concat(
        [
            pd.DataFrame({"account": np.arange(n), "day": start, "arr": signed}),
            moves[["account", "day", "arr"]],
            pd.DataFrame({"account": churned, "day": churned_on[churned], "arr": 0.0}),
        ],
        ignore_index=True,
    ).sort_values(["account", "day"], kind="stable")
    return pd.DataFrame(
        {"account": frame.account.to_numpy(), "effective_date": _dates(frame.day), "arr": frame.arr.to_numpy()}
    )


def contacts_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator) -> pd.DataFrame:
    """2 to 6 contacts per account; the first is the champion, and a few champions left recently."""
    n = len(plan)
    tier = plan.tier.to_numpy()
    counts = np.zeros(n, dtype="int64")
    for name_of_tier, (low, high) in TIER_CONTACTS.items():
        rows = np.flatnonzero(tier == name_of_tier)
        counts[rows] = rng.integers(low, high + 1, size=len(rows))
    owner, position = _expand(counts)
    total = len(owner)
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), size=total)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), size=total)]
    domain = plan.domain.to_numpy()[owner]
    champion = position == 0
    live = plan._churned_on.to_numpy()[owner] < 0
    left_recently = champion & _pick_share(rng, champion & live, 0.04)
    left_earlier = ~champion & (rng.random(total) < 0.03)
    left_on = np.where(
        left_recently,
        today - rng.integers(1, 31, size=total),
        np.where(left_earlier, today - rng.integers(30, 366, size=total), np.nan),
    )
    phone = "+1 555 " + pd.Series(rng.integers(0, 10_000, size=total)).astype(str).str.zfill(4)
    return pd.DataFrame(
        {
            "account": owner,
            "external_id": _numbered("CON-", total),
            "name": first + " " + last,
            "email": pd.Series(first + "." + last).str.lower().to_numpy() + "@" + domain,
            "phone": phone.where(rng.random(total) < 0.6, "").to_numpy(),
            "title": np.where(
                champion,
                CHAMPION_TITLES[rng.integers(0, len(CHAMPION_TITLES), size=total)],
                CONTACT_TITLES[rng.integers(0, len(CONTACT_TITLES), size=total)],
            ),
            "is_champion": champion,
            "left_on": _dates(left_on),
        }
    )


def tasks_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator, tz: str) -> pd.DataFrame:
    """Mutual action plans of onboarding (signing to go-live) and adopting accounts.

    Past steps are mostly done; some are still open (client ones become follow-ups) or blocked,
    a third of the blocked ones since yesterday. A silent account's client never completed
    anything recently: such steps stay open.
    """
    stage = plan.stage.to_numpy()
    onboarding = stage == "onboarding"
    with_plan = onboarding | (stage == "adopting")
    counts = np.where(
        onboarding,
        rng.integers(8, len(ONBOARDING_STEPS) + 1, size=len(plan)),
        rng.integers(3, len(ADOPTION_STEPS) + 1, size=len(plan)),
    )
    counts = np.where(with_plan, counts, 0)
    owner, position = _expand(counts)
    total = len(owner)
    is_onboarding = onboarding[owner]
    steps_onboarding = np.array(ONBOARDING_STEPS, dtype=object)
    steps_adoption = np.array(ADOPTION_STEPS, dtype=object)
    title = np.where(is_onboarding, steps_onboarding[np.minimum(position, len(ONBOARDING_STEPS) - 1), 0], "")
    side = np.where(is_onboarding, steps_onboarding[np.minimum(position, len(ONBOARDING_STEPS) - 1), 1], "")
    adoption_step = np.minimum(position, len(ADOPTION_STEPS) - 1)
    title = np.where(is_onboarding, title, steps_adoption[adoption_step, 0])
    side = np.where(is_onboarding, side, steps_adoption[adoption_step, 1])

    # Onboarding steps are spread from signing to two weeks after go-live; adoption steps over
    # the last two months and the next two.
    start = plan._contract_start.to_numpy()[owner]
    go_live = (plan.go_live_date.to_numpy().astype("datetime64[D]").astype("int64"))[owner]
    plan_start = np.where(is_onboarding, start, today - 60)
    plan_end = np.where(is_onboarding, go_live + 14, today + 60)
    fraction = (position + 1) / (counts[owner] + 1)
    due = plan_start + np.round(fraction * (plan_end - plan_start)).astype("int64")
    created = plan_start - rng.integers(0, 6, size=total)

    past, soon = due < today, (due >= today) & (due <= today + 14)
    draw = rng.random(total)
    status = np.select(
        [
            past & (draw < 0.80),
            past & (draw < 0.88),
            past & (draw < 0.94),
            past,
            soon & (draw < 0.10),
            soon & (draw < 0.40),
            soon & (draw < 0.47),
            soon,
            draw < 0.05,
            draw < 0.10,
            draw < 0.13,
        ],
        ["done", "todo", "in_progress", "blocked", "done", "in_progress", "blocked", "todo", "done", "in_progress"]
        + ["blocked"],
        default="todo",
    )
    completed = np.clip(due + rng.integers(-5, 4, size=total), created + 1, today - 1)
    silent_since = plan._silent_since.to_numpy()[owner]
    quiet_client = (side == "client") & (silent_since >= 0) & (completed >= silent_since)
    status = np.where((status == "done") & quiet_client, "todo", status)

    recently = rng.random(total) < 0.35
    blocked_day = np.where(recently, today - rng.integers(0, 2, size=total), today - rng.integers(2, 22, size=total))
    changed_day = np.select(
        [status == "done", status == "blocked", status == "in_progress"],
        [completed, blocked_day, today - rng.integers(1, 21, size=total)],
        default=created,
    )
    changed_day = np.clip(changed_day, created, today)
    done = status == "done"
    # A step blocked "today" was blocked early this morning, before the nightly run.
    changed_seconds = np.where(changed_day == today, rng.integers(1 * 3600, 5 * 3600, size=total), 0)
    changed_seconds = changed_seconds + np.where(changed_day == today, 0, _working_seconds(rng, total))
    created_at = _local_timestamps(created, _working_seconds(rng, total), tz)
    changed_at = _local_timestamps(changed_day, changed_seconds, tz)
    # A step never changes before it exists; a todo step has not moved since it was created.
    changed_at = changed_at.where((status != "todo") & (changed_at >= created_at), created_at)
    verified = done & (rng.random(total) < np.where(side == "client", 0.9, 0.6))
    return pd.DataFrame(
        {
            "account": owner,
            "external_id": _numbered("MAP-", total),
            "title": title,
            "owner_side": side,
            "status": status,
            "blocked_reason": np.where(
                status == "blocked", BLOCKED_REASONS[rng.integers(0, len(BLOCKED_REASONS), size=total)], ""
            ),
            "due_date": _dates(due),
            "created_at": created_at,
            "status_changed_at": changed_at,
            "completed_at": changed_at.where(done, pd.NaT),
            "verified_by_client": verified,
        }
    )


def activities_frame(
    *, plan: pd.DataFrame, contacts: pd.DataFrame, team: pd.DataFrame, today: int, rng: np.random.Generator, tz: str
) -> pd.DataFrame:
    """The timeline of the last 90 days: e-mails, calls, meetings, messages and internal notes.

    Every live account heard from its client in the last nine days, except the silent ones,
    whose client went quiet 10 to 40 days ago (the CSM may still have written to them).
    """
    n = len(plan)
    first = np.maximum(today - ACTIVITY_DAYS, plan._created_day.to_numpy())
    last = _last_day(plan, today)
    span = np.maximum(last - first + 1, 0)
    rate = plan.tier.map(TIER_ACTIVITY_RATE).to_numpy() * np.where(plan.stage == "onboarding", 1.6, 1.0)
    owner, _ = _expand(rng.poisson(rate * span))
    day = first[owner] + np.floor(rng.random(len(owner)) * span[owner]).astype("int64")
    side = np.where(rng.random(len(owner)) < 0.45, "client", "vendor")

    silent_since = plan._silent_since.to_numpy()
    live = plan._churned_on.to_numpy() < 0
    keep = ~((side == "client") & (silent_since[owner] >= 0) & (day >= silent_since[owner]))
    owner, day, side = owner[keep], day[keep], side[keep]
    recent = np.flatnonzero(live & (silent_since < 0))
    owner = np.concatenate([owner, recent])
    day = np.concatenate([day, np.maximum(today - rng.integers(1, 10, size=len(recent)), first[recent])])
    side = np.concatenate([side, np.full(len(recent), "client")])
    order = np.lexsort((day, owner))
    owner, day, side = owner[order], day[order], side[order]
    total = len(owner)

    kind = np.empty(total, dtype=object)
    for actor_side, (kinds, weights) in ACTIVITY_KINDS.items():
        rows = np.flatnonzero(side == actor_side)
        kind[rows] = rng.choice(np.array(kinds, dtype=object), size=len(rows), p=weights)
    direction = np.where(side == "client", "inbound", np.where(kind == "note", "internal", "outbound"))

    # A client actor is one of the account's contacts; a vendor actor is its CSM (or its AM).
    contact_counts = np.bincount(contacts.account.to_numpy(), minlength=n)
    contact_starts = np.cumsum(contact_counts) - contact_counts
    contact_pick = contact_starts[owner] + np.floor(rng.random(total) * contact_counts[owner]).astype("int64")
    names = team.set_index("user_id")
    vendor_names = (names.first_name + " " + names.last_name).to_dict()
    vendor_user = np.where(
        (kind != "note") & (rng.random(total) < 0.2), plan.am_id.to_numpy()[owner], plan.csm_id.to_numpy()[owner]
    )
    actor_name = np.where(
        side == "client", contacts.name.to_numpy()[contact_pick], pd.Series(vendor_user).map(vendor_names).to_numpy()
    )
    summary = _choose_from(rng, ACTIVITY_PREFIXES, kind) + TOPICS[rng.integers(0, len(TOPICS), size=total)]
    return pd.DataFrame(
        {
            "account": owner,
            "external_id": _numbered("ACT-", total),
            "occurred_at": _local_timestamps(day, _working_seconds(rng, total), tz),
            "kind": kind,
            "direction": direction,
            "actor_side": side,
            "actor_name": actor_name,
            "summary": summary,
        }
    )


def usage_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator) -> pd.DataFrame:
    """90 days of daily usage ending today for every live account, from its contract start.

    Seats follow a growing, flat or declining trend (onboarding accounts ramp up; silent ones
    mostly decline; some sit at 80-105% of their seat limit); active users and events follow
    seats with a weekday/weekend rhythm and daily noise. Some accounts stopped using the product
    a few days ago: their last days are zero.
    """
    live = np.flatnonzero(plan._churned_on.to_numpy() < 0)
    n = len(live)
    stage = plan.stage.to_numpy()[live]
    onboarding = stage == "onboarding"
    near_limit = plan._near_limit.to_numpy()[live]
    silent = plan._silent_since.to_numpy()[live] >= 0
    limit = plan.seat_limit.to_numpy()[live].astype("float64")

    end_share = np.select(
        [near_limit, onboarding, stage == "adopting"],
        [rng.uniform(0.8, 1.05, size=n), rng.uniform(0.05, 0.4, size=n), rng.uniform(0.3, 0.75, size=n)],
        default=rng.uniform(0.45, 0.78, size=n),
    )
    draw = rng.random(n)
    declining = ~onboarding & ~near_limit & (draw < np.where(silent, 0.6, 0.25))
    growing = onboarding | (~declining & (draw > 0.7))
    start_share = np.select(
        [onboarding, growing, declining],
        [
            np.zeros(n),
            end_share * rng.uniform(0.55, 0.85, size=n),
            np.minimum(end_share * rng.uniform(1.3, 1.9, size=n), 1.0),
        ],
        default=end_share * rng.uniform(0.93, 1.07, size=n),
    )

    days = today - USAGE_DAYS + 1 + np.arange(USAGE_DAYS)
    t = np.arange(USAGE_DAYS) / (USAGE_DAYS - 1)
    share = start_share[:, None] + (end_share - start_share)[:, None] * t[None, :]
    share = share + rng.normal(0, 0.01, size=share.shape)
    seats = np.maximum(1, np.round(limit[:, None] * np.clip(share, 0.01, 1.1)))

    # 1970-01-01 was a Thursday, so (day + 3) % 7 is 0 on Mondays and 5-6 on weekends.
    weekend = ((days + 3) % 7) >= 5
    daily_ratio = rng.uniform(0.35, 0.8, size=n)[:, None] * np.where(
        weekend[None, :], rng.uniform(0.15, 0.4, size=n)[:, None], 1.0
    )
    active = np.minimum(seats, np.round(seats * daily_ratio * rng.lognormal(0, 0.12, size=seats.shape)))
    events = np.round(active * rng.uniform(8, 40, size=n)[:, None] * rng.lognormal(0, 0.2, size=seats.shape))
    stopped_on = plan._usage_stopped_on.to_numpy()[live]
    stopped = (stopped_on[:, None] >= 0) & (days[None, :] >= stopped_on[:, None])
    active[stopped] = 0
    events[stopped] = 0

    present = days[None, :] >= plan._contract_start.to_numpy()[live][:, None]
    row, column = np.nonzero(present)
    return pd.DataFrame(
        {
            "account": live[row],
            "date": days[column].astype("datetime64[D]"),
            "active_users": active[row, column].astype("int64"),
            "seats_used": seats[row, column].astype("int64"),
            "events": events[row, column].astype("int64"),
        }
    )


def tickets_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator, tz: str) -> pd.DataFrame:
    """Support tickets of the last 120 days; recent ones still open, a few urgent ones open,
    and a few accounts with a burst of tickets in the last week."""
    first = np.maximum(today - TICKET_DAYS, plan._created_day.to_numpy())
    last = _last_day(plan, today)
    span = np.maximum(last - first + 1, 0)
    owner, _ = _expand(rng.poisson(plan.tier.map(TIER_TICKET_RATE).to_numpy() * span))
    day = first[owner] + np.floor(rng.random(len(owner)) * span[owner]).astype("int64")
    priority = rng.choice(
        np.array(["low", "normal", "high", "urgent"], dtype=object), size=len(owner), p=[0.2, 0.55, 0.18, 0.07]
    )

    live = plan._churned_on.to_numpy() < 0
    urgent_accounts = np.flatnonzero(_pick_share(rng, live, 0.02))
    spike_accounts = np.flatnonzero(_pick_share(rng, live, 0.02))
    spike_counts = rng.integers(3, 8, size=len(spike_accounts))
    spike_owner = np.repeat(spike_accounts, spike_counts)
    forced_open = np.concatenate(
        [np.zeros(len(owner), bool), np.ones(len(urgent_accounts), bool), np.zeros(len(spike_owner), bool)]
    )
    owner = np.concatenate([owner, urgent_accounts, spike_owner])
    day = np.concatenate(
        [day, today - rng.integers(0, 4, size=len(urgent_accounts)), today - rng.integers(1, 8, size=len(spike_owner))]
    )
    priority = np.concatenate(
        [
            priority,
            np.full(len(urgent_accounts), "urgent", dtype=object),
            rng.choice(np.array(["normal", "high"], dtype=object), size=len(spike_owner), p=[0.6, 0.4]),
        ]
    )
    order = np.lexsort((day, owner))
    owner, day, priority, forced_open = owner[order], day[order], priority[order], forced_open[order]
    total = len(owner)

    opened_seconds = np.where(day == today, rng.integers(0, 5 * 3600, size=total), _working_seconds(rng, total, 7, 21))
    opened_at_seconds = day * SECONDS_PER_DAY + opened_seconds
    # Urgent tickets are solved within hours, the others within days (log-normal).
    median_hours = np.where(priority == "urgent", 6.0, np.where(priority == "high", 20.0, 48.0))
    solved_at_seconds = opened_at_seconds + (rng.lognormal(np.log(median_hours), 0.9) * 3600).astype("int64")
    solved = ~forced_open & (solved_at_seconds < today * SECONDS_PER_DAY)
    solved_status = np.where((today - day > 7) & (rng.random(total) < 0.5), "closed", "solved")
    open_status = rng.choice(
        np.array(["new", "open", "pending", "hold"], dtype=object), size=total, p=[0.25, 0.5, 0.2, 0.05]
    )
    csat = np.where(
        solved & (rng.random(total) < 0.6),
        rng.choice([1, 2, 3, 4, 5], size=total, p=[0.04, 0.06, 0.15, 0.35, 0.4]),
        np.nan,
    )

    def timestamps(seconds):
        return _local_timestamps(seconds // SECONDS_PER_DAY, seconds % SECONDS_PER_DAY, tz)

    return pd.DataFrame(
        {
            "account": owner,
            "external_id": _numbered("TCK-", total),
            "opened_at": timestamps(opened_at_seconds),
            "status": np.where(solved, solved_status, open_status),
            "priority": priority,
            "solved_at": timestamps(solved_at_seconds).where(solved, pd.NaT),
            "csat": csat,
            "subject": TICKET_SUBJECTS[rng.integers(0, len(TICKET_SUBJECTS), size=total)],
        }
    )


def invoices_frame(*, plan: pd.DataFrame, today: int, rng: np.random.Generator, tz: str) -> pd.DataFrame:
    """Twelve months of invoices, monthly or annual; paid on time mostly, open while not due,
    and for a few accounts a recent one past due or uncollectible."""
    n = len(plan)
    start = plan._contract_start.to_numpy()
    churned_on = plan._churned_on.to_numpy()
    end = np.where(churned_on >= 0, np.minimum(churned_on, today), today)
    window_start = np.maximum(start, today - HISTORY_DAYS)
    annual = plan._billing.to_numpy() == "annual"

    # Monthly: on the contract's day of the month (28 at most) in each of the last 13 months.
    this_month = np.datetime64(int(today), "D").astype("datetime64[M]")
    months = (this_month - np.arange(13)[::-1]).astype("datetime64[D]").astype("int64")
    day_of_month = np.minimum(_day_of_month(start), 28) - 1
    monthly_issue = months[None, :] + day_of_month[:, None]
    # Annual: the last two contract anniversaries.
    anniversaries = (end - start) // 365
    annual_issue = start[:, None] + (anniversaries[:, None] - np.array([1, 0])[None, :]) * 365
    issue = np.where(annual[:, None], np.pad(annual_issue, ((0, 0), (11, 0)), constant_values=-1), monthly_issue)
    valid = (issue >= window_start[:, None]) & (issue <= end[:, None]) & (issue >= start[:, None])
    owner, column = np.nonzero(valid)
    issued = issue[owner, column]
    total = len(owner)
    arr = plan.arr.to_numpy()
    amount = np.where(annual[owner], arr[owner], np.round(arr[owner] / 12, 2))
    terms = np.where(annual[owner], 21, 14)  # net 21 for annual, net 14 for monthly
    due = issued + terms

    delay = rng.integers(0, terms + 8)
    paid_day = np.minimum(issued + delay, today - 1)
    status = np.where(issued + delay < today, "paid", np.where(due >= today, "open", "paid"))
    # Recent unpaid invoices: past due (6% of the accounts that can have one), uncollectible (1%):
    # each flagged account's latest invoice issued in the last 30 days and already due.
    recent_rows = np.flatnonzero((issued >= today - 30) & (due < today))
    latest = pd.Series(recent_rows).groupby(owner[recent_rows]).max()
    has_recent = np.zeros(n, dtype=bool)
    has_recent[latest.index.to_numpy()] = True
    live = churned_on < 0
    past_due = _pick_share(rng, live & has_recent, 0.06)
    uncollectible = _pick_share(rng, live & has_recent & ~past_due, 0.01)
    status = status.astype(object)
    status[latest[past_due[latest.index]].to_numpy()] = "past_due"
    status[latest[uncollectible[latest.index]].to_numpy()] = "uncollectible"
    paid = status == "paid"
    return pd.DataFrame(
        {
            "account": owner,
            "external_id": _numbered("INV-", total),
            "issued_at": _dates(issued),
            "amount": amount,
            "currency": "USD",
            "status": status,
            "due_date": _dates(due),
            "paid_at": _local_timestamps(paid_day, _working_seconds(rng, total), tz).where(paid, pd.NaT),
        }
    )


def _day_of_month(day_numbers: np.ndarray) -> np.ndarray:
    as_dates = np.asarray(day_numbers).astype("datetime64[D]")
    return (as_dates - as_dates.astype("datetime64[M]").astype("datetime64[D]")).astype("int64") + 1


# --- writing ----------------------------------------------------------------------------------


def _as_copy_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates and timestamps as ISO strings, formatted by numpy (pandas' own formatting is several
    times slower, and dominates the run for millions of rows)."""
    columns = {}
    for name, values in frame.items():
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            instants = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
            text = np.datetime_as_string(instants, unit="s", timezone="UTC").astype(object)
        elif pd.api.types.is_datetime64_dtype(values.dtype):
            instants = values.to_numpy().astype("datetime64[D]")
            text = np.datetime_as_string(instants).astype(object)
        else:
            columns[name] = values
            continue
        text[np.isnat(instants)] = None
        columns[name] = text
    return pd.DataFrame(columns, index=frame.index)


# PostgreSQL's binary COPY layout for the fixed-width types a frame may hold.
BINARY_COPY_TYPES = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2", "date": ">i4", "double precision": ">f8"}
BINARY_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
BINARY_COPY_TRAILER = b"\xff\xff"
POSTGRES_EPOCH_DAY = 10_957  # 2000-01-01, day zero of PostgreSQL's binary dates


def _binary_rows(frame: pd.DataFrame, types: list[str]) -> bytes:
    """Rows in binary COPY format, laid out by one numpy record per row (no per-value Python)."""
    layout = [("fields", ">i2")]
    for position, pg_type in enumerate(types):
        layout += [(f"length{position}", ">i4"), (f"value{position}", BINARY_COPY_TYPES[pg_type])]
    rows = np.empty(len(frame), dtype=np.dtype(layout))
    rows["fields"] = len(types)
    for position, (pg_type, values) in enumerate(zip(types, frame.items(), strict=True)):
        values = values[1].to_numpy()
        if pg_type == "date":
            values = values.astype("datetime64[D]").astype("int64") - POSTGRES_EPOCH_DAY
        rows[f"length{position}"] = np.dtype(BINARY_COPY_TYPES[pg_type]).itemsize
        rows[f"value{position}"] = values
    return rows.tobytes()


def _copy_frame(*, db, model, frame: pd.DataFrame, org: Organization, progress: Progress | None, label: str) -> int:
    """Bulk-load a frame into the model's table through `db`, a raw psycopg connection whose
    transaction is inside the tenant.

    Columns the frame lacks are filled with the field's constant default, or left to NULL when
    the field allows it, so a new column with a default does not break the demo.
    """
    frame = frame.assign(org_id=org.pk)
    columns, constants, types = [], {}, []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        column = field.attname
        if column not in frame:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                raise ValueError(f"{model.__name__}.{column} must be given by the demo builder")
            if field.has_default():
                value = field.get_default()
                constants[column] = json.dumps(value) if isinstance(value, dict | list) else value
            elif field.null:
                continue
            else:
                raise ValueError(f"{model.__name__}.{column} has no default and no value in the demo data")
        columns.append(column)
        types.append(field.rel_db_type(connection) if field.is_relation else field.db_type(connection))
    frame = frame.assign(**constants)[columns]
    # Frames of plain numbers and dates (daily usage: millions of rows) travel in binary;
    # the others as CSV.
    binary = all(pg_type in BINARY_COPY_TYPES for pg_type in types) and not frame.isna().any().any()
    # PostgreSQL refuses COPY FROM into a table under row-level security, so rows are copied
    # into a temporary table (private to this session, no policy) and moved with
    # INSERT … SELECT, which the tenant policy checks like any insert.
    table = sql.Identifier(model._meta.db_table)
    staging = sql.Identifier(f"demo_staging_{model._meta.db_table}")
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    copy_format = sql.SQL("FORMAT binary" if binary else "FORMAT csv, NULL '\\N'")
    copy_statement = sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(staging, column_list, copy_format)
    bar = progress(label, len(frame)) if progress else None
    with db.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE TEMPORARY TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(staging, column_list, table)
        )
        # Chunk by chunk, so the staging table stays small and progress follows the real inserts.
        for offset in range(0, len(frame), COPY_CHUNK_ROWS):
            chunk = frame.iloc[offset : offset + COPY_CHUNK_ROWS]
            with cursor.copy(copy_statement) as copy:
                if binary:
                    copy.write(BINARY_COPY_HEADER + _binary_rows(chunk, types) + BINARY_COPY_TRAILER)
                else:
                    buffer = io.StringIO()
                    _as_copy_text(chunk).to_csv(buffer, header=False, index=False, na_rep="\\N", float_format="%.2f")
                    copy.write(buffer.getvalue())
            cursor.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(table, column_list, column_list, staging)
            )
            cursor.execute(sql.SQL("TRUNCATE {}").format(staging))
            if bar is not None:
                bar.update(len(chunk))
        cursor.execute(sql.SQL("DROP TABLE {}").format(staging))
    if bar is not None:
        bar.close()
    return len(frame)


def _with_account_ids(frame: pd.DataFrame, account_ids: np.ndarray) -> pd.DataFrame:
    return frame.drop(columns="account").assign(account_id=account_ids[frame.account.to_numpy()])


@contextmanager
def _background_writer():
    """One worker thread that loads tables in submission order while the caller builds the next
    frame: PostgreSQL's inserts (index upkeep, foreign-key checks) then overlap numpy's work.

    On error, queued loads are cancelled and the running one is awaited before the caller's
    transaction rolls back, so the connection is never used by two threads at once.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-copy")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def demo_org_generate(
    *, org: Organization, accounts: int, seed: int, today: date, progress: Progress | None = None
) -> dict[str, int]:
    """Fill an organization that has no accounts yet with a demo team and customer base.

    Returns the number of rows written per table (and the team size under "members").
    """
    tz = org.timezone
    day = _day_number(today)
    streams = dict(
        zip(
            ["team", "accounts", "arr", "contacts", "tasks", "activities", "usage", "tickets", "invoices"],
            [np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(9)],
            strict=True,
        )
    )
    with tenant(org):
        if Account.objects.filter(org=org).exists():
            raise ValidationError(f"{org.slug} already has accounts; clear them first (demo_data --replace).")
        team = _team_ensure(org=org, team=team_frame(slug=org.slug, accounts=accounts, rng=streams["team"]))
        counts = {"members": len(team)}
        plan = accounts_frame(
            n=accounts,
            today=day,
            rng=streams["accounts"],
            csm_ids=team.user_id[team.role == Role.CSM].to_numpy(),
            am_ids=team.user_id[team.role == Role.AM].to_numpy(),
        )
        # Account timestamps are deterministic too: created before signing, updated this morning.
        plan_rows = plan.assign(
            created_at=_local_timestamps(plan._created_day, _working_seconds(streams["accounts"], len(plan)), tz),
            updated_at=_local_timestamps(np.full(len(plan), day), np.full(len(plan), 6 * 3600), tz),
        )
        plan_rows = plan_rows[[column for column in plan_rows.columns if not column.startswith("_")]]
        db = connection.connection  # the raw psycopg connection, shared with the writer thread
        # Foreign keys are checked as each table is loaded rather than all at COMMIT: the same work
        # (one check per row and key), but it overlaps generation instead of a long silent commit.
        # Django's keys are DEFERRABLE INITIALLY DEFERRED, so DEFERRED restores their default after.
        with db.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        counts["accounts"] = _copy_frame(
            db=db, model=Account, frame=plan_rows, org=org, progress=progress, label="accounts"
        )
        ids_by_external = dict(Account.objects.filter(org=org).values_list("external_id", "id"))
        account_ids = plan.external_id.map(ids_by_external).to_numpy().astype("int64")

        # From here on only the writer thread talks to the database.
        with _background_writer() as writer:
            loads = {}

            def write(model, label, frame):
                frame = _with_account_ids(frame, account_ids)
                loads[label] = writer.submit(
                    _copy_frame, db=db, model=model, frame=frame, org=org, progress=progress, label=label
                )

            write(ArrChange, "arr_changes", arr_changes_frame(plan=plan, today=day, rng=streams["arr"]))
            contacts = contacts_frame(plan=plan, today=day, rng=streams["contacts"])
            write(Contact, "contacts", contacts)
            write(UsageDay, "usage_days", usage_frame(plan=plan, today=day, rng=streams["usage"]))
            write(Task, "tasks", tasks_frame(plan=plan, today=day, rng=streams["tasks"], tz=tz))
            activities = activities_frame(
                plan=plan, contacts=contacts, team=team, today=day, rng=streams["activities"], tz=tz
            )
            write(Activity, "activities", activities)
            write(Ticket, "tickets", tickets_frame(plan=plan, today=day, rng=streams["tickets"], tz=tz))
            write(Invoice, "invoices", invoices_frame(plan=plan, today=day, rng=streams["invoices"], tz=tz))
            counts.update({label: load.result() for label, load in loads.items()})
        with db.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    return counts


def demo_org_clear(*, org: Organization) -> None:
    """Delete the organization's customer data: its accounts, everything attached to them
    (scores and signals included) and its nightly-run records; members and settings stay."""
    from signals.models import NightlyRun

    with tenant(org):
        Account.objects.filter(org=org).delete()
        NightlyRun.objects.filter(org=org).delete()


def demo_org_delete(*, org: Organization) -> None:
    """Delete a demo organization with all its data and its demo users (…@<slug>.demo)."""
    with tenant(org):
        demo_users = get_user_model().objects.filter(username__endswith=f"@{org.slug}.demo")
        demo_users.delete()
        Organization.objects.filter(pk=org.pk).delete()
