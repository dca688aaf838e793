"""An admin sets up each connection through the Integrations page in a real browser.

Each provider is its local fake (tests/integrations/*_fake.py) holding a record that matches the
organization's account and one that matches nothing. The first sync that saving starts and "Sync now"
both run on a real Celery worker (on the test database, listening on this test's own queue); the
progress area, polled by htmx, shows each run as it finishes. Each test saves a screenshot under
artifacts/screenshots/.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect

import csm.celery
from tests.browser.test_pages import sign_in
from tests.factories import make_account, make_member, make_org
from tests.integrations import hubspot_fake, intercom_fake, salesforce_fake, stripe_fake, zendesk_fake

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WAIT = 30_000  # ms for a sync on the worker; they take about a second here


@pytest.fixture
def worker_queue(celery_worker_queue, monkeypatch):
    """`.delay()` in the live server sends to this test's worker: Celery's router reads the default
    queue from the configuration each time it sends."""
    monkeypatch.setitem(csm.celery.app.conf, "task_default_queue", celery_worker_queue)
    return celery_worker_queue


@pytest.fixture
def org():
    org = make_org("acme")
    make_member(org, role="admin", email="admin@acme.example")
    make_account(org, external_id="ACME", name="Acme Inc", domain="acme.example")
    return org


@dataclass
class Case:
    label: str
    fake: Callable[[], object]
    seed: Callable[[object], str]  # fills the fake; returns the name of the record that matches nothing
    fields: Callable[[object], dict[str, str]]  # form label → value typed in
    secret: str
    verdict: str  # what "Test connection" answers
    first: tuple[int, int, int, int]  # pages, created, updated, unmatched of the first sync
    again: tuple[int, int, int, int]  # the same for "Sync now" right after


def seed_hubspot(fake) -> str:
    company = fake.add_company(name="Acme Corp", domain="acme.example")  # renames the account
    fake.add_contact(email="wile@acme.example", first="Wile", last="Coyote", company=company)
    fake.add_contact(email="someone@gmail.com", first="Some", last="One")  # in no company
    return "Some One"


def seed_stripe(fake) -> str:
    fake.add_customer(email="finance@acme.example", name="Acme Billing")
    fake.add_customer(email="ops@unknown.example", name="Unknown Ltd")
    return "Unknown Ltd"


def seed_zendesk(fake) -> str:
    acme = fake.add_organization("Acme Inc", ["acme.example"])
    fake.add_ticket(acme, subject="Login broken", priority="urgent", status="open")
    fake.add_organization("Unknown Ltd", ["unknown.example"])
    return "Unknown Ltd"


def seed_intercom(fake) -> str:
    fake.add_company(name="Acme", company_id="acme-1", website="https://www.acme.example")
    fake.add_company(name="Unknown Ltd", company_id="unk", website="https://unknown.example")
    fake.add_conversation(email="jane@acme.example", subject="Invoice wrong")
    return "Unknown Ltd"


CASES = [
    Case(
        label="HubSpot",
        fake=hubspot_fake.HubSpotFake,
        seed=seed_hubspot,
        fields=lambda fake: {"Private app access token": hubspot_fake.TOKEN, "API base URL (leave as is)": fake.url},
        secret=hubspot_fake.TOKEN,
        verdict="Connected to HubSpot: the token reads owners, 1 companies, 2 contacts and 0 deals in closedwon",
        first=(4, 1, 1, 1),  # a contact created, the account renamed, the contact in no company
        again=(4, 0, 0, 0),  # nothing changed since
    ),
    Case(
        label="Stripe",
        fake=stripe_fake.StripeFake,
        seed=seed_stripe,
        fields=lambda fake: {"Restricted key": stripe_fake.KEY, "API address": fake.url},
        secret=stripe_fake.KEY,
        verdict="Connected to Stripe in test mode: the key reads customers, subscriptions, invoices and events "
        "(newest customer: Unknown Ltd).",
        first=(3, 1, 0, 1),  # customers, subscriptions, invoices listed
        again=(1, 0, 0, 1),  # the events since: the unknown customer's creation again
    ),
    Case(
        label="Zendesk",
        fake=zendesk_fake.ZendeskFake,
        seed=seed_zendesk,
        fields=lambda fake: {
            "Agent e-mail": zendesk_fake.EMAIL,
            "API token": zendesk_fake.TOKEN,
            "Subdomain": "globo",
            "Seconds between export requests": "0",
            "API address": fake.url,
        },
        secret=zendesk_fake.TOKEN,
        verdict="Connected to Zendesk at globo.zendesk.com as Ana Admin (admin@globo.example, admin).",
        first=(2, 2, 0, 1),  # the organization linked, its ticket
        again=(2, 0, 0, 1),  # the organization export repeats its last second
    ),
    Case(
        label="Intercom",
        fake=intercom_fake.IntercomFake,
        seed=seed_intercom,
        fields=lambda fake: {"Access token": intercom_fake.TOKEN, "API address": fake.url},
        secret=intercom_fake.TOKEN,
        verdict=f"Connected to Intercom workspace {intercom_fake.APP_NAME} as Ana Admin.",
        first=(3, 2, 0, 1),  # the company linked, its conversation as a ticket
        again=(3, 0, 0, 1),  # companies are scrolled in full each time
    ),
]


def open_integrations(page, live_server):
    sign_in(page, live_server, "admin@acme.example")
    page.get_by_role("link", name="Integrations").click()
    expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()


def card_of(page, label: str):
    return page.get_by_role("region", name=label, exact=True)


def set_up(page, label: str, fields: dict[str, str]):
    """Open the card's form, type the fields in, connect; returns the card."""
    card = card_of(page, label)
    card.get_by_text(f"Set up {label}").click()  # a <details> summary: the form opens on demand
    for name, value in fields.items():
        card.get_by_label(name, exact=True).fill(value)
    card.get_by_role("button", name=f"Connect {label}").click()
    expect(page.get_by_text(f"{label} connection saved.")).to_be_visible()
    return card_of(page, label)


def progress_of(card):
    return card.locator("[id^=progress-]")


def finished(status: str, counts: tuple[int, int, int, int]) -> re.Pattern:
    pages, created, updated, unmatched = counts
    return re.compile(
        rf"Last sync .* ago: {status} — {pages} pages, {created} created, {updated} updated, {unmatched} unmatched\."
    )


def sync_now(page, card, label: str):
    card.get_by_role("button", name="Sync now").click()
    expect(page.get_by_text(f"{label} sync started in the background.")).to_be_visible()


def history_of(page, label: str):
    """The card's history as the page shows it after a reload: one row of cells per run, newest first."""
    page.reload()
    card = card_of(page, label)
    card.get_by_text("History", exact=True).click()
    rows = card.locator("table.data tbody tr")
    return card, rows


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.label.lower())
def test_admin_connects_tests_and_syncs_through_the_page(page, live_server, screenshot, org, worker_queue, case):
    with case.fake() as fake:
        stranger = case.seed(fake)
        open_integrations(page, live_server)

        card = set_up(page, case.label, case.fields(fake))
        expect(page.get_by_text("The first sync started")).to_be_visible()
        expect(progress_of(card)).to_contain_text(finished("succeeded", case.first), timeout=WAIT)

        card.get_by_role("button", name="Test connection").click()
        expect(card.get_by_role("status").filter(has_text=case.verdict)).to_be_visible()  # filled in by htmx

        sync_now(page, card, case.label)
        card = card_of(page, case.label)
        expect(progress_of(card)).to_contain_text(finished("succeeded", case.again), timeout=WAIT)

        card, rows = history_of(page, case.label)
        expect(rows).to_have_count(2)
        for row, trigger, counts in ((rows.nth(0), "manual", case.again), (rows.nth(1), "first", case.first)):
            expect(row.locator("td")).to_have_text([re.compile(r"\S"), trigger, "Succeeded", *map(str, counts)])
        assert case.secret not in page.content()

        card.get_by_role("link", name="1 unmatched").click()
        expect(page.get_by_role("heading", name=f"Unmatched records from {case.label}")).to_be_visible()
        expect(page.locator("table.data tbody tr")).to_have_count(1)
        expect(page.get_by_role("cell", name=stranger, exact=True)).to_be_visible()
        assert case.secret not in page.content()
        screenshot()


def seed_salesforce(fake):
    fake.add("Account", Id="001A", Name="Acme", Website="https://www.acme.example", OwnerId="005X", Owner=None)
    fake.add("Contact", Id="003A", AccountId="001A", FirstName="Ann", LastName="Lee", Email="ann@acme.example")
    fake.add("Contact", Id="003Z", AccountId=None, FirstName="No", LastName="Account", Email="x@y.example")


def test_admin_connects_salesforce_with_oauth_through_the_page(page, live_server, screenshot, org, worker_queue):
    with salesforce_fake.SalesforceFake() as fake:
        seed_salesforce(fake)
        open_integrations(page, live_server)

        card = set_up(
            page,
            "Salesforce",
            {
                "Instance URL": fake.url,
                "Consumer key": salesforce_fake.CLIENT_ID,
                "Consumer secret": salesforce_fake.CLIENT_SECRET,
                "Login URL": fake.url,
            },
        )
        # Saved, but there is no token yet: no sync starts before the admin signs in at Salesforce.
        expect(page.get_by_text("Now sign in to Salesforce")).to_be_visible()
        assert not [r for r in fake.requests if r.path.startswith("/services/data/")]

        # To the fake's authorize page, which approves and sends the browser back with a code and the state.
        card.get_by_role("link", name="Connect with Salesforce (OAuth)").click()
        expect(page.get_by_text("Salesforce connected.")).to_be_visible()
        assert page.url == f"{live_server.url}/o/acme/integrations/"
        asked = next(r.query for r in fake.requests if r.path == "/services/oauth2/authorize")
        assert (asked["client_id"], asked["code_challenge_method"]) == (salesforce_fake.CLIENT_ID, "S256")
        assert fake.codes == {}  # the code was exchanged, with the PKCE verifier the challenge asked for
        # The sign-in completed the connection: the first sync starts on the worker at once.
        expect(page.get_by_text("The first sync started")).to_be_visible()
        card = card_of(page, "Salesforce")
        # Five objects read; Ann Lee created on Acme (matched by its website); the contact without an account
        # listed as unmatched.
        expect(progress_of(card)).to_contain_text(finished("succeeded", (5, 1, 0, 1)), timeout=WAIT)

        card.get_by_role("button", name="Test connection").click()
        expect(
            card.get_by_role("status").filter(has_text="Connected to Salesforce at 127.0.0.1: 1 accounts")
        ).to_be_visible()

        sync_now(page, card, "Salesforce")
        card = card_of(page, "Salesforce")
        # Incremental: nothing changed since, so nothing is read again (the unmatched contact stays listed).
        expect(progress_of(card)).to_contain_text(finished("succeeded", (5, 0, 0, 0)), timeout=WAIT)

        card, rows = history_of(page, "Salesforce")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator("td")).to_have_text([re.compile(r"\S"), "manual", "Succeeded", "5", "0", "0", "0"])
        expect(rows.nth(1).locator("td")).to_have_text([re.compile(r"\S"), "first", "Succeeded", "5", "1", "0", "1"])
        expect(card.get_by_text("Connected", exact=True)).to_be_visible()
        card.get_by_role("link", name="1 unmatched").click()
        expect(page.get_by_role("cell", name="Contact No Account (no account)")).to_be_visible()
        assert salesforce_fake.CLIENT_SECRET not in page.content()
        assert "token-2" not in page.content() and "refresh-web" not in page.content()

        screenshot()
