"""Celery tasks: thin, taking ids, one organization per task.

The beat schedule (csm/celery.py) runs `nightly_dispatch` every few minutes; it starts each
organization's run once its local nightly hour has passed, at most once per organization and
date (the NightlyRun unique key is the claim). Each organization runs as its own task, so runs
spread over the workers and one organization's failure never touches another's.
"""

import logging
import os
from datetime import date, datetime

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from accounts.models import Organization
from csm.tenancy import tenant
from signals.models import NightlyRun, RunStatus
from signals.pipeline import nightly_run
from signals.services import nightly_claim, nightly_unclaim

log = logging.getLogger(__name__)


def _number(name: str, default: int) -> int:
    # A setting when the project defines one; else the environment (a test worker shortens the backoff).
    value = getattr(settings, name, None)
    return int(value if value is not None else os.environ.get(name, default))


RETRY_BASE_SECONDS = _number("NIGHTLY_RETRY_BASE_SECONDS", 60)
MAX_RETRIES = _number("NIGHTLY_MAX_RETRIES", 4)


def retry_countdown(retries: int) -> int:
    """Exponential backoff: 1, 2, 4, 8... times the base."""
    return RETRY_BASE_SECONDS * 2**retries


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True)
def nightly_for_org(self, org_id: int, day: str) -> str:
    """Run the nightly pipeline of one organization for one date, retrying with backoff on failure."""
    org = Organization.objects.filter(pk=org_id).first()
    if org is None:
        return "organization deleted"
    run_date = date.fromisoformat(day)
    with tenant(org):
        done = NightlyRun.objects.filter(org=org, run_date=run_date, status=RunStatus.SUCCEEDED).exists()
    if done:
        # A redelivered message (acks_late) for a run that finished: nothing to do.
        return "already succeeded"
    try:
        run = nightly_run(org=org, day=run_date)
    except Exception as error:
        # nightly_run has recorded the failure on the NightlyRun; try again later.
        raise self.retry(exc=error, countdown=retry_countdown(self.request.retries)) from error
    return run.status


def organizations_due(*, now: datetime) -> list[tuple[int, date]]:
    """(organization id, local date) of each organization whose local nightly hour has passed.

    Organization is the tenant itself and has no Row Level Security, so it can be listed here.
    """
    due = []
    for org in Organization.objects.order_by("pk"):
        local = now.astimezone(org.tz)
        if local.hour >= org.nightly_hour:
            due.append((org.pk, local.date()))
    return due


@shared_task(bind=True)
def nightly_dispatch(self) -> list[int]:
    """Queue the nightly run of every organization that is due and not yet claimed for its date."""
    # Send the runs where this dispatch came from, so a dedicated queue keeps its work to itself.
    delivery = self.request.delivery_info or {}
    queue = delivery.get("routing_key") or None
    started = []
    for org_id, day in organizations_due(now=timezone.now()):
        try:
            with tenant(org_id):
                claimed = nightly_claim(org=Organization(pk=org_id), day=day)
            if not claimed:
                continue
            try:
                nightly_for_org.apply_async(args=[org_id, day.isoformat()], queue=queue)
            except Exception:
                with tenant(org_id):
                    nightly_unclaim(org=Organization(pk=org_id), day=day)
                raise
            started.append(org_id)
        except Exception:
            log.exception("could not dispatch the nightly run of organization %s for %s", org_id, day)
    return started
