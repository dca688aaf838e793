from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization
from accounts.services import api_token_create


class Command(BaseCommand):
    help = "Print a new API token for a member: use it as `Authorization: Token KEY`."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("email")

    def handle(self, *args, slug, email, **options):
        org = Organization.objects.filter(slug=slug).first()
        if org is None:
            raise CommandError(f"No organization with slug {slug!r}.")
        user = get_user_model().objects.filter(username=email.strip().lower()).first()
        if user is None:
            raise CommandError(f"No user {email}.")
        try:
            key = api_token_create(org=org, user=user)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stdout.write(key)
