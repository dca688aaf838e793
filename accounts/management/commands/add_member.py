from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization, Role
from accounts.services import member_add


class Command(BaseCommand):
    help = "Add a member to an organization (creates the user if needed)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("email")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", help="sets or resets the user's password")

    def handle(self, *args, slug, email, role, password, **options):
        org = Organization.objects.filter(slug=slug).first()
        if org is None:
            raise CommandError(f"No organization with slug {slug!r}.")
        try:
            membership = member_add(org=org, email=email, role=role, password=password)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(self.style.SUCCESS(f"{membership.user.email} is {role} of {org.slug}."))
