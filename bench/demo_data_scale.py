"""How long `demo_data` takes for large organizations (target: 50,000 accounts in under 3 minutes).

Each size is generated into a scratch organization with the real command, its rows counted per
table, and the organization deleted again (with its demo users). Figures, not a pass/fail test:
on a shared machine they move with whatever else is running.

    .venv/bin/python bench/demo_data_scale.py                 # 10,000 then 50,000 accounts
    .venv/bin/python bench/demo_data_scale.py --accounts 2000 --keep
"""

import argparse
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csm.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from accounts.demo import demo_org_delete  # noqa: E402
from accounts.models import Organization  # noqa: E402

TODAY = "2026-03-16"  # fixed, so every run generates the same rows


def backend_cpu_seconds() -> float | None:
    """CPU time used so far by the PostgreSQL process serving our connection (same machine only)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run(accounts: int, *, seed: int, keep: bool) -> None:
    slug = f"bench-demo-{accounts}"
    stale = Organization.objects.filter(slug=slug).first()
    if stale is not None:
        demo_org_delete(org=stale)
    output = io.StringIO()
    database_cpu, python_cpu = backend_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    call_command(
        "demo_data", "--org", slug, "--accounts", str(accounts), "--seed", str(seed), "--today", TODAY, stdout=output
    )
    seconds = time.perf_counter() - started
    python_cpu = time.process_time() - python_cpu
    database_cpu = backend_cpu_seconds() - database_cpu if database_cpu is not None else None
    counts, load_seconds = {}, {}
    for line in output.getvalue().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].replace(",", "").isdigit():
            counts[parts[0]] = int(parts[1].replace(",", ""))
            if "loaded" in parts:
                load_seconds[parts[0]] = float(parts[-2])
    rows = sum(rows for table, rows in counts.items() if table != "members")
    print(f"\n{accounts:,} accounts: {seconds:.1f} s for {rows:,} rows ({rows / seconds:,.0f} rows/s)")
    # CPU seconds do not grow with other people's load the way wall time does on a shared machine.
    database = f"{database_cpu:.1f} s" if database_cpu is not None else "unknown"
    print(f"  CPU: Python {python_cpu:.1f} s, PostgreSQL backend {database}; load average {os.getloadavg()[0]:.1f}")
    for table, count in counts.items():
        loaded = f"{load_seconds[table]:7.1f} s" if table in load_seconds else ""
        print(f"  {table:<12} {count:>10,}  {loaded}")
    if keep:
        print(f"  kept organization {slug}")
        return
    started = time.perf_counter()
    demo_org_delete(org=Organization.objects.get(slug=slug))
    print(f"  deleted the scratch organization in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch organizations")
    arguments = parser.parse_args()
    print(f"demo_data scale, machine with {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for accounts in arguments.accounts:
        run(accounts, seed=arguments.seed, keep=arguments.keep)


if __name__ == "__main__":
    main()
