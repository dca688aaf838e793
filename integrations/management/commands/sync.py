from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization
from csm.tenancy import tenant
from integrations.models import Connection
from integrations.sync import connection_sync


class Command(BaseCommand):
    help = "Sync an organization's connections now (all, or one provider)."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--provider")

    def handle(self, *args, org, provider, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organization with slug {org!r}.")
        with tenant(organization):
            connections = Connection.objects.filter(org=organization).exclude(status="disconnected")
            if provider:
                connections = connections.filter(provider=provider)
            connections = list(connections)
        if not connections:
            raise CommandError("No connection to sync.")
        failed = False
        for connection in connections:
            run = connection_sync(org=organization, connection=connection, trigger="manual")
            self.stdout.write(
                f"{connection.get_provider_display()}: {run.status} — {run.pages} pages, {run.created} created, "
                f"{run.updated} updated, {run.unmatched} unmatched{(' — ' + run.error) if run.error else ''}"
            )
            failed = failed or run.status == "failed"
        if failed:
            raise CommandError("At least one sync failed.")
