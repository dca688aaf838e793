"""Server time of the pages people open every day, on the demo data.

    .venv/bin/python bench/pages.py [--org bench-50k] [--requests 30] [--prepare]

Portfolio: the leader's page over a 50,000-account organization (target p95 under 300 ms).
Morning: a CSM with 500 accounts (target p95 under 100 ms) — see `bench_morning`.

The organization comes from
    python manage.py demo_data --org bench-50k --accounts 50000 --seed 1
    python manage.py run_nightly --org bench-50k
which `--prepare` runs when the organization does not exist yet. Requests go through Django's test
Client, so "server time" is the whole request in the WSGI handler (middleware, session, the
queries, template rendering) without the network. Portfolio is timed three ways: primed (the
nightly run has left its figures in the shared cache, as every morning: what a leader waits for),
uncached (the page computes the figures itself, as after an import before anything primes them)
and warm (later views and changes of filter). The floor printed first is one plain scan of the
organization's accounts, timed in the same run, to show how busy the machine is.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csm.settings")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from accounts.models import Account, Membership, Organization, Role  # noqa: E402
from csm.tenancy import tenant  # noqa: E402
from health.portfolio import portfolio_prime  # noqa: E402

WARMUP = 3


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def report(label: str, times_ms: list[float], *, queries: int | None = None, target_ms: float | None = None) -> None:
    p50, p95 = statistics.median(times_ms), percentile(times_ms, 0.95)
    verdict = ""
    if target_ms is not None:
        verdict = f"  target p95 < {target_ms:.0f} ms: {'met' if p95 < target_ms else 'NOT met'}"
    extra = f", {queries} queries" if queries is not None else ""
    print(f"{label:<34} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({len(times_ms)} requests{extra}){verdict}")


def organization(slug: str, *, accounts: int, seed: int, prepare: bool) -> Organization:
    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        if not prepare:
            sys.exit(
                f"No organization {slug!r}. Create it with\n"
                f"  python manage.py demo_data --org {slug} --accounts {accounts} --seed {seed}\n"
                f"  python manage.py run_nightly --org {slug}\nor run this script with --prepare."
            )
        call_command("demo_data", org=slug, accounts=accounts, seed=seed)
        call_command("run_nightly", org=slug)
        org = Organization.objects.get(slug=slug)
    return org


def member(org: Organization, role: str):
    with tenant(org):
        membership = Membership.objects.filter(org=org, role=role).select_related("user").order_by("pk").first()
    if membership is None:
        sys.exit(f"{org.slug} has no member with the role {role}.")
    return membership.user


def time_get(client: Client, url: str, *, requests: int, before=lambda: None) -> tuple[list[float], int]:
    """Wall time of `requests` GETs after a warm-up, and the queries one request runs.

    `before` runs ahead of each request, untimed: emptying or priming the cache.
    """
    for _ in range(WARMUP):
        assert client.get(url).status_code == 200, url
    queries = []
    before()
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: queries.append(sql) or execute(sql, params, many, context)
    ):
        client.get(url)
    times = []
    for _ in range(requests):
        before()
        started = time.perf_counter()
        response = client.get(url)
        times.append(1000 * (time.perf_counter() - started))
        assert response.status_code == 200, url
    return times, len(queries)


def bench_floor(org: Organization, *, requests: int) -> None:
    """One scan of the organization's accounts: what this machine does right now with no page around it."""
    times = []
    for _ in range(requests):
        with tenant(org):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*), sum(arr) FROM accounts_account WHERE org_id = %s", [org.pk])
                cursor.fetchall()
            times.append(1000 * (time.perf_counter() - started))
    report("floor: scan of the accounts", times)


def bench_portfolio(org: Organization, *, requests: int) -> None:
    client = Client()
    client.force_login(member(org, Role.LEADER))
    url = reverse("portfolio", args=[org.slug])

    def primed():  # as the nightly run leaves it: the figures computed, in the shared cache
        cache.clear()
        portfolio_prime(org=org)

    times, queries = time_get(client, url, requests=requests, before=primed)
    report("Portfolio primed (leader, all)", times, queries=queries, target_ms=300)
    # Uncached: the page computes the grouped figures itself (an import no run has followed yet).
    times, queries = time_get(client, url, requests=requests, before=cache.clear)
    report("Portfolio uncached (leader, all)", times, queries=queries)
    # Warm: later views and every change of filter reuse them.
    times, queries = time_get(client, url, requests=requests)
    report("Portfolio warm (leader, all)", times, queries=queries, target_ms=300)
    with tenant(org):
        tier = Account.objects.filter(org=org).exclude(tier="").values_list("tier", flat=True).first()
    times, queries = time_get(client, f"{url}?tier={tier}&stage=steady", requests=requests)
    report(f"Portfolio warm (tier={tier}, steady)", times, queries=queries, target_ms=300)


def bench_morning(org: Organization, *, requests: int) -> None:
    """Morning for a CSM with 500 accounts (target p95 under 100 ms), and a leader's all-CSM view."""
    from accounts.services import member_add

    csm = member_add(org=org, email=f"bench-csm@{org.slug}.demo", role=Role.CSM).user
    with tenant(org):
        # The same 500 accounts each run (lowest ids), so repeated runs measure the same list.
        ids = list(Account.objects.filter(org=org).order_by("pk").values_list("pk", flat=True)[:500])
        Account.objects.filter(org=org, pk__in=ids).update(csm=csm)
    client = Client()
    client.force_login(csm)
    url = reverse("morning", args=[org.slug])
    times, queries = time_get(client, url, requests=requests)
    report("Morning (CSM, 500 accounts)", times, queries=queries, target_ms=100)
    leader = Client()
    leader.force_login(member(org, Role.LEADER))
    times, queries = time_get(leader, url, requests=requests)
    report("Morning (leader, all CSMs)", times, queries=queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--org", default="bench-50k")
    parser.add_argument("--accounts", type=int, default=50_000, help="with --prepare")
    parser.add_argument("--seed", type=int, default=1, help="with --prepare")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--prepare", action="store_true", help="create the organization and run its nightly if missing")
    args = parser.parse_args()
    org = organization(args.org, accounts=args.accounts, seed=args.seed, prepare=args.prepare)
    with tenant(org):
        count = Account.objects.filter(org=org).count()
    print(f"{org.slug}: {count:,} accounts, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    bench_floor(org, requests=args.requests)
    bench_portfolio(org, requests=args.requests)
    bench_morning(org, requests=args.requests)


if __name__ == "__main__":
    main()
