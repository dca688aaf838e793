"""Usage intake through a real HTTP server against plain COPY of the same rows, in the same run.

    .venv/bin/python bench/intake_events.py --events 1000000

Creates a scratch organization (accounts, a segment connection with a fresh shared secret),
starts gunicorn (the production server, `csm.wsgi`, DEBUG off) on a free local port, and posts the
events as signed Segment-style batches of 1,000 from `--clients` threads: first a `group` call
per user, then `track` calls over 30 days, ~60% naming their account in context.groupId, ~39%
relying on the user's group call, ~1% for workspaces that match no account. Then times:
  - generating and signing the same payloads without sending them (the client's own share);
  - COPY of the same event rows (message id, type, user, group, time, event) from a file written
    beforehand into a bare table (the floor: parsing and heap writes only);
  - the intake, end to end (HTTP, signature, validation, dedup, account resolution, aggregation).
Checks the totals (messages stored, events counted, unmatched), re-posts one batch to show it is
acknowledged as duplicates, prints events/s, ratios and peak memory (server workers and this
client), and removes the scratch organization, table and server afterwards.
"""

import argparse
import json
import logging
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csm.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.utils import timezone  # noqa: E402
from psycopg import sql  # noqa: E402

from accounts.models import Account, Organization, UsageDay  # noqa: E402
from accounts.services import org_create  # noqa: E402
from csm.db_roles import app_role_name, as_owner  # noqa: E402
from csm.tenancy import tenant  # noqa: E402
from integrations.intake import signature_for  # noqa: E402
from integrations.models import IntakeMessage, UnmatchedRecord  # noqa: E402
from integrations.services import connection_save  # noqa: E402

BARE = "bench_intake_copy_bare"
BATCH = 1_000
USERS_PER_ACCOUNT = 10
FIRST_DAY = datetime(2026, 2, 1, tzinfo=UTC)


def batches(*, events: int, accounts: int, days: int, seed: int = 11):
    """The calls to send, 1,000 at a time, the same every run: group calls, then tracks in time order."""
    rng = random.Random(seed)
    users = accounts * USERS_PER_ACCOUNT
    sent = 0

    def message(n: int) -> str:
        return f"bench-{n:09d}"

    def context() -> dict:
        return {"library": {"name": "analytics.js", "version": "4.1.0"}, "ip": "203.0.113.7"}

    group_calls = min(users, events)
    tracks = events - group_calls
    span = days * 86_400
    while sent < events:
        calls = []
        for n in range(sent, min(sent + BATCH, events)):
            if n < group_calls:
                user = n
                calls.append(
                    {
                        "type": "group",
                        "userId": f"user-{user}",
                        "groupId": f"ACME-{user % accounts:05d}",
                        "traits": {"name": f"Customer {user % accounts}", "plan": "growth"},
                        "timestamp": (FIRST_DAY - timedelta(hours=1)).isoformat(),
                        "messageId": message(n),
                        "context": context(),
                    }
                )
                continue
            user = rng.randrange(users)
            at = FIRST_DAY + timedelta(seconds=(n - group_calls) * span // max(tracks, 1) + rng.randrange(60))
            call = {
                "type": "track",
                "event": rng.choice(("Report Viewed", "Dashboard Opened", "Export Created", "Alert Set")),
                "userId": f"user-{user}",
                "properties": {"plan": "growth", "items": rng.randrange(1, 50)},
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "messageId": message(n),
                "context": context(),
            }
            roll = rng.random()
            if roll < 0.60:
                call["context"]["groupId"] = f"ACME-{user % accounts:05d}"
            elif roll < 0.61:
                call["context"]["groupId"] = f"WS-UNKNOWN-{user % 97}"
            calls.append(call)
        sent += len(calls)
        yield calls


def encoded(calls: list[dict], secret: str) -> tuple[bytes, str]:
    body = json.dumps({"batch": calls}, separators=(",", ":")).encode()
    return body, signature_for(secret=secret, body=body)


def time_generation(args, secret: str) -> float:
    started = time.perf_counter()
    for calls in batches(events=args.events, accounts=args.accounts, days=args.days):
        encoded(calls, secret)
    return time.perf_counter() - started


def time_copy(org: Organization, args, workdir: Path) -> float:
    """COPY from a file written beforehand (untimed), as bench/import_usage.py does: the server's share only."""
    path = workdir / "events.tsv"
    with open(path, "w") as handle:
        for calls in batches(events=args.events, accounts=args.accounts, days=args.days):
            for call in calls:
                group = call.get("groupId") or call["context"].get("groupId") or "\\N"
                event = call.get("event") or "\\N"
                handle.write(
                    f"{call['messageId']}\t{call['type']}\t{call['userId']}\t{group}\t{call['timestamp']}\t{event}\n"
                )
    with as_owner(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {BARE}")
        cursor.execute(
            f"CREATE TABLE {BARE} (message_id text, type text, user_id text, group_id text,"
            " occurred_at timestamptz, event text)"
        )
        grant = sql.SQL("GRANT INSERT ON {} TO {}")
        cursor.execute(grant.format(sql.Identifier(BARE), sql.Identifier(app_role_name())))
    started = time.perf_counter()
    with tenant(org), connection.cursor() as cursor:
        statement = f"COPY {BARE} (message_id, type, user_id, group_id, occurred_at, event) FROM STDIN"
        with cursor.copy(statement) as copy, open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                copy.write(block)
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    keys = settings.VIGIL_CREDENTIAL_KEYS
    if not keys:
        from integrations.credentials import _dev_key_file

        keys = _dev_key_file()
    env = dict(
        os.environ,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(32),
        VIGIL_CREDENTIAL_KEYS=keys,
        LOG_LEVEL="ERROR",  # refusals are logged as warnings; the readiness probe makes a few
    )
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "csm.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "120",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            # Any answer will do (an unsigned call is refused): the server is up.
            httpx.post(f"http://127.0.0.1:{port}/intake/-/v1/batch", timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("gunicorn did not start within 60 s")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def post_all(*, url: str, secret: str, args) -> tuple[float, dict, list[float]]:
    totals = {"received": 0, "accepted": 0, "duplicates": 0, "unmatched": 0}
    latencies: list[float] = []
    lock = threading.Lock()
    source = iter(batches(events=args.events, accounts=args.accounts, days=args.days))
    failures: list[str] = []

    def sender():
        with httpx.Client(timeout=120) as http:
            while not failures:
                with lock:
                    calls = next(source, None)
                if calls is None:
                    return
                body, signature = encoded(calls, secret)
                sent = time.perf_counter()
                response = http.post(
                    url, content=body, headers={"Content-Type": "application/json", "X-Vigil-Signature": signature}
                )
                elapsed = time.perf_counter() - sent
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")
                    return
                counts = response.json()
                with lock:
                    latencies.append(elapsed)
                    for key in totals:
                        totals[key] += counts[key]

    started = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"the intake refused a batch: {failures[0]}")
    return time.perf_counter() - started, totals, latencies


def remove_scratch(org: Organization) -> None:
    with as_owner(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {BARE}")
    with tenant(org), connection.cursor() as cursor:
        # Set-based: the ORM's cascade would walk a million intake rows in Python.
        for table in (
            "integrations_intakemessage",
            "integrations_usageuserday",
            "integrations_useraccount",
            "integrations_sourcerecord",
            "integrations_unmatchedrecord",
            "integrations_connection",
            "accounts_usageday",
            "accounts_account",
        ):
            cursor.execute(f"DELETE FROM {table} WHERE org_id = %s", [org.pk])
    with tenant(org):
        Organization.objects.filter(pk=org.pk).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument(
        "--days",
        type=int,
        default=30,
        help="days the track calls span: 30 makes nearly every event a user's first of its day (the costly case)",
    )
    parser.add_argument("--clients", type=int, default=2, help="concurrent senders")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)

    slug = f"bench-intake-{int(time.time())}"
    org = org_create(slug=slug, name="Intake benchmark (scratch)", timezone_name="America/New_York")
    secret = secrets.token_urlsafe(32)
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    try:
        with tenant(org):
            now = timezone.now()
            Account.objects.bulk_create(
                [
                    Account(org=org, external_id=f"ACME-{n:05d}", name=f"Customer {n}", created_at=now)
                    for n in range(args.accounts)
                ],
                batch_size=5_000,
            )
            connection_save(org=org, provider="segment", secrets={"shared_secret": secret})
        users = args.accounts * USERS_PER_ACCOUNT
        print(
            f"{args.events:,} events ({users:,} group calls, then track calls over {args.days} days) for "
            f"{args.accounts:,} accounts, batches of {BATCH:,}, {args.clients} client threads, "
            f"gunicorn with {args.workers} workers, same machine, same run\n"
        )
        generation = time_generation(args, secret)
        copy = time_copy(org, args, workdir)

        port = free_port()
        server = start_server(port, args.workers)
        url = f"http://127.0.0.1:{port}/intake/{slug}/v1/batch"
        seconds, totals, latencies = post_all(url=url, secret=secret, args=args)
        server_peak = max(peak_rss_mib(pid) for pid in worker_pids(server.pid))

        first = next(batches(events=args.events, accounts=args.accounts, days=args.days))
        body, signature = encoded(first, secret)
        again = httpx.post(url, content=body, headers={"X-Vigil-Signature": signature}).json()

        with tenant(org):
            stored = IntakeMessage.objects.filter(org=org).count()
            counted = UsageDay.objects.filter(org=org).aggregate(events=Sum("events"))
            usage_rows = UsageDay.objects.filter(org=org).count()
            listed = UnmatchedRecord.objects.filter(org=org).count()
        tracks = args.events - min(users, args.events)
        assert totals["accepted"] == args.events == stored, (totals, stored)
        assert counted["events"] + totals["unmatched"] == tracks, (counted, totals)
        assert again["duplicates"] == len(first) and again["accepted"] == 0, again

        latencies.sort()

        def line(label: str, elapsed: float, extra: str = "") -> None:
            print(f"  {label:<58} {elapsed:7.2f} s  {args.events / elapsed:>10,.0f} events/s  {extra}")

        line("generate + encode + sign the payloads only (client share)", generation)
        line("COPY of the same event rows (from a file) into a bare table", copy)
        line("intake over HTTP, end to end", seconds, f"{seconds / copy:5.1f}x COPY")
        print(
            f"\n  per batch of {BATCH:,}: median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95)] * 1000:.0f} ms (request sent → answer received)"
        )
        print(
            f"  counted: {stored:,} messages stored, {counted['events']:,} track events on {usage_rows:,} "
            f"account-days, {totals['unmatched']:,} unmatched events ({listed:,} listed), "
            f"re-sent batch: {again['duplicates']:,} duplicates"
        )
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak memory: gunicorn worker {server_peak:,.0f} MiB, this client {client_peak:,.0f} MiB")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        remove_scratch(org)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
