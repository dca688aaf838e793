from django.core.management.base import BaseCommand

from accounts.models import Organization
from csm.tenancy import tenant
from integrations.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt every organization's integration credentials with the first key of VIGIL_CREDENTIAL_KEYS."

    def handle(self, *args, **options):
        total = 0
        for org in Organization.objects.order_by("pk"):
            with tenant(org):
                changed = credentials_rotate(org=org)
            total += changed
            if changed:
                self.stdout.write(f"{org.slug}: {changed} connection(s) re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"Done: {total} connection(s) re-encrypted with the newest key."))
