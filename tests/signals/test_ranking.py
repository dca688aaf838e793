"""The ranked list: the order of the morning review, then severity × value × deadline × newness."""

from datetime import date, timedelta

import pandas as pd

from signals.ranking import rank_accounts

D = date(2026, 3, 16)
_ids = iter(range(1, 10_000))


def accounts(*rows) -> pd.DataFrame:
    return pd.DataFrame(
        [{"account_id": a, "name": name, "arr": arr, "tier": tier, "currency": "USD"} for a, name, arr, tier in rows]
    )


def signal(account_id: int, type_: str, severity: int, *, is_new: bool = False, deadline: date | None = None):
    return {
        "id": next(_ids),
        "account_id": account_id,
        "type": type_,
        "severity": severity,
        "is_new": is_new,
        "deadline": deadline,
        "cause": type_,
    }


def ranked(signals: list[dict], accounts_frame: pd.DataFrame) -> list[int]:
    return rank_accounts(pd.DataFrame(signals), accounts_frame, day=D)["account_id"].tolist()


def test_new_blocked_tasks_and_silent_high_value_accounts_come_before_routine_renewals():
    frame = accounts((1, "Renewing", 900_000, ""), (2, "Blocked", 20_000, ""), (3, "Silent", 300_000, ""))
    order = ranked(
        [
            signal(1, "renewal_soon", 2, is_new=True, deadline=D + timedelta(days=60)),
            signal(2, "blocked_task", 4, is_new=True),
            signal(3, "silent_account", 4),
        ],
        frame,
    )
    assert order == [2, 3, 1]


def test_many_low_severity_signals_on_a_small_account_do_not_outrank_one_severe_signal_on_a_large_one():
    frame = accounts((1, "Small", 5_000, ""), (2, "Large", 400_000, ""))
    order = ranked(
        [signal(1, "follow_up_due", 2, is_new=True) for _ in range(6)]
        + [signal(1, "plan_limit", 1, is_new=True), signal(1, "renewal_soon", 2, deadline=D)]
        + [signal(2, "payment_failed", 4)],
        frame,
    )
    assert order == [2, 1]


def test_within_a_group_value_deadline_and_newness_decide():
    frame = accounts((1, "Far", 100_000, ""), (2, "Near", 100_000, ""), (3, "Tier only", 0, "enterprise"))
    items = rank_accounts(
        pd.DataFrame(
            [
                signal(1, "renewal_soon", 2, deadline=D + timedelta(days=80)),
                signal(2, "renewal_soon", 2, deadline=D + timedelta(days=5)),
                signal(3, "renewal_soon", 2, deadline=D + timedelta(days=80), is_new=True),
            ]
        ),
        frame,
        day=D,
    )
    assert items["account_id"].tolist() == [3, 2, 1]
    assert items["rank"].tolist() == [1, 2, 3]
    assert set(items["group"]) == {"proactive"}
    reasons = dict(zip(items["account_id"], items["reasons"], strict=True))
    assert reasons[2] == ["Renewal soon, severity 2/5", "ARR $100k", "Deadline in 5 days"]
    assert reasons[3][:2] == ["New renewal soon, severity 2/5", "No ARR recorded; valued by tier enterprise"]


def test_groups_follow_the_morning_review_and_items_list_their_signals_best_first():
    frame = accounts(*[(i, f"Customer {i}", 50_000, "") for i in range(1, 6)])
    signals = [
        signal(1, "renewal_soon", 2),
        signal(2, "go_live_soon", 3, deadline=D),
        signal(3, "health_drop", 4),
        signal(4, "silent_account", 4),
        signal(5, "blocked_task", 4, is_new=True),
        signal(5, "follow_up_due", 2),
        signal(1, "blocked_task", 4, is_new=False),  # an old blocked task is proactive work
    ]
    items = rank_accounts(pd.DataFrame(signals), frame, day=D)
    assert list(zip(items["account_id"], items["group"], strict=True)) == [
        (5, "blocked"),
        (4, "silent"),
        (3, "health_drop"),
        (2, "go_live"),
        (1, "proactive"),
    ]
    assert items.iloc[0]["signal_ids"] == [signals[4]["id"], signals[5]["id"]]
    assert items.iloc[0]["reasons"][-1] == "1 more open signal"


def test_no_open_signal_no_item():
    assert rank_accounts(pd.DataFrame(), accounts((1, "Quiet", 1, "")), day=D).empty
