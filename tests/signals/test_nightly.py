"""The nightly pipeline against the database: signals, their lifecycle, the triage list, the run record."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from csm.tenancy import tenant
from health.models import HealthScore
from signals.models import NightlyRun, Signal, TriageItem
from signals.pipeline import nightly_run
from signals.selectors import latest_run, triage_for_day
from signals.services import signal_done, signal_snooze
from tests.factories import (
    local_dt,
    make_account,
    make_activity,
    make_invoice,
    make_member,
    make_org,
    make_task,
    make_ticket,
    make_usage,
)

pytestmark = pytest.mark.django_db

D = date(2026, 3, 16)


def days(n: int) -> date:
    return D + timedelta(days=n)


@pytest.fixture
def org():
    # Tokyo is UTC+9: 08:30 local on D is still D-1 in UTC.
    return make_org(timezone_name="Asia/Tokyo")


def active_signals(org) -> dict[tuple[str, str, str], Signal]:
    with tenant(org):
        return {
            (s.account.name, s.type, s.entity_key): s
            for s in Signal.objects.filter(org=org, cleared_on__isnull=True).select_related("account")
        }


def all_rows(org) -> dict[str, list]:
    with tenant(org):
        return {
            "signals": list(Signal.objects.filter(org=org).order_by("pk").values()),
            "scores": list(HealthScore.objects.filter(org=org).order_by("pk").values()),
            "triage": list(TriageItem.objects.filter(org=org).order_by("pk").values()),
        }


def test_one_run_finds_each_kind_of_signal_with_its_cause_and_records_the_run(org):
    busy = make_account(
        org, name="Busy", stage="onboarding", go_live_date=days(3), renewal_date=days(60), seat_limit=10
    )
    make_activity(org, busy, occurred_at=local_dt(org, days(-1)), actor_name="Jane Doe")
    make_task(
        org,
        busy,
        external_id="T-blocked",
        status="blocked",
        owner_side="vendor",
        status_changed_at=local_dt(org, days(0), 8),
    )
    make_task(org, busy, external_id="T-late", title="Send the user list", due_date=days(-2))
    make_usage(org, busy, day=days(-1), seats_used=8)
    make_invoice(org, busy, external_id="INV-1", issued_at=days(-20), status="past_due", due_date=days(-5))
    make_ticket(org, busy, external_id="TK-1", priority="urgent", opened_at=local_dt(org, days(-2)))
    quiet = make_account(org, name="Quiet")
    make_activity(org, quiet, occurred_at=local_dt(org, days(-12), 23), actor_name="Jim Roe")

    run = nightly_run(org=org, day=D)

    assert run.status == "succeeded" and run.attempts == 1 and run.error == ""
    assert set(run.stage_timings) >= {"sync", "health", "signals", "ranking", "notify"}
    assert run.counts["signals_holding"] == 8 and run.counts["triage_items"] == 2
    signals = active_signals(org)
    assert set(signals) == {
        ("Busy", "blocked_task", "task:T-blocked"),
        ("Busy", "go_live_soon", ""),
        ("Busy", "follow_up_due", "task:T-late"),
        ("Busy", "renewal_soon", ""),
        ("Busy", "plan_limit", ""),
        ("Busy", "payment_failed", "invoice:INV-1"),
        ("Busy", "support_spike", "ticket:TK-1"),
        ("Quiet", "silent_account", ""),
    }
    silent = signals[("Quiet", "silent_account", "")]
    assert silent.cause == "No client activity for 12 days — last: e-mail from Jim Roe on 4 Mar"
    assert silent.is_new and silent.first_seen == D and silent.status == "open"
    assert signals[("Busy", "blocked_task", "task:T-blocked")].is_new
    with tenant(org):
        items = triage_for_day(org=org, day=D)
        assert latest_run(org=org).pk == run.pk
    assert [entry.account.name for entry in items] == ["Busy", "Quiet"]
    assert items[0].item.group == "blocked" and items[1].item.group == "silent"
    assert items[0].health is not None
    assert items[0].item.reasons[0] == "New blocked task, severity 4/5"


def test_two_runs_of_the_same_day_leave_identical_rows(org):
    account = make_account(org, name="Acme", renewal_date=days(10), seat_limit=5)
    make_usage(org, account, day=days(-1), seats_used=5)
    make_task(org, account, status="blocked", status_changed_at=local_dt(org, days(-1)))
    make_invoice(org, account, issued_at=days(-3), status="open", due_date=days(-1))

    nightly_run(org=org, day=D)
    first = all_rows(org)
    nightly_run(org=org, day=D)

    assert all_rows(org) == first
    assert len(first["signals"]) == 5 and len(first["scores"]) == 1 and len(first["triage"]) == 1
    with tenant(org):
        assert NightlyRun.objects.get(org=org, run_date=D).attempts == 2


def test_next_day_keeps_done_signals_done_clears_what_went_away_and_restarts_what_came_back(org):
    user = make_member(org)
    account = make_account(org, name="Acme", renewal_date=days(30))
    task = make_task(org, account, external_id="T-1", due_date=days(-3))
    make_task(org, account, external_id="T-2", due_date=days(-4))
    make_activity(org, account, occurred_at=local_dt(org, days(-2)))
    nightly_run(org=org, day=D)
    signals = active_signals(org)
    with tenant(org):
        signal_done(org=org, signal=signals[("Acme", "renewal_soon", "")], user=user)
        signal_done(org=org, signal=signals[("Acme", "follow_up_due", "task:T-1")], user=user)
        # The client finishes T-1 after the first run; T-2 stays late.
        task.status, task.completed_at, task.status_changed_at = "done", local_dt(org, days(1)), local_dt(org, days(1))
        task.save()

    nightly_run(org=org, day=days(1))

    signals = active_signals(org)
    renewal = signals[("Acme", "renewal_soon", "")]
    assert renewal.status == "done" and renewal.last_seen == days(1) and not renewal.is_new
    assert ("Acme", "follow_up_due", "task:T-1") not in signals
    assert signals[("Acme", "follow_up_due", "task:T-2")].status == "open"
    with tenant(org):
        closed = Signal.objects.get(org=org, entity_key="task:T-1")
        assert closed.cleared_on == days(1) and closed.status == "done"
        # The client reopens T-1: a new open signal starts; the closed one stays closed.
        task.status, task.completed_at, task.status_changed_at = "todo", None, local_dt(org, days(2))
        task.save()
    nightly_run(org=org, day=days(2))
    with tenant(org):
        rows = list(Signal.objects.filter(org=org, entity_key="task:T-1").order_by("pk"))
    assert [(s.status, s.first_seen, s.cleared_on, s.is_new) for s in rows] == [
        ("done", D, days(1), True),
        ("open", days(2), None, True),
    ]


def test_a_snoozed_signal_returns_when_its_snooze_ends_if_the_condition_still_holds(org):
    user = make_member(org)
    account = make_account(org, name="Acme", renewal_date=days(30))
    make_activity(org, account, occurred_at=local_dt(org, days(-1)))
    nightly_run(org=org, day=D)
    with tenant(org):
        signal = Signal.objects.get(org=org, type="renewal_soon")
        signal_snooze(org=org, signal=signal, until=days(2), user=user)
        assert triage_for_day(org=org, day=D) == []

    nightly_run(org=org, day=days(1))
    with tenant(org):
        signal.refresh_from_db()
        assert signal.status == "snoozed" and signal.last_seen == days(1)
        assert not TriageItem.objects.filter(org=org, date=days(1)).exists()

    nightly_run(org=org, day=days(2))
    with tenant(org):
        signal.refresh_from_db()
        assert signal.status == "open" and signal.snoozed_until is None and signal.cleared_on is None
        assert [entry.account.name for entry in triage_for_day(org=org, day=days(2))] == ["Acme"]


def test_a_blocked_task_is_new_only_on_the_first_run_after_it_became_blocked(org):
    account = make_account(org, name="Acme")
    make_activity(org, account, occurred_at=local_dt(org, days(0)))
    # 23:30 in Tokyo on D-1 is 14:30 UTC on D-1; it became blocked after the run of D-1.
    make_task(org, account, status="blocked", status_changed_at=local_dt(org, days(-1), 23))
    nightly_run(org=org, day=days(-1))
    nightly_run(org=org, day=D)
    assert active_signals(org)[("Acme", "blocked_task", f"task:{_task_id(org)}")].is_new
    nightly_run(org=org, day=days(1))
    signal = active_signals(org)[("Acme", "blocked_task", f"task:{_task_id(org)}")]
    assert not signal.is_new and signal.first_seen == days(-1)


def _task_id(org) -> str:
    from accounts.models import Task

    with tenant(org):
        return Task.objects.get(org=org).external_id


def test_organizations_never_see_each_others_signals():
    org_a, org_b = make_org(timezone_name="Asia/Tokyo"), make_org(timezone_name="America/Los_Angeles")
    make_account(org_a, name="Alpha", renewal_date=days(5))
    make_account(org_b, name="Beta", renewal_date=days(6))
    nightly_run(org=org_a, day=D)
    nightly_run(org=org_b, day=D)
    assert {key[0] for key in active_signals(org_a)} == {"Alpha"}
    assert {key[0] for key in active_signals(org_b)} == {"Beta"}


def test_run_nightly_and_backfill_commands(org, capsys):
    account = make_account(org, name="Acme", renewal_date=days(100), arr=Decimal("90000"))
    for n in range(-5, 1):
        make_usage(org, account, day=days(n), active_users=5 + n)

    call_command("run_nightly", "--org", org.slug, "--date", D.isoformat())
    call_command("backfill", "--org", org.slug, "--days", "3", "--until", days(3).isoformat())

    with tenant(org):
        assert list(NightlyRun.objects.filter(org=org).values_list("run_date", "status").order_by("run_date")) == [
            (D, "succeeded"),
            (days(1), "succeeded"),
            (days(2), "succeeded"),
            (days(3), "succeeded"),
        ]
        # The renewal enters the 90-day window on D+10: not yet. Scores exist for every day.
        assert HealthScore.objects.filter(org=org).count() == 4
    assert "Backfilled 3 days" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No organization"):
        call_command("run_nightly", "--org", "nope")
