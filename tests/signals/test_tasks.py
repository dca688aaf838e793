"""The Celery side: the dispatcher's schedule and claim, retries, and a real worker on real Redis."""

import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest

from accounts.models import Organization
from csm.celery import app as celery_app
from csm.tenancy import tenant
from health.models import HealthModel
from signals.models import NightlyRun, Signal, TriageItem
from signals.tasks import MAX_RETRIES, nightly_dispatch, nightly_for_org, organizations_due, retry_countdown
from tests.factories import local_dt, make_account, make_activity, make_org


def org_with(hour: int, timezone_name: str) -> Organization:
    org = make_org(timezone_name=timezone_name)
    Organization.objects.filter(pk=org.pk).update(nightly_hour=hour)
    org.refresh_from_db()
    return org


@contextmanager
def eager_tasks():
    """Run tasks in this process (Celery's own eager mode): no message leaves for a shared broker."""
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def break_health_model(org) -> None:
    # A model that cannot be computed (saved around the validating service on purpose).
    with tenant(org):
        HealthModel.objects.create(org=org, version=2, weights={"usage": "heavy"}, bands={}, gates={})


def run_of(org, day: date) -> NightlyRun | None:
    with tenant(org):
        return NightlyRun.objects.filter(org=org, run_date=day).first()


@pytest.mark.django_db
def test_an_organization_is_due_once_its_local_nightly_hour_has_passed():
    tokyo = org_with(5, "Asia/Tokyo")
    los_angeles = org_with(5, "America/Los_Angeles")
    # 19:30 UTC: 04:30 the next morning in Tokyo (not yet), 12:30 (PDT) in Los Angeles.
    assert organizations_due(now=datetime(2026, 3, 16, 19, 30, tzinfo=UTC)) == [(los_angeles.pk, date(2026, 3, 16))]
    assert organizations_due(now=datetime(2026, 3, 16, 20, 0, tzinfo=UTC)) == [
        (tokyo.pk, date(2026, 3, 17)),
        (los_angeles.pk, date(2026, 3, 16)),
    ]


@pytest.mark.django_db
def test_the_dispatcher_starts_each_due_organization_once_per_date_and_isolates_failures():
    healthy, broken = org_with(0, "Asia/Tokyo"), org_with(0, "Europe/Paris")
    make_account(healthy, name="Alpha")
    make_account(broken, name="Beta")
    break_health_model(broken)

    with eager_tasks():
        first = nightly_dispatch.apply().get()
        second = nightly_dispatch.apply().get()

    assert sorted(first) == sorted([healthy.pk, broken.pk]) and second == []
    good = run_of(healthy, datetime.now(healthy.tz).date())
    bad = run_of(broken, datetime.now(broken.tz).date())
    assert (good.status, good.attempts) == ("succeeded", 1)
    # Eager retries skip the countdown: the first try and every retry are on the record.
    assert (bad.status, bad.attempts) == ("failed", MAX_RETRIES + 1)
    assert bad.error.startswith("health failed: ValueError")
    assert "health" in bad.stage_timings


def test_retries_back_off_exponentially():
    assert [retry_countdown(n) for n in range(4)] == [60, 120, 240, 480]


@pytest.mark.django_db
def test_a_redelivered_task_for_a_run_that_succeeded_does_nothing():
    org = org_with(0, "UTC")
    with eager_tasks():
        assert nightly_for_org.apply(args=[org.pk, "2026-03-16"]).get() == "succeeded"
        assert nightly_for_org.apply(args=[org.pk, "2026-03-16"]).get() == "already succeeded"
    assert run_of(org, date(2026, 3, 16)).attempts == 1


def wait_for(check, timeout: float = 120.0, what: str = "the worker"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_each_organizations_nightly_on_its_own_data(celery_worker_queue):
    alpha_org, beta_org = org_with(0, "Asia/Tokyo"), org_with(0, "America/Los_Angeles")
    broken_org = org_with(0, "Europe/Paris")
    alpha_day, beta_day = datetime.now(alpha_org.tz).date(), datetime.now(beta_org.tz).date()
    alpha = make_account(alpha_org, name="Alpha", renewal_date=alpha_day + timedelta(days=30))
    make_activity(alpha_org, alpha, occurred_at=local_dt(alpha_org, alpha_day - timedelta(days=1)))
    make_account(beta_org, name="Beta", created_at=local_dt(beta_org, beta_day - timedelta(days=40)))
    make_account(broken_org, name="Gamma")
    break_health_model(broken_org)

    nightly_dispatch.apply_async(queue=celery_worker_queue)

    def finished(org, day):
        run = run_of(org, day)
        return run if run and run.status == "succeeded" else None

    alpha_run = wait_for(lambda: finished(alpha_org, alpha_day), what="Alpha's run")
    beta_run = wait_for(lambda: finished(beta_org, beta_day), what="Beta's run")
    assert alpha_run.counts["triage_items"] == 1 and beta_run.counts["triage_items"] == 1
    with tenant(alpha_org):
        assert list(Signal.objects.values_list("account__name", "type")) == [("Alpha", "renewal_soon")]
        assert list(TriageItem.objects.values_list("account__name", flat=True)) == ["Alpha"]
    with tenant(beta_org):
        assert list(Signal.objects.values_list("account__name", "type")) == [("Beta", "silent_account")]
        assert list(TriageItem.objects.values_list("account__name", flat=True)) == ["Beta"]

    # The broken organization failed on its own, was recorded, and is being retried with backoff.
    broken_day = datetime.now(broken_org.tz).date()
    retried = wait_for(
        lambda: (run := run_of(broken_org, broken_day)) and run.attempts >= 2 and run.status == "failed" and run,
        what="the failed run's retry",
    )
    assert retried.error.startswith("health failed: ValueError")
