"""`manage.py backfill --org SLUG --days 90`: run the nightly for each of the last N days, oldest first."""

from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from signals.management.commands.run_nightly import iso_date, organization, run_summary
from signals.pipeline import StageFailed, nightly_run


class Command(BaseCommand):
    help = "Fill history: run the nightly pipeline for D-N+1 .. D in order, so trends exist from day one."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, metavar="SLUG")
        parser.add_argument("--days", type=int, default=90, help="how many days, ending with --until (default 90)")
        parser.add_argument("--until", type=iso_date, help="last day D (default: today in the organization's zone)")

    def handle(self, *args, org, days, until, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        org = organization(org)
        last = until or datetime.now(org.tz).date()
        # Oldest first: each day's health deltas and signal lifecycles build on the day before.
        for offset in range(days - 1, -1, -1):
            day = last - timedelta(days=offset)
            try:
                # No sync: the sources hold today's data already, and pulling them 90 times adds nothing.
                # The Portfolio shows the latest day: its figures are worth preparing once, at the end.
                run = nightly_run(org=org, day=day, sync=False, prime=offset == 0)
            except StageFailed as failure:
                raise CommandError(f"Backfill of {org.slug} stopped at {day} — {failure}") from failure
            if options["verbosity"] >= 1:
                self.stdout.write(f"{org.slug} {run_summary(run)}")
        self.stdout.write(self.style.SUCCESS(f"Backfilled {days} days of {org.slug}, up to {last}."))
