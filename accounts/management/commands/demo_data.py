import time
from datetime import date, datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from accounts.demo import DEMO_PASSWORD, demo_org_clear, demo_org_generate
from accounts.models import Account, Organization
from accounts.services import org_create
from csm.tenancy import tenant


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"--today must be a date like 2026-03-31, not {value!r}.") from error


class _TimedBar:
    """A progress bar for one table that also records how long the table took to load."""

    def __init__(self, label: str, total: int, seconds: dict[str, float]):
        self.label, self.seconds, self.started = label, seconds, time.perf_counter()
        # disable=None: bars only on a terminal, so logs and tests stay clean.
        self.bar = tqdm(total=total, desc=f"{label:<12}", unit=" rows", unit_scale=True, disable=None, leave=False)

    def update(self, rows: int) -> None:
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()
        self.seconds[self.label] = time.perf_counter() - self.started


class Command(BaseCommand):
    help = "Fill an organization with a realistic, deterministic demo team and customer base."
    # Generation touches only our own tables; skipping the project-wide checks keeps a large
    # benchmark run from paying for URL and template checks it does not need.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, metavar="SLUG", help="created if it does not exist")
        parser.add_argument("--accounts", required=True, type=int, metavar="N")
        parser.add_argument("--seed", type=int, default=42, help="same seed and --today give the same data")
        parser.add_argument("--today", type=_iso_date, help="last day of data (default: today in the org's zone)")
        parser.add_argument("--name", help="organization name, when it is created (default: from the slug)")
        parser.add_argument("--timezone", default="Europe/Paris", help="IANA time zone, when it is created")
        parser.add_argument("--replace", action="store_true", help="delete the organization's customer data first")

    def handle(self, *args, org, accounts, seed, today, name, timezone, replace, **options):
        slug = org
        if accounts < 1:
            raise CommandError("--accounts must be at least 1.")
        organization = Organization.objects.filter(slug=slug).first()
        try:
            if organization is None:
                organization = org_create(
                    slug=slug, name=name or slug.replace("-", " ").title(), timezone_name=timezone
                )
                self.stdout.write(f"Created organization {slug} ({organization.name}, {organization.timezone}).")
            with tenant(organization):
                has_accounts = Account.objects.filter(org=organization).exists()
            if has_accounts and not replace:
                raise CommandError(
                    f"{slug} already has accounts. Use --replace to delete its customer data and generate again."
                )
            today = today or datetime.now(organization.tz).date()
            started, load_seconds = time.perf_counter(), {}
            # One transaction: a failed generation leaves the replaced data in place.
            with transaction.atomic():
                if has_accounts:
                    self.stdout.write(f"Deleting the customer data of {slug}…")
                    demo_org_clear(org=organization)
                counts = demo_org_generate(
                    org=organization,
                    accounts=accounts,
                    seed=seed,
                    today=today,
                    progress=lambda label, total: _TimedBar(label, total, load_seconds),
                )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        seconds = time.perf_counter() - started
        for table, rows in counts.items():
            loaded_in = f"  loaded in {load_seconds[table]:.1f} s" if table in load_seconds else ""
            self.stdout.write(f"  {table:<12} {rows:>10,}{loaded_in}")
        self.stdout.write(
            self.style.SUCCESS(f"Generated {slug} for {today} (seed {seed}) in {seconds:.1f} s.")
            + f"\nLog in as admin@{slug}.demo, leader@{slug}.demo, csm1@{slug}.demo or am1@{slug}.demo"
            f" with the password {DEMO_PASSWORD}"
        )
