"""`make demo`: migrate, load the demo organizations once, run the nightly, serve with worker and beat."""

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import Organization

DEMO_ORGS = (
    # slug, name, time zone, accounts, seed
    ("demo", "Demo Software Inc.", "Europe/Paris", 400, 7),
    ("globex", "Globex Analytics", "America/New_York", 60, 11),
)
PASSWORD = "vigil-demo"


class Command(BaseCommand):
    help = "Run the app with demo data: migrations, demo organizations, a nightly run, web + worker + beat."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--no-serve", action="store_true", help="prepare the data and stop")

    def handle(self, *args, addr, no_serve, **options):
        call_command("migrate", verbosity=0)
        for slug, name, tz, accounts, seed in DEMO_ORGS:
            org = Organization.objects.filter(slug=slug).first()
            if org is not None and self._has_accounts(org):
                self.stdout.write(f"Reusing organization {slug}; refreshing today's nightly run.")
                call_command("run_nightly", "--org", slug)
                continue
            self.stdout.write(f"Creating organization {slug} with {accounts} accounts…")
            # --replace also mends an organization left empty by an interrupted first demo.
            call_command("demo_data", org=slug, accounts=accounts, seed=seed, name=name, timezone=tz, replace=True)
            call_command("backfill", org=slug, days=30)
        # One person in both organizations shows the organization switcher.
        from accounts.services import member_add

        member_add(org=Organization.objects.get(slug="globex"), email="leader@demo.demo", role="leader")
        call_command("collectstatic", interactive=False, verbosity=0)
        if no_serve:
            return
        self._serve(addr)

    @staticmethod
    def _has_accounts(org) -> bool:
        from accounts.models import Account
        from csm.tenancy import tenant

        with tenant(org):
            return Account.objects.filter(org=org).exists()

    def _serve(self, addr: str) -> None:
        python = sys.executable
        children = [
            subprocess.Popen([python, "-m", "celery", "-A", "csm", "worker", "--loglevel=WARNING", "--concurrency=2"]),
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "csm",
                    "beat",
                    "--loglevel=WARNING",
                    f"--schedule={settings.BASE_DIR / '.vigil' / 'celerybeat-schedule'}",
                ]
            ),
            subprocess.Popen([python, "manage.py", "runserver", addr, "--noreload"], cwd=settings.BASE_DIR),
        ]
        self.stdout.write(
            self.style.SUCCESS(
                f"\nVigil is running at http://{addr}/\n"
                f"  CSM:     csm1@demo.demo / {PASSWORD}\n"
                f"  Leader:  leader@demo.demo / {PASSWORD}  (also in Globex: use the switcher)\n"
                f"  AM:      am1@demo.demo / {PASSWORD}\n"
                f"  Admin:   admin@demo.demo / {PASSWORD}\n"
                "Press Ctrl-C to stop the web server, worker and beat.\n"
            )
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            self.stdout.write("Stopped. The embedded PostgreSQL and Redis keep the data; `make stop` stops them.")
