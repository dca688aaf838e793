"""Every signal rule at its boundaries, both sides, in a time zone far from UTC.

The organization is in Los Angeles (UTC-7/-8): a timestamp at 23:30 local is already the next
day in UTC, so a rule comparing UTC dates would get these boundaries wrong.
"""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from health.scoring import Frames, localize
from signals import rules
from signals.rules import Thresholds

TZ = ZoneInfo("America/Los_Angeles")
D = date(2026, 3, 16)


def days(n: int) -> date:
    return D + timedelta(days=n)


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def account(account_id: int, **fields) -> dict:
    return {
        "account_id": account_id,
        "external_id": f"A-{account_id}",
        "name": f"Customer {account_id}",
        "tier": "mid_market",
        "arr": 50_000.0,
        "stage": "steady",
        "created_at": at(date(2025, 1, 1)),
        **fields,
    }


def frames(**sources) -> Frames:
    return localize(Frames.build(**sources), tz=TZ, day=D)


def fired(found: pd.DataFrame) -> set:
    return set(zip(found["account_id"], found["entity_key"], strict=True))


def fired_accounts(found: pd.DataFrame) -> set:
    return set(found["account_id"])


# --- silent_account ----------------------------------------------------------------------------


def test_silent_fires_at_exactly_ten_local_days_and_not_at_nine():
    found = rules.silent_account(
        frames(
            accounts=[account(1), account(2)],
            activities=[
                # 23:30 in Los Angeles on D-10 is 07:30 UTC on D-9: the local date must decide.
                {
                    "account_id": 1,
                    "external_id": "E1",
                    "occurred_at": at(days(-10), 23, 30),
                    "kind": "email",
                    "actor_side": "client",
                    "actor_name": "Jane Doe",
                },
                {
                    "account_id": 2,
                    "external_id": "E2",
                    "occurred_at": at(days(-9), 0, 10),
                    "kind": "email",
                    "actor_side": "client",
                    "actor_name": "Jim Roe",
                },
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired_accounts(found) == {1}
    row = found.iloc[0]
    assert row["cause"] == "No client activity for 10 days — last: e-mail from Jane Doe on 6 Mar"
    assert row["action"] == "proactive outreach today"
    assert row["evidence"]["days_silent"] == 10
    assert row["evidence"]["last_activity"] == "activity:E1"
    assert row["entity_key"] == ""


def test_silent_ignores_vendor_activity_and_counts_client_task_completion():
    found = rules.silent_account(
        frames(
            accounts=[account(1), account(2)],
            activities=[
                {
                    "account_id": 1,
                    "external_id": "V1",
                    "occurred_at": at(days(-1)),
                    "kind": "call",
                    "actor_side": "vendor",
                },
                {
                    "account_id": 2,
                    "external_id": "V2",
                    "occurred_at": at(days(-1)),
                    "kind": "call",
                    "actor_side": "vendor",
                },
            ],
            tasks=[
                {
                    "account_id": 2,
                    "external_id": "T1",
                    "title": "Invite users",
                    "owner_side": "client",
                    "status": "done",
                    "created_at": at(days(-30)),
                    "completed_at": at(days(-9), 0, 5),
                },
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired_accounts(found) == {1}


def test_silent_without_any_client_activity_counts_from_creation():
    found = rules.silent_account(
        frames(accounts=[account(1, created_at=at(days(-10), 23, 59)), account(2, created_at=at(days(-9), 0, 1))]),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired_accounts(found) == {1}
    assert found.iloc[0]["cause"].startswith("No client activity for 10 days — none since the account was created")


def test_silent_never_fires_for_churned_accounts_and_ignores_activity_after_d():
    found = rules.silent_account(
        frames(
            accounts=[account(1, stage="churned"), account(2)],
            activities=[
                # 00:30 local on D+1: after D, however close.
                {
                    "account_id": 2,
                    "external_id": "F1",
                    "occurred_at": at(days(1), 0, 30),
                    "kind": "email",
                    "actor_side": "client",
                },
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired_accounts(found) == {2}


def test_silent_threshold_is_per_organization():
    sources = dict(
        accounts=[account(1)],
        activities=[
            {
                "account_id": 1,
                "external_id": "E",
                "occurred_at": at(days(-5)),
                "kind": "meeting",
                "actor_side": "client",
            }
        ],
    )
    assert fired_accounts(rules.silent_account(frames(**sources), day=D, thresholds=Thresholds(silent_days=5))) == {1}
    assert fired_accounts(rules.silent_account(frames(**sources), day=D, thresholds=Thresholds(silent_days=6))) == set()


# --- blocked_task ------------------------------------------------------------------------------


def blocked(task_id: str, changed: datetime | None, **fields) -> dict:
    return {
        "account_id": 1,
        "external_id": task_id,
        "title": f"Task {task_id}",
        "owner_side": "vendor",
        "status": "blocked",
        "created_at": at(days(-40)),
        "status_changed_at": changed,
        **fields,
    }


def test_blocked_task_is_new_when_blocked_on_or_after_the_previous_run_date():
    sources = dict(
        accounts=[account(1)],
        tasks=[
            blocked("T-1", at(days(-1), 23, 50)),  # D-1 local, D in UTC
            blocked("T-2", at(days(-2), 23, 59)),
            blocked("T-3", at(days(-3), 0, 1)),
        ],
    )
    # No earlier run: P = D-1.
    found = rules.blocked_task(frames(**sources), day=D, previous_run_day=None)
    assert dict(zip(found["entity_key"], found["is_new"], strict=True)) == {
        "task:T-1": True,
        "task:T-2": False,
        "task:T-3": False,
    }
    # The last succeeded run was on D-2 (D-1's failed): what changed on D-2 or later is new.
    found = rules.blocked_task(frames(**sources), day=D, previous_run_day=days(-2))
    assert dict(zip(found["entity_key"], found["is_new"], strict=True)) == {
        "task:T-1": True,
        "task:T-2": True,
        "task:T-3": False,
    }
    assert set(found["action"]) == {"write a response plan today"}


def test_a_task_blocked_after_d_was_not_blocked_on_d():
    found = rules.blocked_task(
        frames(
            accounts=[account(1)], tasks=[blocked("T-9", at(days(1), 0, 5)), {**blocked("T-8", None), "status": "todo"}]
        ),
        day=D,
        previous_run_day=None,
    )
    assert found.empty


# --- go_live_soon ------------------------------------------------------------------------------


def test_go_live_between_d_and_d_plus_7_inclusive_for_onboarding_accounts():
    accounts = [
        account(1, stage="onboarding", go_live_date=days(0)),
        account(2, stage="onboarding", go_live_date=days(7)),
        account(3, stage="onboarding", go_live_date=days(8)),
        account(4, stage="onboarding", go_live_date=days(-1)),
        account(5, stage="adopting", go_live_date=days(3)),
    ]
    found = rules.go_live_soon(frames(accounts=accounts), day=D, thresholds=Thresholds())
    assert fired_accounts(found) == {1, 2}
    assert dict(zip(found["account_id"], found["cause"], strict=True)) == {
        1: "Go-live today, on 16 Mar",
        2: "Go-live in 7 days, on 23 Mar",
    }
    assert dict(zip(found["account_id"], found["deadline"], strict=True)) == {1: days(0), 2: days(7)}


# --- follow_up_due -----------------------------------------------------------------------------


def task(task_id: str, **fields) -> dict:
    return {
        "account_id": 1,
        "external_id": task_id,
        "title": f"Task {task_id}",
        "owner_side": "client",
        "status": "todo",
        "created_at": at(days(-30)),
        **fields,
    }


def test_follow_up_when_a_client_task_is_due_two_or_more_days_before_d():
    found = rules.follow_up_due(
        frames(
            accounts=[account(1)],
            tasks=[
                task("T-1", due_date=days(-2)),
                task("T-2", due_date=days(-1)),
                task("T-3", due_date=days(-5), owner_side="vendor"),
                task("T-4", due_date=days(-5), status="done", completed_at=at(days(-1))),
                # Done, but only after D: on D it was still open.
                task(
                    "T-5",
                    due_date=days(-5),
                    status="done",
                    completed_at=at(days(1), 0, 10),
                    status_changed_at=at(days(1), 0, 10),
                ),
                task("T-6", due_date=days(-3), status="blocked"),
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired(found) == {(1, "task:T-1"), (1, "task:T-5"), (1, "task:T-6")}
    causes = dict(zip(found["entity_key"], found["cause"], strict=True))
    assert causes["task:T-1"] == "Client task “Task T-1” was due on 14 Mar, 2 days ago, and is not done"


# --- renewal_soon ------------------------------------------------------------------------------


def test_renewal_between_d_and_d_plus_90_inclusive():
    accounts = [
        account(1, renewal_date=days(0)),
        account(2, renewal_date=days(90)),
        account(3, renewal_date=days(91)),
        account(4, renewal_date=days(-1)),
        account(5),
    ]
    found = rules.renewal_soon(frames(accounts=accounts), day=D, thresholds=Thresholds())
    assert fired_accounts(found) == {1, 2}
    assert set(found["action"]) == {"prepare the executive summary"}


# --- plan_limit --------------------------------------------------------------------------------


def usage(account_id: int, day: date, seats: int) -> dict:
    return {"account_id": account_id, "date": day, "active_users": seats, "seats_used": seats, "events": 10}


def test_plan_limit_at_eighty_percent_of_seats_on_the_latest_usage_day_up_to_d():
    found = rules.plan_limit(
        frames(
            accounts=[account(i, seat_limit=100) for i in (1, 2, 3, 4)] + [account(5)],
            usage=[
                usage(1, days(-3), 80),
                usage(2, days(0), 79),
                usage(3, days(-4), 90),
                usage(3, days(-3), 85),
                usage(3, days(1), 10),  # D+1 never counts
                usage(4, days(-4), 95),
                usage(4, days(-1), 70),  # the latest day decides
                usage(5, days(0), 1000),  # no seat limit
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired_accounts(found) == {1, 3}
    evidence = dict(zip(found["account_id"], found["evidence"], strict=True))
    assert evidence[3] == {"seats_used": 85, "seat_limit": 100, "percent": 85, "usage_date": "2026-03-13"}


# --- payment_failed ----------------------------------------------------------------------------


def invoice(invoice_id: str, issued: date, status: str, **fields) -> dict:
    return {
        "account_id": 1,
        "external_id": invoice_id,
        "issued_at": issued,
        "amount": 1200.0,
        "currency": "USD",
        "status": status,
        **fields,
    }


def test_payment_failed_for_invoices_issued_in_the_last_thirty_days():
    found = rules.payment_failed(
        frames(
            accounts=[account(1)],
            invoices=[
                invoice("I-1", days(-30), "past_due", due_date=days(-16)),
                invoice("I-2", days(-31), "past_due", due_date=days(-17)),
                invoice("I-3", days(-10), "open", due_date=days(-1)),
                invoice("I-4", days(-10), "open", due_date=days(0)),
                invoice("I-5", days(0), "uncollectible"),
                invoice("I-6", days(-5), "paid", due_date=days(-1), paid_at=at(days(0), 23, 59)),
                # Paid after D: unpaid, and overdue, on D.
                invoice("I-7", days(-5), "paid", due_date=days(-1), paid_at=at(days(1), 0, 1)),
                invoice("I-8", days(1), "past_due"),
                invoice("I-9", days(-3), "void", due_date=days(-2)),
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired(found) == {(1, "invoice:I-1"), (1, "invoice:I-3"), (1, "invoice:I-5"), (1, "invoice:I-7")}
    causes = dict(zip(found["entity_key"], found["cause"], strict=True))
    assert causes["invoice:I-1"] == "Invoice I-1 of $1,200.00 issued on 14 Feb is past due (due 28 Feb)"
    severity = dict(zip(found["entity_key"], found["severity"], strict=True))
    assert severity["invoice:I-5"] > severity["invoice:I-1"]


# --- support_spike -----------------------------------------------------------------------------


def ticket(ticket_id: str, opened: datetime, **fields) -> dict:
    return {
        "account_id": 1,
        "external_id": ticket_id,
        "opened_at": opened,
        "status": "solved",
        "priority": "normal",
        "solved_at": opened + timedelta(hours=1),
        **fields,
    }


def test_an_open_urgent_ticket_is_a_signal_of_its_own():
    found = rules.support_spike(
        frames(
            accounts=[account(1)],
            tickets=[
                ticket("K-1", at(days(-20)), priority="urgent", status="open", solved_at=None),
                ticket("K-2", at(days(-2)), priority="urgent"),  # solved
                ticket("K-3", at(days(-2)), priority="urgent", solved_at=at(days(1), 0, 1)),  # solved after D
                ticket("K-4", at(days(-20)), priority="high", status="open", solved_at=None),
                ticket("K-5", at(days(1), 0, 1), priority="urgent", status="open", solved_at=None),  # after D
            ],
        ),
        day=D,
        thresholds=Thresholds(),
    )
    assert fired(found) == {(1, "ticket:K-1"), (1, "ticket:K-3")}


def spike_tickets(recent: list[datetime], baseline_count: int) -> list[dict]:
    baseline = [ticket(f"B-{i}", at(days(-20))) for i in range(baseline_count)]
    return [ticket(f"R-{i}", when) for i, when in enumerate(recent)] + baseline


def test_support_spike_needs_three_recent_tickets_and_twice_the_weekly_average():
    three_recent = [at(days(-7), 0, 5), at(days(-1), 23, 55), at(days(-4))]
    cases = {
        1: spike_tickets(three_recent, 6),  # average 1.5: 3 >= 2 x 1.5 fires
        2: spike_tickets(three_recent, 7),  # average 1.75: 3 < 3.5
        3: spike_tickets(three_recent[:2], 0),  # only 2 recent
        # One "recent" ticket is on D itself and one at 23:55 on D-8: neither is in D-7..D-1.
        4: spike_tickets([at(days(0), 0, 5), at(days(-8), 23, 55), *three_recent[1:]], 0),
    }
    all_tickets = [
        {**row, "account_id": account_id, "external_id": f"{account_id}-{row['external_id']}"}
        for account_id, rows in cases.items()
        for row in rows
    ]
    found = rules.support_spike(
        frames(accounts=[account(i) for i in cases], tickets=all_tickets), day=D, thresholds=Thresholds()
    )
    assert fired(found) == {(1, "")}
    assert found.iloc[0]["evidence"] == {"opened_last_7_days": 3, "opened_previous_4_weeks": 6, "weekly_average": 1.5}


# --- health_drop -------------------------------------------------------------------------------


def scores(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"account_id": a, "score": s, "band": b, "gate": "", "components": {"usage": s}, "model_version": 1}
            for a, s, b in rows
        ]
    )


def test_health_drop_on_ten_points_or_entering_red():
    today = scores([(1, 60.0, "yellow"), (2, 60.1, "yellow"), (3, 39.0, "red"), (4, 20.0, "red"), (5, 10.0, "red")])
    before = scores([(1, 70.0, "green"), (2, 70.0, "green"), (3, 41.0, "yellow"), (4, 25.0, "red")])
    found = rules.health_drop(today, before, thresholds=Thresholds())
    assert fired_accounts(found) == {1, 3}
    causes = dict(zip(found["account_id"], found["cause"], strict=True))
    assert causes[1] == "Health fell 10 points to 60 (yellow) — usage 70→60"
    assert causes[3].startswith("Health entered the red band at 39 (from 41, yellow)")


def test_no_health_drop_without_a_score_the_day_before():
    assert rules.health_drop(scores([(1, 10.0, "red")]), scores([]), thresholds=Thresholds()).empty


def test_evaluate_runs_every_rule_together():
    found = rules.evaluate(
        frames(
            accounts=[account(1, stage="onboarding", go_live_date=days(2), renewal_date=days(30))],
            tasks=[blocked("T-1", at(days(0), 1))],
        ),
        day=D,
        thresholds=Thresholds(),
        previous_run_day=None,
    )
    assert set(found["type"]) == {"blocked_task", "silent_account", "go_live_soon", "renewal_soon"}
    assert list(found.columns) == rules.SIGNAL_COLUMNS


def test_a_task_done_by_d_stays_done_whatever_changed_later_and_done_without_a_time_counts_from_its_change():
    sources = dict(
        accounts=[account(1)],
        tasks=[
            # Completed before D; its status was touched again after D.
            task("T-1", due_date=days(-5), status="done", completed_at=at(days(-4)), status_changed_at=at(days(2))),
            # Done with no completion time: completed when its status changed, 3 days before D.
            task("T-2", due_date=days(-5), status="done", status_changed_at=at(days(-3), 23, 50)),
        ],
    )
    assert rules.follow_up_due(frames(**sources), day=D, thresholds=Thresholds()).empty
    touch = rules.last_client_touch(frames(**sources)).loc[1]
    assert (touch["ref"], touch["on"]) == ("task:T-2", pd.Timestamp(days(-3)))
