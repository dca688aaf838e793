"""The Portfolio page: who may open it, health by CSM, retention metrics, filters, bounded queries."""

from datetime import date

import pytest
from django.urls import reverse
from django.utils import timezone

from csm.tenancy import tenant
from signals.models import NightlyRun
from tests.factories import (
    local_dt,
    make_account,
    make_arr_change,
    make_member,
    make_org,
    make_score,
    make_signal,
)

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 20)  # the latest scored day; the 12-month window is 20 Nov 2025 - 20 Nov 2026


def portfolio_of(client, org, **params):
    response = client.get(reverse("portfolio", args=[org.slug]), params)
    assert response.status_code == 200
    return response.context["portfolio"], response.content.decode()


@pytest.mark.parametrize("role, status", [("admin", 200), ("leader", 200), ("csm", 403), ("am", 403)])
def test_only_leaders_and_admins_open_the_portfolio(client, role, status):
    org = make_org()
    client.force_login(make_member(org, role=role))
    assert client.get(reverse("portfolio", args=[org.slug])).status_code == status


def test_each_csm_row_counts_accounts_arr_bands_silent_and_movers(client):
    org = make_org()
    ana = make_member(org, role="csm", email="ana@vendor.example")
    ben = make_member(org, role="csm", email="ben@vendor.example")
    falling = make_account(org, name="Falling Co", csm=ana, arr=100_000)
    rising = make_account(org, name="Rising Co", csm=ana, arr=50_000)
    quiet = make_account(org, name="Quiet Co", csm=ana, arr=30_000)
    steady = make_account(org, name="Steady Co", csm=ben, arr=20_000)
    make_account(org, name="Gone Co", csm=ben, arr=10_000, stage="churned", churned_on=date(2026, 6, 1))
    make_score(org, falling, day=DAY, score=35, delta=-12)
    make_score(org, rising, day=DAY, score=80, delta=15)
    make_score(org, quiet, day=DAY, score=55, delta=-3)
    make_score(org, steady, day=DAY, score=90, delta=9.9)
    make_signal(org, quiet, type="silent_account", day=DAY)
    make_signal(org, steady, type="silent_account", day=DAY, cleared_on=DAY)  # no longer silent
    client.force_login(make_member(org, role="leader"))

    page, html = portfolio_of(client, org)

    assert [row.label for row in page.by_csm] == ["ana@vendor.example", "ben@vendor.example"]
    ana_row, ben_row = page.by_csm
    assert (ana_row.accounts, ana_row.arr) == (3, 180_000)
    assert (ana_row.green, ana_row.yellow, ana_row.red, ana_row.silent) == (1, 1, 1, 1)
    assert (ana_row.movers_down, ana_row.movers_up) == (1, 1)
    assert [m.name for m in ana_row.movers] == ["Rising Co", "Falling Co"]  # biggest move first
    assert (ben_row.accounts, ben_row.arr, ben_row.green, ben_row.silent, ben_row.movers) == (1, 20_000, 1, 0, [])
    assert (page.total.accounts, page.total.red) == (4, 1)  # the churned account is out of the health view
    assert round(ana_row.green_pct, 1) == 33.3
    assert reverse("account-detail", args=[org.slug, falling.pk]) in html
    assert reverse("account-detail", args=[org.slug, steady.pk]) not in html  # 9.9 points is not a move


def test_retention_and_churn_come_from_the_arr_history(client):
    org = make_org()
    # Expanded from 100k to 120k during the window.
    grower = make_account(org, name="Grower", arr=120_000)
    make_arr_change(org, grower, day=date(2025, 1, 1), arr=100_000)
    make_arr_change(org, grower, day=date(2026, 3, 1), arr=120_000)
    # Contracted from 50k to 40k.
    shrinker = make_account(org, name="Shrinker", arr=40_000)
    make_arr_change(org, shrinker, day=date(2025, 6, 1), arr=50_000)
    make_arr_change(org, shrinker, day=date(2026, 5, 1), arr=40_000)
    # Paid 50k and churned in the window (its ARR field still says 50k: churn wins).
    leaver = make_account(org, name="Leaver", arr=50_000, stage="churned", churned_on=date(2026, 6, 1))
    make_arr_change(org, leaver, day=date(2025, 2, 1), arr=50_000)
    # No history: counted at its current ARR from its creation; the newcomer is not in the cohort.
    make_account(org, name="Old Timer", arr=20_000, created_at=local_dt(org, date(2024, 1, 1)))
    newcomer = make_account(org, name="Newcomer", arr=30_000, created_at=local_dt(org, date(2026, 2, 1)))
    # Churned before the window: not in the cohort either.
    make_account(org, name="Long Gone", arr=9_000, stage="churned", churned_on=date(2025, 3, 1))
    make_score(org, newcomer, day=DAY, score=80)
    client.force_login(make_member(org, role="leader"))

    metrics = portfolio_of(client, org)[0].metrics

    assert (metrics.start, metrics.end) == (date(2025, 11, 20), DAY)
    assert metrics.starting_arr == 220_000  # 100k + 50k + 50k + 20k
    assert metrics.retained_arr == 160_000  # 100k (capped) + 40k + 0 + 20k
    assert metrics.ending_arr == 180_000  # 120k + 40k + 0 + 20k
    assert round(metrics.gross_retention, 1) == 72.7
    assert round(metrics.net_retention, 1) == 81.8
    assert (metrics.cohort_accounts, metrics.churned_accounts, metrics.logo_churn) == (4, 1, 25.0)


def test_time_to_value_and_silent_share(client):
    org = make_org()
    live_45 = make_account(org, contract_start=date(2026, 1, 1), go_live_date=date(2026, 2, 15))
    make_account(org, contract_start=date(2026, 3, 1), go_live_date=date(2026, 3, 31))  # 30 days
    make_account(org, contract_start=date(2026, 4, 1), go_live_date=date(2026, 6, 30))  # 90 days
    make_account(org, contract_start=date(2024, 1, 1), go_live_date=date(2024, 3, 1))  # live before the window
    make_account(org, stage="onboarding", contract_start=date(2026, 11, 1), go_live_date=date(2026, 12, 1))  # later
    make_score(org, live_45, day=DAY, score=75)
    make_signal(org, live_45, type="silent_account", day=DAY)
    client.force_login(make_member(org, role="admin"))

    metrics = portfolio_of(client, org)[0].metrics

    assert (metrics.ttv_median_days, metrics.onboardings_live) == (45, 3)
    assert (metrics.silent_accounts, metrics.active_accounts, metrics.silent_share) == (1, 5, 20.0)


def test_filters_narrow_every_figure_and_stay_selected(client):
    org = make_org()
    ana, ben = make_member(org, role="csm"), make_member(org, role="csm")
    big = make_account(org, name="Big Co", csm=ana, tier="enterprise", arr=200_000, stage="steady")
    small = make_account(org, name="Small Co", csm=ben, tier="smb", arr=5_000, stage="onboarding")
    make_score(org, big, day=DAY, score=30, delta=-20)
    make_score(org, small, day=DAY, score=90, delta=20)
    client.force_login(make_member(org, role="leader"))

    by_tier, html = portfolio_of(client, org, tier="enterprise")
    assert (by_tier.total.accounts, by_tier.total.red) == (1, 1)
    assert '<option value="enterprise" selected>' in html and "Small Co" not in html

    by_csm, html = portfolio_of(client, org, csm=str(ben.pk))
    assert [row.key for row in by_csm.by_csm] == [ben.pk]
    assert f'<option value="{ben.pk}" selected>' in html and "Big Co" not in html

    by_stage, html = portfolio_of(client, org, stage="onboarding")
    assert [row.key for row in by_stage.by_stage] == ["onboarding"]
    assert by_stage.total.arr == 5_000 and "Small Co" in html
    assert '<option value="onboarding" selected>' in html

    assert sorted(by_tier.tiers) == ["enterprise", "smb"]  # every tier stays offered


def test_another_organizations_accounts_never_show(client):
    mine, theirs = make_org("mine"), make_org("theirs")
    own = make_account(mine, name="Own Co", arr=10_000, created_at=local_dt(mine, date(2024, 1, 1)))
    make_score(mine, own, day=DAY, score=50)
    other_csm = make_member(theirs, role="csm", email="spy@theirs.example")
    secret = make_account(theirs, name="Secret Co", csm=other_csm, arr=999_000)
    make_score(theirs, secret, day=DAY, score=20, delta=-30)
    make_signal(theirs, secret, type="silent_account", day=DAY)
    make_arr_change(theirs, secret, day=date(2025, 1, 1), arr=999_000)
    client.force_login(make_member(mine, role="leader"))

    page, html = portfolio_of(client, mine)

    assert "Secret Co" not in html and "spy@theirs.example" not in html
    assert (page.total.accounts, page.total.arr, page.total.silent, page.total.movers_down) == (1, 10_000, 0, 0)
    assert page.metrics.starting_arr == 10_000


def test_the_page_runs_the_same_queries_for_10_or_50_accounts(client, django_assert_max_num_queries):
    org = make_org()
    csms = [make_member(org, role="csm") for _ in range(3)]
    leader = make_member(org, role="leader")
    client.force_login(leader)

    def add_accounts(count: int) -> None:
        for n in range(count):
            account = make_account(org, csm=csms[n % 3], tier=("smb", "enterprise")[n % 2])
            make_score(org, account, day=DAY, score=20 + n, delta=(-15, 15, 0)[n % 3])
            make_arr_change(org, account, day=date(2025, 1, 1), arr=1_000 + n)
            if n % 4 == 0:
                make_signal(org, account, type="silent_account", day=DAY)

    add_accounts(10)
    with django_assert_max_num_queries(20) as ten:
        portfolio_of(client, org, tier="smb")
    add_accounts(40)
    with django_assert_max_num_queries(20) as fifty:
        page, _ = portfolio_of(client, org, tier="smb")
    assert page.total.accounts == 25
    assert len(fifty.captured_queries) == len(ten.captured_queries)


def test_figures_follow_an_import_and_a_nightly_run_despite_the_cache(client):
    org = make_org()
    ana, ben = make_member(org, role="csm"), make_member(org, role="csm")
    account = make_account(org, csm=ana, arr=10_000)
    make_score(org, account, day=DAY, score=80)
    client.force_login(make_member(org, role="leader"))
    assert [row.key for row in portfolio_of(client, org)[0].by_csm] == [ana.pk]

    with tenant(org):  # an import or a sync reassigns the account (and stamps updated_at)
        account.csm = ben
        account.save()
    assert [row.key for row in portfolio_of(client, org)[0].by_csm] == [ben.pk]

    make_signal(org, account, type="silent_account", day=DAY)  # written by the next nightly run...
    with tenant(org):
        NightlyRun.objects.create(
            org=org, run_date=DAY, status="succeeded", started_at=timezone.now(), finished_at=timezone.now()
        )
    assert portfolio_of(client, org)[0].total.silent == 1  # ...which the page sees once it finishes


@pytest.mark.django_db(transaction=True)
def test_the_nightly_run_leaves_the_figures_ready_in_the_shared_cache_for_the_first_leader(client, subprocess_env):
    import subprocess
    import sys

    from django.conf import settings as django_settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    org = make_org("primed")
    ana = make_member(org, role="csm")
    for n in range(3):
        make_account(org, csm=ana, arr=1_000 * (n + 1))
    # The run is another process, as a Celery worker is: only a cache they share can carry the figures.
    done = subprocess.run(
        [sys.executable, "manage.py", "run_nightly", "--org", org.slug, "--date", "2026-11-20", "--no-sync"],
        cwd=django_settings.BASE_DIR,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    client.force_login(make_member(org, role="leader"))
    with CaptureQueriesContext(connection) as queries:
        page, _ = portfolio_of(client, org)
    assert page.total.accounts == 3 and page.total.arr == 6_000
    assert not [q for q in queries.captured_queries if "GROUP BY csm_id, stage, tier" in q["sql"]]

    from django.core.cache import cache

    cache.clear()  # without the primed figures the same page computes them itself
    with CaptureQueriesContext(connection) as queries:
        assert portfolio_of(client, org)[0].total.accounts == 3
    assert [q for q in queries.captured_queries if "GROUP BY csm_id, stage, tier" in q["sql"]]


def test_an_accounts_import_leaves_the_new_figures_ready(client, tmp_path, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.imports import csv_import

    org = make_org()
    ana = make_member(org, role="csm", email="ana@vendor.example")
    make_account(org, external_id="A-1", arr=1_000)
    client.force_login(make_member(org, role="leader"))
    assert portfolio_of(client, org)[0].total.arr == 1_000
    path = tmp_path / "accounts.csv"
    path.write_text(
        "external_id,name,domain,tier,arr,currency,plan,seat_limit,stage,csm_email,am_email,go_live_date,"
        "renewal_date,contract_start,created_at\n"
        "A-2,Beta,beta.example,smb,5000,USD,,,steady,ana@vendor.example,,,,,\n"
    )

    with django_capture_on_commit_callbacks(execute=True):
        csv_import(org=org, kind="accounts", file=path)

    with CaptureQueriesContext(connection) as queries:
        page, _ = portfolio_of(client, org)
    assert page.total.arr == 6_000 and [row.key for row in page.by_csm][0] == ana.pk
    assert not [q for q in queries.captured_queries if "GROUP BY csm_id, stage, tier" in q["sql"]]
