"""The ranked triage list of a day: one item per account with at least one open signal.

Pure: a function of the open signals and the accounts. The list follows the morning review —
new blocked tasks, silent accounts, health drops, go-lives, then proactive work — and inside each
group the priority decides:

    signal score = 3^(severity-1) × deadline proximity × newness
    priority     = value × (best signal score + 0.1 × the other signals' scores)

Severity counts exponentially and extra signals only add a tenth of their score, so a pile of
low-severity signals on a small account never outranks one severe signal on a large account.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

GROUPS = ("blocked", "silent", "health_drop", "go_live", "proactive")
GROUP_OF_TYPE = {"silent_account": "silent", "health_drop": "health_drop", "go_live_soon": "go_live"}
TYPE_LABELS = {
    "blocked_task": "blocked task",
    "silent_account": "silent account",
    "health_drop": "health drop",
    "go_live_soon": "go-live soon",
    "follow_up_due": "follow-up due",
    "renewal_soon": "renewal soon",
    "plan_limit": "near plan limit",
    "payment_failed": "payment failed",
    "support_spike": "support spike",
}
# ARR assumed for ranking when an account has none recorded.
TIER_ARR = {"enterprise": 200_000.0, "strategic": 200_000.0, "mid_market": 50_000.0, "midmarket": 50_000.0}
DEFAULT_ARR = 10_000.0
NEW_BOOST = 1.5
EXTRA_SIGNAL_SHARE = 0.1

TRIAGE_COLUMNS = ["account_id", "rank", "priority", "group", "reasons", "signal_ids"]


def account_value(accounts: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(value factor, whether ARR came from the tier) per account: 10k ARR → 1, 100k → 2, 1M → 3."""
    tier_arr = accounts["tier"].str.lower().map(TIER_ARR).fillna(DEFAULT_ARR)
    from_tier = ~(accounts["arr"] > 0)
    arr = accounts["arr"].where(~from_tier, tier_arr)
    return (np.log10(arr) - 3).clip(lower=0.5, upper=3.0), from_tier


def deadline_factor(days_left: pd.Series) -> pd.Series:
    """2 on the day, 1.5 a week out, about 1.07 three months out; 1 with no deadline."""
    days = days_left.clip(lower=0)
    return (1 + 1 / (1 + days / 7)).fillna(1.0)


def rank_accounts(signals: pd.DataFrame, accounts: pd.DataFrame, *, day: date) -> pd.DataFrame:
    """Rank accounts by their open signals (columns: id, account_id, type, severity, is_new, deadline, cause)."""
    if signals.empty:
        return pd.DataFrame(columns=TRIAGE_COLUMNS)
    d = pd.Timestamp(day)
    accounts = accounts.set_index("account_id")
    value, from_tier = account_value(accounts)

    s = signals.copy()
    deadline = pd.to_datetime(s["deadline"])
    s["days_left"] = (deadline - d).dt.days
    s["score"] = (
        np.power(3.0, s["severity"].astype(float) - 1)
        * deadline_factor(s["days_left"])
        * np.where(s["is_new"].astype(bool), NEW_BOOST, 1.0)
    )
    s["group"] = s["type"].map(GROUP_OF_TYPE).fillna("proactive")
    s.loc[(s["type"] == "blocked_task") & s["is_new"].astype(bool), "group"] = "blocked"
    s["group_order"] = s["group"].map({name: i for i, name in enumerate(GROUPS)})
    s = s.sort_values(["account_id", "score", "severity", "id"], ascending=[True, False, False, True])

    per_account = s.groupby("account_id", sort=False)
    best = per_account["score"].max()
    rest = per_account["score"].sum() - best
    items = pd.DataFrame(
        {
            "priority": (value.reindex(best.index).fillna(0.5) * (best + EXTRA_SIGNAL_SHARE * rest)).round(3),
            "group_order": per_account["group_order"].min(),
        }
    )
    items["group"] = items["group_order"].map(dict(enumerate(GROUPS)))
    items["name"] = accounts["name"].reindex(items.index).fillna("")
    items = items.reset_index().sort_values(
        ["group_order", "priority", "name", "account_id"], ascending=[True, False, True, True]
    )
    items["rank"] = np.arange(1, len(items) + 1)

    # The ids of each account's signals, best first: s is sorted by account, then by score.
    accounts_sorted = s["account_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, accounts_sorted[1:] != accounts_sorted[:-1]])
    id_lists = np.split(s["id"].to_numpy(), starts[1:])
    signal_ids = {int(accounts_sorted[start]): ids.tolist() for start, ids in zip(starts, id_lists, strict=True)}
    top = per_account.head(1).set_index("account_id").to_dict("index")
    counts = per_account.size().to_dict()
    arr = accounts["arr"].fillna(0).to_dict()
    tier = accounts["tier"].fillna("").to_dict()
    currency = accounts["currency"].fillna("USD").to_dict() if "currency" in accounts else {}
    tier_valued = from_tier.to_dict()
    reasons = {
        account_id: _reasons(
            top[account_id],
            others=counts[account_id] - 1,
            arr=float(arr.get(account_id, 0)),
            tier=tier.get(account_id, ""),
            arr_from_tier=tier_valued.get(account_id, True),
            currency=currency.get(account_id, "USD"),
        )
        for account_id in items["account_id"]
    }
    items["reasons"] = items["account_id"].map(reasons)
    items["signal_ids"] = items["account_id"].map(signal_ids)
    return items[TRIAGE_COLUMNS].reset_index(drop=True)


def _reasons(top: dict, *, others: int, arr: float, tier: str, arr_from_tier: bool, currency: str) -> list[str]:
    label = TYPE_LABELS.get(top["type"], top["type"])
    reasons = [f"{'New ' if top['is_new'] else ''}{label}, severity {int(top['severity'])}/5".capitalize()]
    if arr_from_tier:
        reasons.append(f"No ARR recorded; valued by tier {tier or 'unknown'}")
    else:
        reasons.append(f"ARR {_short_money(arr, currency)}")
    if pd.notna(top["days_left"]):
        days = int(top["days_left"])
        reasons.append("Deadline today" if days == 0 else f"Deadline in {days} day{'s' if days != 1 else ''}")
    if others:
        reasons.append(f"{others} more open signal{'s' if others != 1 else ''}")
    return reasons


def _short_money(amount: float, currency: str) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "USD").upper(), "")
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if amount >= size:
            return f"{symbol}{amount / size:.3g}{suffix}" + ("" if symbol else f" {currency}")
    return f"{symbol}{amount:,.0f}" + ("" if symbol else f" {currency}")
