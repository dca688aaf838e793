"""The nightly run of one organization for one date: sync, health, signals, ranking, notify.

Idempotent: running a date again recomputes the same scores, signals and ranks. The computing
stages share one transaction, so a failure leaves the previous state of that day untouched; the
run record is written in transactions of its own, so a failure is recorded even as it rolls back.
"""

import importlib
import importlib.util
import logging
import time
from contextlib import contextmanager
from datetime import date, timedelta

from csm.tenancy import tenant
from health.portfolio import portfolio_prime
from health.scoring import localize
from health.selectors import health_model_current, org_frames, scores_frame
from health.services import health_model_ensure, health_scores_compute
from signals.models import NightlyRun
from signals.services import (
    nightly_record_failure,
    nightly_record_finish,
    nightly_record_start,
    signals_refresh,
    triage_build,
)

log = logging.getLogger(__name__)

STAGES = ("sync", "health", "signals", "ranking", "notify")


def sync_hook(*, org, day: date):
    """Pull the organization's sources first, once the integrations provide `integrations.sync.sync_all`."""
    if importlib.util.find_spec("integrations.sync") is None:
        return None
    sync_all = getattr(importlib.import_module("integrations.sync"), "sync_all", None)
    if sync_all is None:
        return None
    return sync_all(org=org, day=day)


def notify_hook(*, org, day: date, counts: dict) -> None:
    """Tell the team the list is ready; nothing is sent yet."""
    return None


class StageFailed(Exception):
    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} failed: {type(error).__name__}: {error}")
        self.stage = stage


@contextmanager
def _stage(name: str, timings: dict):
    started = time.perf_counter()
    try:
        yield
    except StageFailed:
        raise
    except Exception as error:
        raise StageFailed(name, error) from error
    finally:
        timings[name] = round(time.perf_counter() - started, 3)


def nightly_run(*, org, day: date, sync: bool = True, prime: bool = True) -> NightlyRun:
    """Run the whole pipeline for (org, D) and record it; raises StageFailed after recording a failure.

    `sync=False` skips pulling the sources (a backfill replays history already pulled). `prime`
    leaves the Portfolio's figures in the shared cache once the run has finished.
    """
    with tenant(org):
        run = nightly_record_start(org=org, day=day)
    timings: dict = {}
    counts: dict = {}
    try:
        if sync:
            with _stage("sync", timings):
                summary = sync_hook(org=org, day=day)
            if summary:
                counts["sync"] = summary
        with tenant(org):
            # Two runs of the same organization and date (a retry overlapping a late worker)
            # queue here instead of interleaving their writes.
            NightlyRun.objects.select_for_update().filter(pk=run.pk).first()
            with _stage("read", timings):
                model = health_model_current(org=org) or health_model_ensure(org=org)
                raw = org_frames(org=org, day=day, stale_after_days=model.stale_after_days)
                frames = localize(raw, tz=org.tz, day=day)
            with _stage("health", timings):
                previous = scores_frame(org=org, day=day - timedelta(days=1))
                counts.update(health_scores_compute(org=org, day=day, frames=frames, previous=previous))
            with _stage("signals", timings):
                counts.update(signals_refresh(org=org, day=day, frames=frames, previous_scores=previous))
            with _stage("ranking", timings):
                counts.update(triage_build(org=org, day=day, accounts=frames.accounts))
        with _stage("notify", timings):
            notify_hook(org=org, day=day, counts=counts)
    except Exception as error:
        failure = error if isinstance(error, StageFailed) else StageFailed("run", error)
        log.exception("nightly run of %s for %s: %s", org.slug, day, failure)
        with tenant(org):
            nightly_record_failure(org=org, run=run, timings=timings, counts=counts, error=str(failure))
        if failure is error:
            raise
        raise failure from error
    with tenant(org):
        run = nightly_record_finish(org=org, run=run, timings=timings, counts=counts)
    if prime:
        portfolio_prime(org=org)
    return run
