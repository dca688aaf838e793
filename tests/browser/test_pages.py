"""A person in a real browser: sign in, work the morning list, open pages, hit a role wall.

Each test saves a screenshot under artifacts/screenshots/.
"""

from datetime import date, timedelta

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests.factories import local_dt, make_account, make_activity, make_member, make_org, make_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-42"


def morning_org():
    """Three accounts that each need the CSM today, scored by a real nightly run."""
    org = make_org("acme", timezone_name="Europe/Paris")
    csm = make_member(org, role="csm", email="csm@acme.example")
    make_member(org, role="leader", email="leader@acme.example")
    today = date.today()
    blocked = make_account(org, name="Blocked Industries", arr=120000, tier="enterprise", csm=csm)
    make_task(org, blocked, title="SSO configuration", status="blocked", status_changed_at=local_dt(org, today))
    make_activity(org, blocked, occurred_at=local_dt(org, today - timedelta(days=1)))
    silent = make_account(
        org,
        name="Quiet Logistics",
        arr=90000,
        tier="enterprise",
        csm=csm,
        created_at=local_dt(org, today - timedelta(days=200)),
    )
    make_activity(org, silent, occurred_at=local_dt(org, today - timedelta(days=15)), actor_name="Jane Doe")
    renewing = make_account(
        org, name="Renewal Partners", arr=20000, tier="smb", csm=csm, renewal_date=today + timedelta(days=40)
    )
    make_activity(org, renewing, occurred_at=local_dt(org, today - timedelta(days=2)))
    call_command("run_nightly", "--org", "acme", "--date", today.isoformat())
    return org


def sign_in(page, live_server, email):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_csm_signs_in_and_sees_the_ranked_list(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "csm@acme.example")
    expect(page.get_by_role("heading", name="Good morning")).to_be_visible()
    items = page.locator(".triage-item")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("Blocked Industries")
    expect(page.get_by_role("heading", name="New blocked tasks")).to_be_visible()
    screenshot()


def test_done_removes_the_item_in_place(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "csm@acme.example")
    item = page.locator(".triage-item", has_text="Quiet Logistics")
    expect(item).to_be_visible()
    url_before = page.url
    item.get_by_role("button", name="Done").click()
    expect(item).to_have_count(0)
    assert page.url == url_before  # no full reload
    expect(page.locator(".triage-item")).to_have_count(2)
    screenshot()
    page.reload()
    expect(page.locator(".triage-item", has_text="Quiet Logistics")).to_have_count(0)


def test_snooze_removes_the_item_until_later(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "csm@acme.example")
    item = page.locator(".triage-item", has_text="Renewal Partners")
    item.get_by_role("button", name="3 days").click()
    expect(item).to_have_count(0)
    screenshot()


def test_account_page_opens_from_the_list(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "csm@acme.example")
    page.get_by_role("link", name="Blocked Industries").first.click()
    expect(page.get_by_role("heading", name="Blocked Industries")).to_be_visible()
    expect(page.get_by_role("heading", name="Mutual action plan")).to_be_visible()
    expect(page.get_by_role("cell", name="SSO configuration", exact=True)).to_be_visible()
    expect(page.get_by_role("img", name="Health score over the last 1 days", exact=False)).to_be_visible()
    screenshot()


def test_leader_opens_the_portfolio(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "leader@acme.example")
    page.get_by_role("link", name="Portfolio").click()
    expect(page.get_by_role("heading", name="Portfolio", exact=True)).to_be_visible()
    expect(page.locator("table").get_by_text("csm@acme.example").first).to_be_visible()
    screenshot()


def test_csm_is_refused_settings(page, live_server, screenshot):
    morning_org()
    sign_in(page, live_server, "csm@acme.example")
    response = page.goto(f"{live_server.url}/o/acme/settings/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    screenshot()


def test_admin_sets_up_a_connection_through_the_page(page, live_server, screenshot):
    org = make_org("acme")
    make_member(org, role="admin", email="admin@acme.example")
    sign_in(page, live_server, "admin@acme.example")
    page.get_by_role("link", name="Integrations").click()
    card = page.locator("section.integration", has_text="Product usage")
    card.get_by_text("Set up Product usage").click()  # the form opens on demand
    card.get_by_label("Shared secret").fill("a-very-long-shared-secret-for-signing-events-0123")
    card.get_by_role("button", name="Connect Product usage").click()
    expect(page.get_by_text("connection saved")).to_be_visible()
    card = page.locator("section.integration", has_text="Product usage")
    card.get_by_role("button", name="Test connection").click()
    expect(card.get_by_text("Ready: POST events to /intake/acme/v1/batch", exact=False)).to_be_visible()
    assert "a-very-long-shared-secret" not in page.content()
    screenshot()
