from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization
from accounts.services import org_create


class Command(BaseCommand):
    help = "Create an organization (the tenant)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/Paris")
        parser.add_argument("--nightly-hour", type=int, default=5, help="local hour the nightly run starts")

    def handle(self, *args, slug, name, timezone, nightly_hour, **options):
        if Organization.objects.filter(slug=slug).exists():
            raise CommandError(f"An organization with slug {slug!r} already exists.")
        try:
            org = org_create(slug=slug, name=name, timezone_name=timezone, nightly_hour=nightly_hour)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(self.style.SUCCESS(f"Created organization {org.slug} ({org.name}, {org.timezone})."))
