"""The Revenue page: who sees which accounts, renewals with their risk, expansion windows, bounded queries."""

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import make_account, make_member, make_org, make_score, make_signal, make_usage

pytestmark = pytest.mark.django_db


def today_in(org) -> date:
    return timezone.now().astimezone(org.tz).date()


def revenue_of(client, org, **params):
    response = client.get(reverse("revenue", args=[org.slug]), params)
    assert response.status_code == 200
    return response.context["revenue"], response.content.decode()


def names(rows) -> list[str]:
    return [row.name for row in rows]


@pytest.mark.parametrize("role, status", [("admin", 200), ("leader", 200), ("am", 200), ("csm", 403)])
def test_account_managers_leaders_and_admins_open_the_revenue_page(client, role, status):
    org = make_org()
    client.force_login(make_member(org, role=role))
    assert client.get(reverse("revenue", args=[org.slug])).status_code == status


def test_an_am_sees_their_own_accounts_and_a_leader_can_pick_an_am(client):
    org = make_org()
    today = today_in(org)
    alice, bob = make_member(org, role="am"), make_member(org, role="am")
    make_account(org, name="Alice Renews", am=alice, renewal_date=today + timedelta(days=10))
    make_account(org, name="Bob Renews", am=bob, renewal_date=today + timedelta(days=20))

    client.force_login(alice)
    page, html = revenue_of(client, org, am=str(bob.pk))  # an AM cannot look at someone else's book
    assert names(page.renewals) == ["Alice Renews"] and "Bob Renews" not in html

    client.force_login(make_member(org, role="leader"))
    assert names(revenue_of(client, org)[0].renewals) == ["Alice Renews", "Bob Renews"]
    page, html = revenue_of(client, org, am=str(bob.pk))
    assert names(page.renewals) == ["Bob Renews"]
    assert f'<option value="{bob.pk}" selected>' in html


def test_renewals_are_sorted_by_date_with_their_risk(client):
    org = make_org()
    today = today_in(org)
    day = today - timedelta(days=1)  # last night's scores
    red = make_account(org, name="Red Co", renewal_date=today + timedelta(days=10), arr=10_000)
    falling = make_account(org, name="Falling Co", renewal_date=today + timedelta(days=30), arr=20_000)
    unpaid = make_account(org, name="Unpaid Co", renewal_date=today + timedelta(days=60), arr=30_000)
    later = make_account(org, name="Later Co", renewal_date=today + timedelta(days=120), arr=40_000)
    make_account(org, name="Far Co", renewal_date=today + timedelta(days=200))
    make_account(org, name="Past Co", renewal_date=today - timedelta(days=1))
    make_account(org, name="Churned Co", renewal_date=today + timedelta(days=20), stage="churned")
    make_score(org, red, day=day, score=30)
    make_score(org, falling, day=day - timedelta(days=30), score=90)
    make_score(org, falling, day=day, score=75)
    make_score(org, unpaid, day=day, score=60)
    make_score(org, later, day=day - timedelta(days=30), score=80)
    make_score(org, later, day=day, score=85)
    make_signal(org, unpaid, type="payment_failed", day=day, entity_key="invoice:INV-1")
    make_signal(org, unpaid, type="support_spike", day=day, cleared_on=day)  # over
    client.force_login(make_member(org, role="leader"))

    page, html = revenue_of(client, org)

    assert names(page.renewals) == ["Red Co", "Falling Co", "Unpaid Co"]
    assert [row.risks for row in page.renewals] == [["Red health"], ["Down 15 pts in 30 days"], ["Payment failed"]]
    assert [row.trend for row in page.renewals] == [None, -15.0, None]
    assert [(s.days, s.accounts, s.arr, s.at_risk) for s in page.summaries] == [
        (90, 3, 60_000, 3),
        (180, 4, 100_000, 3),
    ]
    assert "Support spike" not in html
    assert names(revenue_of(client, org, window="180")[0].renewals) == [*names(page.renewals), "Later Co"]


def test_expansion_windows_and_risky_expansions(client):
    org = make_org()
    today = today_in(org)
    day = today - timedelta(days=1)

    def account(name, *, seats, score, before=None, limit=10, arr=10_000):
        created = make_account(org, name=name, seat_limit=limit, arr=arr)
        make_usage(org, created, day=day, seats_used=seats)
        make_score(org, created, day=day, score=score)
        if before is not None:
            make_score(org, created, day=day - timedelta(days=30), score=before)
        return created

    account("Ready Co", seats=9, score=85, before=83, arr=50_000)
    account("Also Ready Co", seats=8, score=72, arr=20_000)
    flagged = account("Flagged Co", seats=5, score=75, before=90)  # signal from the nightly run, declining
    make_signal(org, flagged, type="plan_limit", day=day, evidence={"seats_used": 8, "seat_limit": 10})
    account("Red Full Co", seats=10, score=30)
    account("Roomy Co", seats=5, score=90)
    account("Middling Co", seats=9, score=55)
    client.force_login(make_member(org, role="leader"))

    page, html = revenue_of(client, org)

    assert names(page.expansions) == ["Ready Co", "Also Ready Co"]  # largest ARR first
    assert (page.expansions[0].seats_used, page.expansions[0].seat_share) == (9, 90)
    assert names(page.risky) == ["Flagged Co", "Red Full Co"]
    assert [row.risks for row in page.risky] == [["Down 15 pts in 30 days"], ["Red health"]]
    assert "Roomy Co" not in html and "Middling Co" not in html


def test_another_organizations_accounts_never_show(client):
    mine, theirs = make_org("mine"), make_org("theirs")
    make_account(mine, name="Own Co", renewal_date=today_in(mine) + timedelta(days=5))
    secret = make_account(theirs, name="Secret Co", renewal_date=today_in(theirs) + timedelta(days=5), seat_limit=10)
    make_usage(theirs, secret, day=today_in(theirs) - timedelta(days=1), seats_used=10)
    make_signal(theirs, secret, type="plan_limit", day=today_in(theirs))
    client.force_login(make_member(mine, role="leader"))

    page, html = revenue_of(client, mine)

    assert names(page.renewals) == ["Own Co"] and page.expansions_total == page.risky_total == 0
    assert "Secret Co" not in html


def test_the_page_runs_the_same_queries_for_10_or_50_accounts(client, django_assert_max_num_queries):
    org = make_org()
    today = today_in(org)
    day = today - timedelta(days=1)
    am = make_member(org, role="am")
    client.force_login(am)

    def add_accounts(count: int) -> None:
        for n in range(count):
            account = make_account(org, am=am, renewal_date=today + timedelta(days=n % 170), seat_limit=10)
            make_score(org, account, day=day, score=(30, 80)[n % 2])
            make_usage(org, account, day=day, seats_used=9)
            if n % 5 == 0:
                make_signal(org, account, type="payment_failed", day=day)

    add_accounts(10)
    with django_assert_max_num_queries(20) as ten:
        revenue_of(client, org, window="180")
    add_accounts(40)
    with django_assert_max_num_queries(20) as fifty:
        page, _ = revenue_of(client, org, window="180")
    assert page.renewals_total == 50 and page.expansions_total + page.risky_total == 50
    assert len(fifty.captured_queries) == len(ten.captured_queries)
