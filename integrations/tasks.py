"""Background syncs started from the Integrations page."""

from celery import shared_task
from django.utils import timezone

from accounts.models import Organization
from csm.tenancy import tenant
from health.portfolio import portfolio_prime
from integrations.models import Connection
from integrations.sync import connection_sync


@shared_task(acks_late=True)
def sync_connection_task(org_id: int, connection_id: int, trigger: str = "manual") -> str:
    """Sync one connection; after the first sync, score and signal at once (same-day diagnosis)."""
    org = Organization.objects.get(pk=org_id)
    with tenant(org):
        connection = Connection.objects.get(org=org, pk=connection_id)
    run = connection_sync(org=org, connection=connection, trigger=trigger)
    if trigger == "first" and run.status != "failed":
        from signals.pipeline import nightly_run

        nightly_run(org=org, day=timezone.now().astimezone(org.tz).date(), sync=False)
    elif run.status != "failed":
        portfolio_prime(org=org)  # the accounts may have changed: have the figures ready again
    return run.status
