import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.imports import KINDS, CsvImportError, csv_import
from accounts.models import Organization


class Command(BaseCommand):
    help = "Import a CSV file of one kind into an organization; a file with any invalid row is rejected whole."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, metavar="SLUG", help="the organization's slug")
        parser.add_argument("kind", choices=KINDS)
        parser.add_argument("file", type=Path)

    def handle(self, *args, org, kind, file, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organization with slug {org!r}.")
        if not file.is_file():
            raise CommandError(f"No file {file}.")
        bar = _ProgressBar() if self.stdout.isatty() else None
        try:
            result = csv_import(org=organization, kind=kind, file=file, progress=bar)
        except CsvImportError as error:
            for row_error in error.errors:
                self.stderr.write(str(row_error))
            if error.count > len(error.errors):
                self.stderr.write(f"... and {error.count - len(error.errors):,} more.")
            raise CommandError(f"{file.name} was rejected: {error}.") from error
        finally:
            if bar is not None:
                bar.close()
        self.stdout.write(self.style.SUCCESS(str(result)))


class _ProgressBar:
    """Adapts tqdm to the import's progress(stage, rows_done, rows_total) callback."""

    def __init__(self):
        self.bar = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_description(stage)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
