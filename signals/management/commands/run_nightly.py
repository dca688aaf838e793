"""`manage.py run_nightly --org SLUG [--date YYYY-MM-DD]`: the whole pipeline, synchronously."""

from datetime import date, datetime

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization
from signals.pipeline import StageFailed, nightly_run


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"--date must be a date like 2026-03-31, not {value!r}.") from error


def organization(slug: str) -> Organization:
    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        raise CommandError(f"No organization {slug!r}; create it with `manage.py create_org {slug} --name ...`.")
    return org


def run_summary(run) -> str:
    counts, timings = run.counts, run.stage_timings
    seconds = sum(timings.values())
    return (
        f"{run.run_date}: {counts.get('scores', 0)} scores, {counts.get('signals_holding', 0)} signals"
        f" ({counts.get('signals_started', 0)} new, {counts.get('signals_cleared', 0)} cleared),"
        f" {counts.get('triage_items', 0)} accounts to handle — {seconds:.2f} s"
    )


class Command(BaseCommand):
    help = "Run the nightly pipeline (sync, health, signals, ranking, notify) for one organization and date."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, metavar="SLUG")
        parser.add_argument("--date", type=iso_date, help="YYYY-MM-DD (default: today in the organization's zone)")
        parser.add_argument("--no-sync", action="store_true", help="skip pulling the connected sources first")

    def handle(self, *args, org, date, **options):
        org = organization(org)
        day = date or datetime.now(org.tz).date()
        try:
            run = nightly_run(org=org, day=day, sync=not options["no_sync"])
        except StageFailed as failure:
            raise CommandError(f"The nightly run of {org.slug} for {day} failed — {failure}") from failure
        self.stdout.write(self.style.SUCCESS(f"{org.slug} {run_summary(run)}"))
