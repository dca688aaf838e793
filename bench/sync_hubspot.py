"""HubSpot sync of 100,000 companies from the local fake server, against plain COPY of the same rows.

    .venv/bin/python bench/sync_hubspot.py --companies 100000

Works in a scratch database of its own on the same PostgreSQL server (created and migrated like the
test database, dropped at the end). The fake HubSpot (tests/integrations/hubspot_fake.py) runs in a
child process, so its JSON encoding does not share this process's interpreter and its records do
not count in this process's memory. The child also writes the same companies as a CSV file.

Measured, each up to and including its commits:
  - the first sync: every company becomes an account (owners first, then companies; contacts and
    deals are empty), with the time spent waiting on HTTP (request, answer, JSON) apart;
  - the same sync again from an empty cursor: every company read again, nothing changes;
  - COPY of the same rows (the CSV the fake wrote) into a bare scratch table: the floor.
Peak memory is this process's maximum resident set size (ru_maxrss), before and after the syncs.
Searches are not paced here (the connector waits 0.2 s between them for HubSpot's limit of five
searches a second, which alone caps a real sync at 5 × 200 = 1,000 records a second).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csm.settings")

BARE = "bench_hubspot_copy_bare"
SCRATCH_DATABASE = "vigil_bench_sync_hubspot"
COLUMNS = ["id", "name", "domain", "hubspot_owner_id", "lifecyclestage", "createdate", "hs_lastmodifieddate"]
OWNERS = 20


def serve(companies: int, csv_path: str) -> None:
    """Child process: a fake HubSpot holding `companies` companies; prints its URL, serves until stdin closes."""
    import csv

    from tests.integrations.hubspot_fake import HubSpotFake

    fake = HubSpotFake()
    made = fake.populate(companies=companies, owners=OWNERS, share=3)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for company in made["companies"]:
            props = company["properties"]
            writer.writerow([company["id"], *(props.get(name) or "" for name in COLUMNS[1:])])
    owners = [owner["email"] for owner in made["owners"]]
    with fake:
        print(json.dumps({"url": fake.url, "owners": owners}), flush=True)
        sys.stdin.read()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.companies, args.csv)
        return

    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from django.conf import settings
    from django.db import connection
    from psycopg import sql

    from accounts.models import Account
    from accounts.services import member_add, org_create
    from csm.db_roles import app_role_name, as_owner
    from csm.tenancy import tenant
    from integrations import http
    from integrations.models import Connection
    from integrations.providers.hubspot import HubSpotConnector
    from integrations.services import connection_save
    from integrations.sync import connection_sync
    from tests.integrations.hubspot_fake import TOKEN

    HubSpotConnector.search_interval = 0
    settings.VIGIL_SYNC_REQUEST_BUDGET = max(settings.VIGIL_SYNC_REQUEST_BUDGET, args.companies // 100 + 100)
    waited = {"seconds": 0.0, "requests": 0}
    request = http.ProviderClient.request

    def timed_request(self, *a, **kw):
        started = time.perf_counter()
        try:
            return request(self, *a, **kw)
        finally:
            waited["seconds"] += time.perf_counter() - started
            waited["requests"] += 1

    http.ProviderClient.request = timed_request
    # Matching (integrations/matching.py, shared by every connector) timed apart from the rest.
    from integrations.providers import hubspot as connector_module

    matching = {"seconds": 0.0}

    def timed(function):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return function(*a, **kw)
            finally:
                matching["seconds"] += time.perf_counter() - started

        return wrapper

    for name in ("resolve_accounts", "remember_sources"):
        setattr(connector_module, name, timed(getattr(connector_module, name)))

    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-hubspot-"))
    csv_path = workdir / "companies.csv"
    print(f"Starting a fake HubSpot with {args.companies:,} companies …", flush=True)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--companies", str(args.companies), "--csv", str(csv_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    connection.settings_dict["TEST"] = {**connection.settings_dict["TEST"], "NAME": SCRATCH_DATABASE}
    with as_owner():
        original = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        started_fake = json.loads(child.stdout.readline())
        org = org_create(slug="bench-hubspot", name="HubSpot sync benchmark (scratch)", timezone_name="UTC")
        for email in started_fake["owners"]:
            member_add(org=org, email=email, role="csm")
        with tenant(org):
            hubspot = connection_save(
                org=org, provider="hubspot", secrets={"access_token": TOKEN}, settings={"api_base": started_fake["url"]}
            )
        size = csv_path.stat().st_size / 2**20
        print(f"{args.companies:,} companies ({size:.1f} MiB as CSV), {OWNERS} owners; same server, same run\n")

        def timed_sync() -> tuple[float, object, float]:
            waited.update(seconds=0.0, requests=0)
            matching.update(seconds=0.0)
            begin = time.perf_counter()
            run = connection_sync(org=org, connection=hubspot, trigger="manual")
            return time.perf_counter() - begin, run, waited["seconds"]

        rss_before = peak_rss_mib()
        first, first_run, first_http = timed_sync()
        first_requests, first_matching = waited["requests"], matching["seconds"]
        assert first_run.status == "succeeded", first_run.error
        assert first_run.created == args.companies, first_run.created
        with tenant(org):
            assert Account.objects.filter(org=org).count() == args.companies
            with_csm = Account.objects.filter(org=org, csm__isnull=False).count()
            Connection.objects.filter(pk=hubspot.pk).update(cursors={})
            hubspot.refresh_from_db()
        again, again_run, again_http = timed_sync()
        assert again_run.status == "succeeded" and (again_run.created, again_run.updated) == (0, 0), again_run
        rss_after = peak_rss_mib()
        again_matching = matching["seconds"]

        with as_owner(), connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {BARE} (id text, name text, domain text, owner text, lifecycle text, "
                           "created timestamptz, modified timestamptz)")  # fmt: skip
            cursor.execute(
                sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
                    sql.Identifier(BARE), sql.Identifier(app_role_name())
                )
            )
        begin = time.perf_counter()
        with tenant(org), connection.cursor() as cursor:
            with cursor.copy(f"COPY {BARE} FROM STDIN (FORMAT csv)") as copy, open(csv_path, "rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
        bare = time.perf_counter() - begin

        def line(label: str, seconds: float) -> None:
            print(
                f"  {label:<52} {seconds:7.2f} s {args.companies / seconds:>10,.0f} records/s"
                f"  {seconds / bare:6.1f}x COPY"
            )

        def part(label: str, seconds: float, rate: bool = False) -> None:
            per_second = f" {args.companies / seconds:>10,.0f} records/s" if rate else ""
            print(f"      {label:<48} {seconds:7.2f} s{per_second}")

        line("COPY of the same rows into a bare table", bare)
        line("first sync: every company becomes an account", first)
        part(f"waiting on HTTP ({first_requests} requests, JSON decoded)", first_http)
        part(f"matching and writing ({first_run.pages} pages committed)", first - first_http, rate=True)
        part("  of which resolve_accounts + remember_sources", first_matching)
        line("sync again from an empty cursor, nothing changes", again)
        part("waiting on HTTP", again_http)
        part("matching and writing", again - again_http, rate=True)
        part("  of which resolve_accounts + remember_sources", again_matching)
        print(f"\n  accounts with a CSM from the owner's e-mail: {with_csm:,}")
        print(
            f"  peak resident memory: {rss_before:,.0f} MiB before the syncs, {rss_after:,.0f} MiB after "
            f"(+{rss_after - rss_before:,.0f} MiB)"
        )
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        # Dropping the scratch database removes the organization, its accounts and the COPY table.
        with as_owner():
            connection.creation.destroy_test_db(original, verbosity=0)
        csv_path.unlink(missing_ok=True)
        workdir.rmdir()


if __name__ == "__main__":
    main()
