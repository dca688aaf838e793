"""HubSpot connector against a local HubSpot (real sockets, real HTTP client, HubSpot-shaped answers)."""

import base64
import os
import signal
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from django.conf import settings as django_settings

from accounts.models import Account, ArrChange, Contact
from csm.tenancy import tenant
from integrations.http import ProviderError, RequestBudget
from integrations.models import Connection, SourceRecord, UnmatchedRecord
from integrations.providers.hubspot import (
    HUBSPOT_401,
    INDEX_LAG_MS,
    PAGE_SIZE,
    HubSpotConnector,
    add_months,
    advance,
    explain,
    local_date,
    parse_stage_map,
)
from integrations.services import connection_save
from integrations.sync import connection_sync, connector_for
from tests.factories import make_account, make_member, make_org
from tests.integrations.fake_server import Reply
from tests.integrations.hubspot_fake import CEILING, TOKEN, HubSpotFake, error_body, rate_limited

pytestmark = pytest.mark.django_db

COMPANIES_SEARCH = "/crm/v3/objects/companies/search"


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"h" * 32).decode()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The waits the client asked for, recorded instead of slept; no pacing between searches."""
    asked: list[float] = []
    monkeypatch.setattr(HubSpotConnector, "sleep", staticmethod(asked.append))
    monkeypatch.setattr(HubSpotConnector, "search_interval", 0)
    return asked


@pytest.fixture
def fake():
    with HubSpotFake() as server:
        yield server


@pytest.fixture
def org():
    return make_org("hooli", timezone_name="America/New_York")


def connect(org, fake, *, token: str = TOKEN, **settings) -> Connection:
    with tenant(org):
        return connection_save(
            org=org, provider="hubspot", secrets={"access_token": token}, settings={"api_base": fake.url, **settings}
        )


def sync(org, connection):
    return connection_sync(org=org, connection=connection, trigger="manual")


def reload(org, connection) -> Connection:
    with tenant(org):
        return Connection.objects.get(pk=connection.pk)


def accounts(org) -> dict:
    with tenant(org):
        return {a.external_id: a for a in Account.objects.select_related("csm")}


def contacts(org) -> dict:
    with tenant(org):
        return {c.external_id: c for c in Contact.objects.select_related("account")}


def unmatched(org) -> dict:
    with tenant(org):
        return {(r.stream, r.external_id): r.name for r in UnmatchedRecord.objects.all()}


def searches(fake, object_type: str, start: int = 0) -> list[dict]:
    return [r.json() for r in fake.requests[start:] if r.path == f"/crm/v3/objects/{object_type}/search"]


def company_search(nth: int):
    """Matches the nth search of companies (1-based) the fake receives."""
    seen = []

    def when(request) -> bool:
        if request.path != COMPANIES_SEARCH:
            return False
        seen.append(request)
        return len(seen) == nth

    return when


def after_first_page(request) -> bool:
    """A search of companies anchored anywhere but the start."""
    return request.path == COMPANIES_SEARCH and request.json()["filterGroups"][0]["filters"][0]["value"] != "0"


def ms(company: dict) -> int:
    return round(HubSpotFake._iso_ms(company["properties"]["hs_lastmodifieddate"]))


# --- full sync ------------------------------------------------------------------------------------


def test_first_sync_creates_and_updates_accounts_contacts_arr_and_csm(org, fake):
    jane = make_member(org, role="csm", email="Jane.Roe@vendor.example")
    acme = make_account(org, external_id="ACME", name="ACME (old name)", domain="acme.example", stage="adopting")
    make_account(org, external_id="UNTOUCHED", domain="untouched.example", stage="steady")
    owner_jane = fake.add_owner("jane.roe@vendor.example", first="Jane", last="Roe")
    owner_bob = fake.add_owner("bob@vendor.example", first="Bob")  # not a member: CSM left alone
    acme_co = fake.add_company(name="Acme Corp", domain="acme.example", owner=owner_jane, lifecycle="customer")
    globex = fake.add_company(name="Globex", domain="globex.example", owner=owner_bob, lifecycle="opportunity")
    initech = fake.add_company(name="Initech", domain="www.initech.example", owner=owner_jane, lifecycle="lead")
    fake.add_contact(email="Wile@acme.example", first="Wile", last="Coyote", company=acme_co, phone="+1 555 0100",
                     title="CTO")  # fmt: skip
    fake.add_contact(email="road@acme.example", first="Road", last="Runner", company=acme_co)
    fake.add_contact(email="hank@globex.example", first="Hank", last="Scorpio", company=globex)
    loose = fake.add_contact(email="someone@gmail.com", first="Some", last="One")
    orphan = fake.add_contact(email="x@gone.example", first="Gone", company="5999999999")  # deleted in HubSpot
    fake.add_deal(name="Acme 2025", amount="120000.00", closedate="2025-06-15T00:00:00Z", company=acme_co,
                  others=(globex,))  # fmt: skip
    fake.add_deal(name="Acme 2024", amount="50000", closedate="2024-06-15T00:00:00Z", company=acme_co)
    fake.add_deal(name="Acme expansion", amount="900000", closedate="2026-01-10T00:00:00Z", company=acme_co,
                  stage="appointmentscheduled")  # fmt: skip
    fake.add_deal(name="Initech 2025", amount="8,400.50", closedate="2025-02-28T16:00:00Z", company=initech)
    no_company = fake.add_deal(name="Mystery deal", amount="999", closedate="2025-01-01T00:00:00Z")
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    found = accounts(org)
    assert set(found) == {"ACME", "UNTOUCHED", f"hubspot-{globex['id']}", f"hubspot-{initech['id']}"}
    # Matched by domain: HubSpot's name, stage from the lifecycle mapping, CSM from the owner's e-mail.
    assert (found["ACME"].pk, found["ACME"].name, found["ACME"].stage, found["ACME"].csm) == (
        acme.pk,
        "Acme Corp",
        "steady",
        jane,
    )
    new_globex, new_initech = found[f"hubspot-{globex['id']}"], found[f"hubspot-{initech['id']}"]
    assert (new_globex.name, new_globex.domain, new_globex.stage, new_globex.csm) == (
        "Globex",
        "globex.example",
        "onboarding",
        None,
    )
    assert (new_initech.domain, new_initech.stage, new_initech.csm) == ("initech.example", "onboarding", jane)
    assert found["UNTOUCHED"].stage == "steady"
    # ARR and renewal from the latest won deal; renewal = close date + 12 months.
    assert (found["ACME"].arr, found["ACME"].renewal_date) == (Decimal("120000.00"), date(2026, 6, 15))
    # 16:00 UTC on Feb 28 is still Feb 28 in New York; + 12 months.
    assert (new_initech.arr, new_initech.renewal_date) == (Decimal("8400.50"), date(2026, 2, 28))
    assert (new_globex.arr, new_globex.renewal_date) == (Decimal("0"), None)
    with tenant(org):
        history = sorted(ArrChange.objects.values_list("account__external_id", "effective_date", "arr"))
    assert history == [
        ("ACME", date(2025, 6, 15), Decimal("120000.00")),
        (f"hubspot-{initech['id']}", date(2025, 2, 28), Decimal("8400.50")),
    ]
    people = contacts(org)
    assert {k: (c.account.external_id, c.name, c.email, c.phone, c.title) for k, c in people.items()} == {
        f"hubspot-{fake.objects['contacts'][k]['id']}": v
        for k, v in {
            "1000001": ("ACME", "Wile Coyote", "wile@acme.example", "+1 555 0100", "CTO"),
            "1000002": ("ACME", "Road Runner", "road@acme.example", "", ""),
            "1000003": (f"hubspot-{globex['id']}", "Hank Scorpio", "hank@globex.example", "", ""),
        }.items()
    }
    assert unmatched(org) == {
        ("contacts", loose["id"]): "Some One",
        ("contacts", orphan["id"]): "Gone",
        ("deals", no_company["id"]): "Mystery deal",
    }
    # 2 accounts and 3 contacts created; ACME renamed, then ARR on ACME and Initech.
    assert (run.created, run.updated, run.unmatched) == (5, 3, 3)
    with tenant(org):
        assert SourceRecord.objects.filter(object_type="company").count() == 3
    # Only won deals are asked for, with the properties the settings name.
    deal_search = searches(fake, "deals")[0]
    assert {"propertyName": "dealstage", "operator": "IN", "values": ["closedwon"]} in deal_search["filterGroups"][0][
        "filters"
    ]
    assert {"amount", "closedate"} <= set(deal_search["properties"])
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {TOKEN}"}

    again = sync(org, reload(org, connection))

    assert (again.status, again.created, again.updated) == ("succeeded", 0, 0)
    assert len(accounts(org)) == 4 and len(contacts(org)) == 3


def test_prospects_are_not_accounts_until_they_are_won_or_reach_a_listed_stage(org, fake):
    lead = fake.add_company(name="Prospect Ltd", domain="prospect.example", lifecycle="lead")
    subscriber = fake.add_company(name="Newsletter Co", domain="news.example", lifecycle="subscriber")
    fake.add_contact(email="pat@prospect.example", first="Pat", last="Lead", company=lead)
    connection = connect(org, fake)

    first = sync(org, connection)

    assert first.status == "succeeded", first.error
    # No account, and neither the companies nor their people are listed as records needing a mapping.
    assert accounts(org) == {} and contacts(org) == {} and unmatched(org) == {}
    assert (first.created, first.unmatched) == (0, 0)

    fake.add_deal(name="Prospect 2026", amount="12000", closedate="2026-05-01T00:00:00Z", company=lead)  # won
    fake.touch("companies", subscriber["id"], lifecyclestage="customer")

    won = sync(org, reload(org, connection))

    assert won.status == "succeeded", won.error
    found = accounts(org)
    assert set(found) == {f"hubspot-{lead['id']}", f"hubspot-{subscriber['id']}"}
    assert found[f"hubspot-{lead['id']}"].arr == Decimal("12000")
    assert found[f"hubspot-{subscriber['id']}"].stage == "steady"  # customer=steady in the default mapping
    # The won company's person, unchanged since the first sync skipped them, comes with it.
    assert {c.email: c.account.external_id for c in contacts(org).values()} == {
        "pat@prospect.example": f"hubspot-{lead['id']}"
    }
    assert unmatched(org) == {}


def test_settings_choose_the_deal_properties_stages_and_lifecycle_mapping(org, fake):
    company = fake.add_company(name="Umbrella", domain="umbrella.example", lifecycle="customer")
    fake.add_deal(name="Umbrella renewal", amount="1", closedate="2025-03-01T00:00:00Z", company=company,
                  stage="1234567", annual_recurring_revenue="36000", contract_end_date="2026-09-30")  # fmt: skip
    fake.add_deal(name="Umbrella won", amount="2", closedate="2025-03-01T00:00:00Z", company=company)
    connection = connect(
        org,
        fake,
        arr_property="annual_recurring_revenue",
        renewal_property="contract_end_date",
        renewal_term_months="0",
        deal_stages="1234567",
        lifecycle_stages="customer=adopting",
    )

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    account = accounts(org)[f"hubspot-{company['id']}"]
    assert (account.stage, account.arr, account.renewal_date) == ("adopting", Decimal("36000.00"), date(2026, 9, 30))


def test_wrong_settings_fail_the_run_with_what_to_change(org, fake):
    fake.add_company(name="Umbrella", domain="umbrella.example")
    misspelt = connect(org, fake, arr_property="anual_revenue")

    run = sync(org, misspelt)

    assert run.status == "failed"
    assert run.error == (
        "HubSpot has no deal property named 'anual_revenue' (the ARR property setting): use the internal name "
        "shown in HubSpot under Settings → Properties → Deal properties"
    )
    assert len(accounts(org)) == 1  # companies and contacts before it are kept

    with tenant(org):
        bad_stage = connection_save(
            org=org, provider="hubspot", secrets={}, settings={"arr_property": "", "lifecycle_stages": "customer=won"}
        )
    run = sync(org, bad_stage)

    assert run.status == "failed"
    assert run.error == (
        "The HubSpot setting 'Lifecycle stage → account stage' is wrong: the lifecycle stage mapping entry "
        "'customer=won' should read lifecyclestage=stage, with a stage among onboarding, adopting, steady, churned "
        "or keep"
    )


# --- incremental sync and cursors -----------------------------------------------------------------


def test_a_later_sync_reads_only_what_changed_since_the_cursor(org, fake):
    made = fake.populate(companies=30, contacts_per_company=2, deals_per_company=1)["companies"]
    connection = connect(org, fake)
    first = sync(org, connection)
    assert (first.status, first.created) == ("succeeded", 30 + 60), first.error
    cursor = reload(org, connection).cursors["companies"]
    assert cursor == {"since": ms(made[-1]), "last": ms(made[-1]), "seen": [made[-1]["id"]], "tie": None}
    changed = [made[3], made[11], made[20]]
    renamed = sorted(company["properties"]["name"] + " (renamed)" for company in changed)
    for company in changed:
        fake.touch("companies", company["id"], name=company["properties"]["name"] + " (renamed)")
    mark = len(fake.requests)
    served = len(fake.served)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert (run.created, run.updated) == (0, 3)
    # One search per object, starting a little before the cursor for HubSpot's index lag.
    [companies] = searches(fake, "companies", mark)
    assert companies["filterGroups"][0]["filters"] == [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(cursor["since"] - INDEX_LAG_MS)}
    ]
    assert companies["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    # HubSpot answers the last company read before (it is in the lag window) and the three changed ones.
    answered = dict(fake.served[served:])
    assert answered["companies"] == [made[-1]["id"]] + [c["id"] for c in changed]
    # Contacts and deals: one search each, answering only what sits in the lag window (read before).
    assert len(searches(fake, "contacts", mark)) == len(searches(fake, "deals", mark)) == 1
    last_company = made[-1]["id"]
    assert answered["contacts"] == [
        c["id"] for c in fake.objects["contacts"].values() if c["properties"]["associatedcompanyid"] == last_company
    ]
    assert answered["deals"] == [d for d, links in fake.deal_companies.items() if links == [(last_company, True)]]
    names = {a.external_id: a.name for a in accounts(org).values()}
    assert sorted(n for n in names.values() if n.endswith("(renamed)")) == renamed


def test_pages_are_read_from_the_last_record_read_never_by_offset(org, fake):
    fake.populate(companies=450, owners=150)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert len(accounts(org)) == 450
    by_modified = sorted(fake.objects["companies"].values(), key=ms)
    pages = searches(fake, "companies")
    # Each page starts at the last record of the one before (served again, and skipped).
    assert [p["filterGroups"][0]["filters"][0]["value"] for p in pages] == [
        "0",
        str(ms(by_modified[PAGE_SIZE - 1])),
        str(ms(by_modified[2 * PAGE_SIZE - 2])),
    ]
    assert all("after" not in p and p["limit"] == PAGE_SIZE for p in pages)
    # Owners are listed with HubSpot's paging; every owner reached the map companies read.
    owners = [r for r in fake.requests if r.path == "/crm/v3/owners"]
    assert [r.query.get("after") for r in owners] == [None, "100"]
    assert len(reload(org, connection).cursors["owners"]["owners"]) == 150
    # companies: 3 pages, owners: 2, contacts and deals: 1 each
    assert run.pages == 7


def test_more_than_ten_thousand_changes_with_shared_timestamps_are_all_read(org, fake):
    """Search refuses offsets past 10,000; anchored pages never need them, even when timestamps repeat."""
    fake.populate(companies=10_000, share=40, owners=3)
    # A bulk import: 450 companies (more than a page) modified in the same millisecond.
    bulk = fake.tick(3_600_000)
    for n in range(450):
        fake.add_company(name=f"Imported {n}", domain=f"imported{n}.com", modified=bulk)
    fake.populate(companies=50, share=25, owners=0, start_at=10_000)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert (run.created, run.updated) == (10_500, 0)
    with tenant(org):
        assert Account.objects.count() == 10_500
        assert SourceRecord.objects.filter(object_type="company").count() == 10_500
    pages = searches(fake, "companies")
    assert all(int(p.get("after") or 0) < CEILING for p in pages)
    # The bulk-imported millisecond was read by id, three pages of it.
    by_id = [p for p in pages if p["sorts"][0]["propertyName"] == "hs_object_id"]
    assert len(by_id) == 3
    assert by_id[0]["filterGroups"][0]["filters"] == [
        {"propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": str(bulk)},
        {"propertyName": "hs_object_id", "operator": "GT", "value": "0"},
    ]
    # A page starts again at its predecessor's last timestamp: at most 40 records (one shared
    # timestamp) are served twice per page, and skipped.
    assert len(pages) <= -(-10_500 // (PAGE_SIZE - 40)) + len(by_id)
    beyond = httpx.post(
        f"{fake.url}{COMPANIES_SEARCH}",
        json={"limit": 100, "after": str(CEILING)},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert beyond.status_code == 400  # the ceiling is real on this server


# --- faults ---------------------------------------------------------------------------------------


def test_a_429_waits_for_retry_after_then_succeeds(org, fake, waits):
    fake.populate(companies=250)
    fake.fail(Reply(429, rate_limited(), headers={"Retry-After": "3"}), when=company_search(2))

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert len(accounts(org)) == 250
    assert waits == [3.0]
    assert len(searches(fake, "companies")) == 3  # page 1, page 2 refused, page 2 again


def test_a_500_storm_fails_the_run_keeps_committed_pages_and_resumes_there(org, fake, waits):
    made = fake.populate(companies=450)["companies"]
    fake.fail(Reply(500, error_body("internal error", category="INTERNAL_ERROR")), times=5, when=after_first_page)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert (
        run.error == "HubSpot kept failing (500) after 5 tries; the data synced before stays, and the next run retries"
    )
    assert len(waits) == 4  # backoff between the five tries
    assert set(accounts(org)) == {f"hubspot-{c['id']}" for c in made[:PAGE_SIZE]}
    cursor = reload(org, connection).cursors["companies"]
    assert cursor["since"] == ms(made[PAGE_SIZE - 1])
    assert "contacts" not in reload(org, connection).cursors
    assert reload(org, connection).status == "failing"
    mark = len(fake.requests)

    resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (250, 0)
    assert set(accounts(org)) == {f"hubspot-{c['id']}" for c in made}
    assert searches(fake, "companies", mark)[0]["filterGroups"][0]["filters"][0]["value"] == str(
        cursor["since"] - INDEX_LAG_MS
    )


def test_a_malformed_page_fails_the_run_without_saving_it(org, fake):
    made = fake.populate(companies=300)["companies"]
    fake.fail(Reply(200, '{"total": 300, "results": [{"id": "5000000201", "properties": {"na'), when=company_search(2))
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == (
        "HubSpot sent a page that is not valid JSON (/crm/v3/objects/companies/search); nothing from it was saved, "
        "and the next run reads it again"
    )
    assert set(accounts(org)) == {f"hubspot-{c['id']}" for c in made[:PAGE_SIZE]}
    assert reload(org, connection).cursors["companies"]["since"] == ms(made[PAGE_SIZE - 1])
    assert reload(org, connection).last_error == run.error


def test_a_refused_token_says_what_to_do(org, fake):
    fake.populate(companies=3)
    connection = connect(org, fake, token="pat-na1-revoked")

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == HUBSPOT_401
    assert reload(org, connection).last_error == HUBSPOT_401
    assert reload(org, connection).status == "failing"
    connector = connector_for(reload(org, connection))
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert str(refused.value) == HUBSPOT_401


def test_the_connection_test_counts_what_it_reads_or_names_the_missing_scope(org, fake):
    fake.populate(companies=12, contacts_per_company=2, deals_per_company=1)
    fake.add_deal(name="Lost", amount="1", closedate="2025-01-01T00:00:00Z", stage="closedlost")
    connection = connect(org, fake)
    connector = connector_for(connection)

    verdict = connector.test(connector.client(RequestBudget(limit=5)))

    assert verdict == (
        "Connected to HubSpot: the token reads owners, 12 companies, 24 contacts and 12 deals in closedwon "
        "(ARR from amount, renewal from closedate + 12 months)."
    )
    fake.scopes.discard("crm.objects.deals.read")
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert str(refused.value) == (
        "HubSpot refused the request (403): the private app lacks the scope crm.objects.deals.read; add it in "
        "HubSpot (Settings → Integrations → Private Apps → your app → Scopes), then sync again"
    )
    run = sync(org, connection)
    assert run.status == "failed" and run.error == str(refused.value)
    assert len(accounts(org)) == 12  # what the token could read is kept


# --- matching -------------------------------------------------------------------------------------


def test_contacts_and_deals_of_a_company_created_after_the_companies_were_read_still_match(org, fake):
    fake.populate(companies=2)
    late = {}

    def company_created_meanwhile():
        late["company"] = fake.add_company(
            name="Late Inc", domain="late.example", modified=fake.clock - 10 * 86_400_000
        )
        fake.add_contact(email="amy@late.example", first="Amy", company=late["company"])
        fake.add_deal(name="Late 2025", amount="5000", closedate="2025-05-05T00:00:00Z", company=late["company"])

    fake.before_search["contacts"] = company_created_meanwhile

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    account = accounts(org)[f"hubspot-{late['company']['id']}"]
    assert (account.name, account.arr) == ("Late Inc", Decimal("5000.00"))
    assert [c.account_id for c in contacts(org).values() if c.email == "amy@late.example"] == [account.pk]
    assert unmatched(org) == {}
    batch = [r.json() for r in fake.requests if r.path == "/crm/v3/objects/companies/batch/read"]
    assert [[i["id"] for i in b["inputs"]] for b in batch] == [[late["company"]["id"]]]


def test_another_organization_never_sees_these_accounts(org, fake):
    make_account(org, external_id="ACME", domain="acme.example", arr=Decimal("10"))
    other = make_org("elsewhere")
    twin = make_account(other, external_id="ACME", domain="acme.example", arr=Decimal("1000"), stage="churned")
    company = fake.add_company(name="Acme Corp", domain="acme.example", lifecycle="customer")
    fake.add_contact(email="wile@acme.example", company=company)
    fake.add_deal(name="Acme", amount="777", closedate="2025-01-01T00:00:00Z", company=company)
    fake.add_contact(email="nobody@nowhere.example")

    assert sync(org, connect(org, fake)).status == "succeeded"

    assert accounts(org)["ACME"].arr == Decimal("777.00") and len(unmatched(org)) == 1
    assert unmatched(other) == {} and contacts(other) == {}
    with tenant(other):
        assert SourceRecord.objects.count() == 0
        assert Connection.objects.count() == 0
        assert ArrChange.objects.count() == 0
        assert list(Account.objects.values_list("pk", "name", "arr", "stage")) == [
            (twin.pk, twin.name, Decimal("1000.00"), "churned")
        ]
    # The other organization's own connection to another portal builds its own accounts.
    with HubSpotFake() as portal:
        portal.add_company(name="Acme Corp", domain="acme.example", lifecycle="evangelist")
        assert sync(other, connect(other, portal)).status == "succeeded"
    assert accounts(other)["ACME"].stage == "steady"
    assert accounts(org)["ACME"].arr == Decimal("777.00")


# --- kill between pages, then resume --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_between_pages_resumes_with_nothing_lost_or_duplicated(subprocess_env):
    org = make_org("killed")
    with HubSpotFake() as fake:
        made = fake.populate(companies=650, contacts_per_company=1)["companies"]
        connection = connect(org, fake)
        third_page = company_search(3)
        held = fake.block(third_page)
        child = subprocess.Popen(
            [sys.executable, "manage.py", "sync", "--org", org.slug, "--provider", "hubspot"],
            cwd=django_settings.BASE_DIR,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while len(searches(fake, "companies")) < 3:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the sync never asked for the third page"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        fake.hold = None
        held.set()

        # Two pages committed: 200 companies, then 199 (the second starts at the first one's last).
        committed = 2 * PAGE_SIZE - 1
        assert set(accounts(org)) == {f"hubspot-{c['id']}" for c in made[:committed]}
        assert reload(org, connection).cursors["companies"]["since"] == ms(made[committed - 1])
        mark = len(fake.requests)

        resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (650 - committed + 650, 0)  # the other companies, every contact
    with tenant(org):
        assert Account.objects.count() == 650
        assert SourceRecord.objects.filter(object_type="company").count() == 650
        assert Contact.objects.count() == 650
    assert set(accounts(org)) == {f"hubspot-{c['id']}" for c in made}
    # The resumed run starts at the cursor: the 251 companies left take two pages.
    assert len(searches(fake, "companies", mark)) == 2


# --- pure rules -----------------------------------------------------------------------------------


def test_advance_moves_the_anchor_to_the_last_record_and_skips_what_it_read():
    start = {"since": 0, "last": None, "seen": [], "tie": None}

    state, fresh, done = advance(start, [("1", 10), ("2", 20), ("3", 20)], limit=3)

    assert (state, fresh, done) == ({"since": 20, "last": 20, "seen": ["2", "3"], "tie": None}, {"1", "2", "3"}, False)

    state, fresh, done = advance(state, [("3", 20), ("2", 20), ("4", 20)], limit=3)

    # A full page at the anchor's timestamp cannot move the anchor: read that millisecond by id.
    assert (state["tie"], fresh, done) == (0, {"4"}, False)

    state, fresh, done = advance(state, [("2", 20), ("3", 20), ("4", 20)], limit=3)
    assert (state["tie"], fresh, done) == (4, set(), False)
    state, fresh, done = advance(state, [("5", 20)], limit=3)
    assert (state, fresh, done) == ({"since": 21, "last": 20, "seen": [], "tie": None}, {"5"}, False)
    state, fresh, done = advance(state, [("6", 30)], limit=3)
    assert (state, fresh, done) == ({"since": 30, "last": 30, "seen": ["6"], "tie": None}, {"6"}, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-15", date(2025, 6, 15)),
        ("2025-06-15T00:00:00Z", date(2025, 6, 15)),  # a picked date: midnight UTC
        ("2025-06-15T00:00:00.000Z", date(2025, 6, 15)),
        ("2025-06-15T02:30:00Z", date(2025, 6, 14)),  # an instant: on New York's calendar
        ("1750000000000", date(2025, 6, 15)),
        ("", None),
        ("not a date", None),
    ],
)
def test_local_date_reads_hubspot_dates_and_datetimes(value, expected):
    assert local_date(value, ZoneInfo("America/New_York")) == expected


def test_add_months_keeps_the_day_or_the_months_last():
    assert add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert add_months(date(2025, 11, 15), 14) == date(2027, 1, 15)


def test_the_stage_mapping_reads_pairs_and_refuses_unknown_stages():
    assert parse_stage_map("Customer = steady; lead=keep\nother=churned") == {
        "customer": "steady",
        "lead": "keep",
        "other": "churned",
    }
    with pytest.raises(ValueError, match="'lead'"):
        parse_stage_map("lead")


def test_errors_are_explained_in_plain_words():
    assert explain(401, "{}") == HUBSPOT_401
    assert explain(403, '{"status": "error", "message": "requires crm.objects.contacts.read"}') == (
        "HubSpot refused the request (403): the private app lacks the scope crm.objects.contacts.read; add it in "
        "HubSpot (Settings → Integrations → Private Apps → your app → Scopes), then sync again"
    )
    assert explain(400, '{"status": "error", "message": "Bad filter", "category": "VALIDATION_ERROR"}') == (
        "HubSpot rejected the request (400, VALIDATION_ERROR): Bad filter"
    )
    assert explain(400, "<html>") == "HubSpot rejected the request (400): no details"
