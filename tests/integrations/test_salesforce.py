"""Salesforce connector against a local Salesforce (real sockets, real HTTP client, REST-shaped answers)."""

import base64
from datetime import date
from decimal import Decimal

import pytest

from accounts.models import Account, Activity, Contact
from csm.tenancy import tenant
from integrations import credentials
from integrations.models import Connection, UnmatchedRecord
from integrations.providers import salesforce
from integrations.providers.salesforce import LIMIT_MESSAGE, RECONNECT, SalesforceConnector, bulk_records
from integrations.services import connection_save
from integrations.sync import connection_sync
from tests.factories import make_account, make_member, make_org
from tests.integrations.fake_server import Reply
from tests.integrations.salesforce_fake import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    JOBS,
    SalesforceFake,
    rsa_key_pair,
    sf_error,
)

pytestmark = pytest.mark.django_db

QUERY = f"{API}/query"


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"f" * 32).decode()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    asked: list[float] = []
    monkeypatch.setattr(SalesforceConnector, "sleep", staticmethod(asked.append))
    return asked


@pytest.fixture
def fake():
    with SalesforceFake() as server:
        yield server


@pytest.fixture
def org():
    return make_org("initech")


def connect(org, fake, *, token="token-1", **secrets) -> Connection:
    values = {"instance_url": fake.url, "client_id": CLIENT_ID, "access_token": token, "refresh_token": "refresh-1"}
    with tenant(org):
        return connection_save(
            org=org, provider="salesforce", secrets={**values, **secrets}, settings={"login_url": fake.url}
        )


def sync(org, connection):
    return connection_sync(org=org, connection=reload(org, connection), trigger="manual")


def reload(org, connection) -> Connection:
    with tenant(org):
        return Connection.objects.get(pk=connection.pk)


def accounts(org) -> dict:
    with tenant(org):
        return {a.external_id: a for a in Account.objects.all()}


def counts(org) -> tuple[int, int, int]:
    with tenant(org):
        return Account.objects.count(), Contact.objects.count(), Activity.objects.count()


def seed(fake):
    """Three accounts (one known by domain), contacts, a won opportunity, a task and an event."""
    fake.add("Account", Id="001A", Name="Acme", Website="https://www.acme.example", OwnerId="005X",
             Owner={"attributes": {"type": "User"}, "Email": "Dana@initech.example"})  # fmt: skip
    fake.add("Account", Id="001B", Name="Globex", Website="globex.example", OwnerId="005Y", Owner=None)
    fake.add("Account", Id="001C", Name="Umbrella", Website=None, OwnerId="005Y", Owner=None)
    fake.add("Contact", Id="003A", AccountId="001A", FirstName="Ann", LastName="Lee", Email="ann@acme.example")
    fake.add("Contact", Id="003B", AccountId="001B", FirstName=None, LastName="Bo", Email="bo@globex.example")
    fake.add("Contact", Id="003Z", AccountId=None, FirstName="No", LastName="Account", Email="x@y.example")
    sam = {"attributes": {"type": "User"}, "Email": "sam@initech.example"}
    fake.add("Opportunity", Id="006A", AccountId="001A", StageName="Closed Won", Amount=120000.0,
             CloseDate="2026-09-30", Owner=sam)  # fmt: skip
    fake.add("Opportunity", Id="006B", AccountId="001A", StageName="Prospecting", Amount=5.0, CloseDate="2027-01-01")
    fake.add("Task", Id="00TA", AccountId="001A", WhatId="001A", Subject="QBR prep", TaskSubtype="Call",
             ActivityDate="2026-02-20", CreatedDate="2026-02-19T09:00:00.000+0000")  # fmt: skip
    fake.add("Event", Id="00UA", AccountId=None, WhatId="001B", Subject="Kickoff",
             StartDateTime="2026-02-21T15:00:00.000+0000", CreatedDate="2026-02-01T09:00:00.000+0000")  # fmt: skip


# --- full and incremental sync --------------------------------------------------------------------


def test_full_sync_pages_through_every_object_and_maps_accounts_owners_opportunities_and_activities(org, fake):
    acme = make_account(org, external_id="ACME", domain="acme.example", arr=Decimal("1"))
    dana = make_member(org, email="dana@initech.example")
    sam = make_member(org, email="Sam@Initech.example", role="am")
    seed(fake)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    found = accounts(org)
    assert set(found) == {"ACME", "sf-001B", "sf-001C"}  # matched by domain, the others created
    # Users by e-mail: the account's owner is its CSM, the won opportunity's owner its AM.
    assert found["ACME"].pk == acme.pk and found["ACME"].csm_id == dana.pk and found["ACME"].am_id == sam.pk
    assert (found["ACME"].arr, found["ACME"].renewal_date) == (Decimal("120000.00"), date(2026, 9, 30))
    assert (found["sf-001B"].name, found["sf-001B"].domain) == ("Globex", "globex.example")
    with tenant(org):
        contacts = dict(Contact.objects.values_list("external_id", "account__external_id"))
        activities = sorted(Activity.objects.values_list("external_id", "account__external_id", "kind"))
    assert contacts == {"sf-003A": "ACME", "sf-003B": "sf-001B"}
    assert activities == [("sf-00TA", "ACME", "call"), ("sf-00UA", "sf-001B", "meeting")]
    assert run.unmatched == 1  # the contact without an account
    # Accounts: 3 records at 2 per page = 2 pages, following nextRecordsUrl.
    assert [r.path for r in fake.requests if r.path.startswith(QUERY)][:3] == [QUERY, QUERY, f"{QUERY}/01g0-2"]
    assert fake.requests[0].query["q"] == "SELECT COUNT() FROM Account"  # under the bulk threshold
    cursor = reload(org, connection).cursors["Account"]
    assert cursor == {"since": fake.objects["Account"][-1]["SystemModstamp"], "next": None}


def test_incremental_sync_queries_only_what_changed_since_the_cursor(org, fake):
    seed(fake)
    connection = connect(org, fake)
    assert sync(org, connection).status == "succeeded"
    mark = len(fake.requests)
    fake.touch(fake.objects["Account"][2], Name="Umbrella Corp")
    fake.add("Account", Id="001D", Name="Hooli", Website="hooli.example", OwnerId="005Y", Owner=None)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    queries = [r.query["q"] for r in fake.requests[mark:] if r.path == QUERY]
    assert "WHERE SystemModstamp > 2026-03-01T10:03:00Z" in queries[0]
    assert accounts(org)["sf-001D"].name == "Hooli"
    assert (run.created, run.pages) == (1, 5)  # one new account; one page per object
    assert counts(org) == (4, 2, 2)


# --- Bulk API 2.0 for the first pull of large objects --------------------------------------------


def large_from(monkeypatch, records: int) -> None:
    """Objects of `records` or more are read by a bulk job on their first pull, 2 records per results page."""
    monkeypatch.setattr(salesforce, "BULK_THRESHOLD", records)
    monkeypatch.setattr(salesforce, "BULK_PAGE_RECORDS", 2)


def soql_reads(fake, since: int = 0) -> list[str]:
    """Record reads through the REST query resource (first pages and nextRecordsUrl), not COUNT()."""
    return [
        r.query.get("q") or r.path
        for r in fake.requests[since:]
        if r.path.startswith(QUERY) and "COUNT()" not in r.query.get("q", "")
    ]


def results_asked(fake, since: int = 0) -> list[tuple[str, str | None]]:
    """(job id, locator) of each results page asked for."""
    return [
        (r.path.split("/")[-2], r.query.get("locator"))
        for r in fake.requests[since:]
        if r.path.startswith(JOBS) and r.path.endswith("/results")
    ]


def landed(org) -> dict:
    """What a sync wrote, in terms two organizations can compare."""
    with tenant(org):
        return {
            "accounts": sorted(
                Account.objects.values_list("external_id", "name", "domain", "csm__email", "arr", "renewal_date")
            ),
            "contacts": sorted(Contact.objects.values_list("external_id", "account__external_id", "name", "email")),
            "activities": sorted(
                Activity.objects.values_list("external_id", "account__external_id", "occurred_at", "kind", "summary")
            ),
        }


def five_accounts(fake) -> None:
    for n in range(5):
        fake.add("Account", Id=f"001K{n}", Name=f"Kilo {n}", Website=f"kilo{n}.example", OwnerId="005Y", Owner=None)


def second_results_page(request) -> bool:
    return request.path.endswith("/results") and bool(request.query.get("locator"))


def test_a_first_pull_over_the_threshold_goes_through_bulk_jobs_and_lands_what_soql_would(fake, monkeypatch):
    seed(fake)
    by_soql, by_bulk = make_org("by-soql"), make_org("by-bulk")
    for org in (by_soql, by_bulk):
        make_account(org, external_id="ACME", name="Acme", domain="acme.example", arr=Decimal("1"))
        make_member(org, email="dana@initech.example")
    assert sync(by_soql, connect(by_soql, fake)).status == "succeeded"
    assert fake.jobs_started == []
    mark = len(fake.requests)
    large_from(monkeypatch, 1)  # every object is large
    connection = connect(by_bulk, fake)

    run = sync(by_bulk, connection)

    assert run.status == "succeeded", run.error
    assert [fake.jobs[j]["object"] for j in fake.jobs_started] == ["Account", "Contact", "Opportunity", "Task", "Event"]
    assert fake.jobs[fake.jobs_started[0]]["query"] == (
        "SELECT Id, SystemModstamp, Name, Website, OwnerId, Owner.Email FROM Account"
    )
    assert soql_reads(fake, mark) == []  # only the COUNT() questions went to the query resource
    account_job = fake.jobs_started[0]
    pages = [locator for job, locator in results_asked(fake, mark) if job == account_job]
    assert pages[0] is None and pages[1] and len(pages) == 2  # 3 accounts at 2 per page, by Sforce-Locator
    assert landed(by_bulk) == landed(by_soql)
    found = accounts(by_bulk)
    assert found["ACME"].csm.email == "dana@initech.example"  # Owner.Email column → the member
    assert (found["ACME"].arr, found["ACME"].renewal_date) == (Decimal("120000.00"), date(2026, 9, 30))
    assert run.unmatched == 1
    assert reload(by_bulk, connection).cursors["Account"] == {"since": "2026-03-01T10:03:00.000Z", "next": None}


def test_after_a_bulk_first_pull_the_next_sync_is_incremental_soql(org, fake, monkeypatch):
    large_from(monkeypatch, 1)
    seed(fake)
    connection = connect(org, fake)
    assert sync(org, connection).status == "succeeded"
    jobs = list(fake.jobs_started)
    mark = len(fake.requests)
    fake.add("Account", Id="001D", Name="Hooli", Website="hooli.example", OwnerId="005Y", Owner=None)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.jobs_started == jobs  # no new job
    assert not any("COUNT()" in r.query.get("q", "") for r in fake.requests[mark:])
    assert "WHERE SystemModstamp > 2026-03-01T10:03:00Z ORDER BY SystemModstamp ASC" in soql_reads(fake, mark)[0]
    assert accounts(org)["sf-001D"].name == "Hooli"
    assert counts(org) == (4, 2, 2)


def test_a_bulk_pull_stopped_between_result_pages_resumes_at_the_saved_locator(org, fake, monkeypatch, waits):
    large_from(monkeypatch, 5)  # only Account is large
    five_accounts(fake)
    connection = connect(org, fake)
    fake.fail(Reply(503, "Service Unavailable"), times=5, when=second_results_page)

    first = sync(org, connection)

    assert first.status == "failed"
    assert "kept failing (503)" in first.error
    assert counts(org) == (2, 0, 0)  # the first results page is kept
    [job] = fake.jobs_started
    saved = reload(org, connection).cursors["Account"]
    assert saved["bulk"]["job"] == job and saved["bulk"]["locator"]
    mark = len(fake.requests)

    second = sync(org, connection)

    assert second.status == "succeeded", second.error
    assert results_asked(fake, mark)[0] == (job, saved["bulk"]["locator"])  # straight to the saved page
    assert fake.jobs_started == [job]
    assert sorted(accounts(org)) == [f"sf-001K{n}" for n in range(5)]
    assert (second.created, counts(org)) == (3, (5, 0, 0))  # nothing read twice, nothing duplicated
    assert reload(org, connection).cursors["Account"] == {"since": "2026-03-01T10:05:00.000Z", "next": None}


def test_a_failed_bulk_job_fails_the_run_in_plain_words_and_keeps_what_was_synced(org, fake, monkeypatch):
    large_from(monkeypatch, 3)  # Account and Contact (3 each) are large
    seed(fake)
    reason = "Failed to process query: OPERATION_TOO_LARGE: exceeded 100000 distinct ids"
    fake.job_errors["Contact"] = reason
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == (
        f"Salesforce's bulk export of Contact failed: {reason}. The data synced before stays, "
        "and the next run reads it through paged queries instead"
    )
    assert counts(org) == (3, 0, 0)  # the accounts read before stay
    assert reload(org, connection).status == "failing"
    # The failed job is forgotten, and the next run does not try the export that failed again.
    assert reload(org, connection).cursors["Contact"] == {"since": None, "next": None, "paged": True}
    mark = len(fake.requests)

    again = sync(org, connection)

    assert again.status == "succeeded", again.error
    assert [fake.jobs[j]["object"] for j in fake.jobs_started] == ["Account", "Contact"]
    contact_queries = [r.query.get("q", "") for r in fake.requests[mark:] if "FROM Contact" in r.query.get("q", "")]
    assert contact_queries and all("ORDER BY SystemModstamp ASC" in q for q in contact_queries)  # paged SOQL
    assert counts(org) == (3, 2, 2)


def test_a_bulk_job_whose_results_are_gone_is_started_again(org, fake, monkeypatch, waits):
    large_from(monkeypatch, 5)
    five_accounts(fake)
    connection = connect(org, fake)
    fake.fail(Reply(503, "Service Unavailable"), times=5, when=second_results_page)
    assert sync(org, connection).status == "failed"
    [expired] = fake.jobs_started
    fake.forget_job(expired)  # a week later Salesforce has deleted the job and its results
    mark = len(fake.requests)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.requests[mark].path == f"{JOBS}/{expired}/results"  # the saved page was asked first: 404
    assert len(fake.jobs_started) == 2
    assert [locator is None for _, locator in results_asked(fake, mark)] == [False, True, False, False]
    assert sorted(accounts(org)) == [f"sf-001K{n}" for n in range(5)]
    assert (run.created, counts(org)) == (3, (5, 0, 0))


def test_a_bulk_job_still_running_after_the_longest_wait_is_picked_up_by_the_next_run(org, fake, monkeypatch, waits):
    large_from(monkeypatch, 3)
    seed(fake)
    fake.polls_to_complete = 1_000_000
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "partial"
    assert run.error == (
        "Salesforce is still preparing the bulk export of Account after 15 minutes; the next run picks up its results"
    )
    assert salesforce.BULK_MAX_WAIT <= sum(waits) < salesforce.BULK_MAX_WAIT + salesforce.BULK_POLL_CAP
    assert max(waits) == salesforce.BULK_POLL_CAP
    [job] = fake.jobs_started
    assert reload(org, connection).cursors["Account"]["bulk"] == {"job": job, "locator": None}
    fake.polls_to_complete = 0

    again = sync(org, connection)

    assert again.status == "succeeded", again.error
    assert [fake.jobs[j]["object"] for j in fake.jobs_started] == ["Account", "Contact"]  # the same Account job
    assert counts(org) == (3, 2, 2)


def test_bulk_requests_refresh_an_expired_token_once(org, fake, monkeypatch):
    large_from(monkeypatch, 5)
    five_accounts(fake)
    connection = connect(org, fake)
    fake.fail(
        Reply(401, sf_error("INVALID_SESSION_ID", "Session expired or invalid")),
        when=lambda r: r.path.startswith(f"{JOBS}/"),
    )

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.calls("/services/oauth2/token") == 1
    assert counts(org) == (5, 0, 0)


def test_request_limit_exceeded_during_a_bulk_pull_is_partial_and_resumes_at_the_saved_locator(org, fake, monkeypatch):
    large_from(monkeypatch, 5)
    five_accounts(fake)
    connection = connect(org, fake)
    limit = Reply(403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
    fake.fail(limit, when=second_results_page)

    first = sync(org, connection)

    assert (first.status, first.error) == ("partial", LIMIT_MESSAGE)
    assert counts(org) == (2, 0, 0)
    saved = reload(org, connection).cursors["Account"]["bulk"]
    mark = len(fake.requests)

    second = sync(org, connection)

    assert second.status == "succeeded", second.error
    assert results_asked(fake, mark)[0] == (saved["job"], saved["locator"])
    assert len(fake.jobs_started) == 1
    assert counts(org) == (5, 0, 0)


def test_below_the_threshold_the_first_pull_pages_through_soql_as_before(org, fake):
    seed(fake)  # 3 records or fewer per object, far under BULK_THRESHOLD

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert fake.jobs_started == []
    asked = [r.query["q"] for r in fake.requests if "COUNT()" in r.query.get("q", "")]
    assert asked == [f"SELECT COUNT() FROM {name}" for name in ("Account", "Contact", "Opportunity", "Task", "Event")]
    firsts = [q for q in soql_reads(fake) if not q.startswith(QUERY)]  # not the nextRecordsUrl pages
    assert len(firsts) == 5 and all(q.endswith("ORDER BY SystemModstamp ASC") for q in firsts)
    assert counts(org) == (3, 2, 2)


def test_bulk_csv_rows_become_records_shaped_like_the_rest_query():
    text = (
        '"Id","Name","Owner.Email","Owner.Manager.Email"\n'
        '"001A","Acme, ""The"" Company","dana@initech.example",""\n'
        '"001B","","",""\n'
    )

    assert bulk_records(text) == [
        {"Id": "001A", "Name": 'Acme, "The" Company', "Owner": {"Email": "dana@initech.example", "Manager": None}},
        {"Id": "001B", "Name": None, "Owner": None},
    ]


# --- faults ---------------------------------------------------------------------------------------


def test_request_limit_exceeded_is_a_partial_run_that_resumes_next_run(org, fake):
    seed(fake)
    connection = connect(org, fake)
    fake.fail(
        Reply(403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")),
        when=lambda r: r.path.startswith(f"{QUERY}/"),
    )

    first = sync(org, connection)

    assert first.status == "partial"
    assert first.error == LIMIT_MESSAGE
    assert set(accounts(org)) == {"sf-001A", "sf-001B"}  # the first page is kept
    assert reload(org, connection).cursors["Account"]["next"] == f"{QUERY}/01g0-2"
    mark = len(fake.requests)

    second = sync(org, connection)

    assert second.status == "succeeded", second.error
    assert fake.requests[mark].path == f"{QUERY}/01g0-2"  # resumed at the page it stopped on
    assert counts(org) == (3, 2, 2)


def test_an_expired_query_locator_is_queried_again_from_the_saved_since(org, fake):
    seed(fake)
    connection = connect(org, fake)
    limit = Reply(403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
    fake.fail(limit, when=lambda r: r.path.startswith(f"{QUERY}/"))
    assert sync(org, connection).status == "partial"
    expired = Reply(400, sf_error("INVALID_QUERY_LOCATOR", "invalid query locator"))
    fake.fail(expired, when=lambda r: r.path == f"{QUERY}/01g0-2")
    mark = len(fake.requests)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    again = fake.requests[mark + 1]
    assert again.path == QUERY and "WHERE SystemModstamp > 2026-03-01T10:02:00Z" in again.query["q"]
    assert counts(org) == (3, 2, 2)


def test_a_5xx_storm_fails_the_run_keeping_earlier_pages_and_the_next_run_completes(org, fake, waits):
    seed(fake)
    connection = connect(org, fake)
    fake.fail(Reply(503, "Service Unavailable"), times=5, when=lambda r: r.path.startswith(f"{QUERY}/"))

    run = sync(org, connection)

    assert run.status == "failed"
    assert "kept failing (503)" in run.error
    assert len(waits) == 4
    assert len(accounts(org)) == 2
    assert sync(org, connection).status == "succeeded"
    assert counts(org) == (3, 2, 2)


def test_a_malformed_page_saves_nothing_from_it(org, fake):
    seed(fake)
    connection = connect(org, fake)
    fake.fail(Reply(200, {"totalSize": 3, "done": False}), when=lambda r: r.path.startswith(f"{QUERY}/"))

    run = sync(org, connection)

    assert run.status == "failed"
    assert "not a query result" in run.error
    assert len(accounts(org)) == 2
    assert sync(org, connection).status == "succeeded"
    assert counts(org) == (3, 2, 2)


# --- tokens ---------------------------------------------------------------------------------------


def test_an_expired_token_is_refreshed_once_saved_and_the_sync_succeeds(org, fake):
    seed(fake)
    fake.tokens.clear()  # token-1 expired
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.calls("/services/oauth2/token") == 1
    with tenant(org):
        saved = reload(org, connection)
        secrets = credentials.decrypt(org_id=org.pk, provider="salesforce", blob=saved.credentials)
    assert secrets["access_token"] == "token-2"
    assert secrets["refresh_token"] == "refresh-1"  # merged, not replaced
    assert counts(org) == (3, 2, 2)


def test_a_refresh_that_fails_asks_to_reconnect(org, fake):
    seed(fake)
    fake.tokens.clear()
    fake.refresh_tokens.clear()  # revoked
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == RECONNECT
    assert fake.calls("/services/oauth2/token") == 1
    assert reload(org, connection).status == "failing"


def test_a_token_refused_again_after_refresh_is_not_refreshed_twice(org, fake):
    seed(fake)
    connection = connect(org, fake)
    fake.fail(Reply(401, sf_error("INVALID_SESSION_ID", "Session expired or invalid")), times=2)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == RECONNECT
    assert fake.calls("/services/oauth2/token") == 1


def test_the_jwt_bearer_flow_gets_a_token_with_a_signed_assertion(org, fake):
    pem, public_key = rsa_key_pair()
    fake.public_key = public_key
    fake.tokens.clear()
    seed(fake)
    # No refresh token (connection_save keeps no empty secret): the JWT bearer flow gets the token.
    connection = connect(org, fake, refresh_token="", username="integration@initech.example", private_key=pem)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.jwt_claims["iss"] == CLIENT_ID
    assert fake.jwt_claims["sub"] == "integration@initech.example"
    assert fake.jwt_claims["aud"] == fake.url
    assert counts(org) == (3, 2, 2)


def test_a_first_sync_with_only_the_jwt_key_gets_its_token_without_a_failed_request(org, fake):
    pem, public_key = rsa_key_pair()
    fake.public_key = public_key
    seed(fake)
    # Nothing but the key: no access token has ever been saved.
    connection = connect(org, fake, token="", username="integration@initech.example", private_key=pem)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert fake.requests[0].path == "/services/data/v60.0/query"  # asked without a token: refused with a 401
    assert fake.requests[1].path == "/services/oauth2/token"  # then the JWT bearer flow, once
    assert counts(org) == (3, 2, 2)


def test_records_under_no_account_are_listed_as_unmatched(org, fake):
    seed(fake)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.unmatched == 1
    with tenant(org):
        listed = list(UnmatchedRecord.objects.filter(org=org).values_list("stream", "external_id", "name"))
    assert listed == [("Contact", "003Z", "Contact No Account (no account)")]


def test_the_connection_test_says_what_it_found(org, fake):
    seed(fake)
    connection = connect(org, fake)
    from integrations.http import RequestBudget
    from integrations.sync import connector_for

    connector = connector_for(reload(org, connection))
    client = connector.client(RequestBudget(limit=5))
    try:
        assert connector.test(client) == "Connected to Salesforce at 127.0.0.1: 3 accounts"
    finally:
        client.close()


# --- OAuth web-server flow with PKCE --------------------------------------------------------------


@pytest.fixture
def admin_browser(org, client):
    client.force_login(make_member(org, role="admin"))
    return client


def start_sign_in(org, fake, browser) -> dict:
    """Connect with Salesforce: returns the authorize request's query, as Salesforce would receive it."""
    from urllib.parse import parse_qs, urlsplit

    connect(org, fake, token="", refresh_token="", client_secret=CLIENT_SECRET)
    response = browser.get(f"/o/{org.slug}/integrations/salesforce/authorize/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{fake.url}/services/oauth2/authorize"
    return {k: v[-1] for k, v in parse_qs(location.query).items()}


def test_the_browser_flow_verifies_state_and_pkce_and_saves_the_tokens(org, fake, admin_browser):
    asked = start_sign_in(org, fake, admin_browser)
    assert (asked["client_id"], asked["code_challenge_method"], asked["response_type"]) == (CLIENT_ID, "S256", "code")
    # Salesforce remembers the challenge with the code it issues; its token endpoint checks the verifier.
    fake.codes["aPrx-code"] = {"challenge": asked["code_challenge"], "redirect_uri": asked["redirect_uri"]}

    response = admin_browser.get(asked["redirect_uri"], {"code": "aPrx-code", "state": asked["state"]})

    assert response.status_code == 302 and response["Location"] == f"/o/{org.slug}/integrations/"
    saved = reload_by_org(org)
    values = credentials.decrypt(org_id=org.pk, provider="salesforce", blob=saved.credentials)
    assert (values["access_token"], values["refresh_token"]) == ("token-2", "refresh-web")
    assert fake.codes == {}  # the code was exchanged (with the right code_verifier)
    seed(fake)
    assert sync(org, saved).status == "succeeded"


def test_a_wrong_code_verifier_is_refused_by_salesforce_and_nothing_is_saved(org, fake, admin_browser):
    asked = start_sign_in(org, fake, admin_browser)
    fake.codes["aPrx-code"] = {"challenge": "not-the-challenge", "redirect_uri": asked["redirect_uri"]}

    response = admin_browser.get(asked["redirect_uri"], {"code": "aPrx-code", "state": asked["state"]})

    assert response.status_code == 502
    assert "refused the authorization code" in response.content.decode()
    values = credentials.decrypt(org_id=org.pk, provider="salesforce", blob=reload_by_org(org).credentials)
    assert "access_token" not in values


def test_a_forged_or_missing_state_is_refused_without_asking_salesforce(org, fake, admin_browser):
    asked = start_sign_in(org, fake, admin_browser)
    fake.codes["aPrx-code"] = {"challenge": asked["code_challenge"], "redirect_uri": asked["redirect_uri"]}

    forged = admin_browser.get(asked["redirect_uri"], {"code": "aPrx-code", "state": "attacker-state"})
    # The state is spent by the forged attempt: replaying the real one fails too.
    replayed = admin_browser.get(asked["redirect_uri"], {"code": "aPrx-code", "state": asked["state"]})

    for response in (forged, replayed):
        assert response.status_code == 400
        assert "state does not match" in response.content.decode()
    assert fake.calls("/services/oauth2/token") == 0
    assert "access_token" not in credentials.decrypt(
        org_id=org.pk, provider="salesforce", blob=reload_by_org(org).credentials
    )


def reload_by_org(org) -> Connection:
    with tenant(org):
        return Connection.objects.get(org=org, provider="salesforce")


# --- kill and resume ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_between_pages_resumes_with_nothing_lost_or_duplicated(subprocess_env):
    import os
    import signal
    import subprocess
    import sys
    import time

    from django.conf import settings as django_settings

    org = make_org("killed-sf")
    with SalesforceFake() as fake:
        for n in range(5):
            fake.add("Account", Id=f"001K{n}", Name=f"Kilo {n}", Website=f"kilo{n}.example", OwnerId="005Y", Owner=None)
        connection = connect(org, fake)
        second_page = lambda r: r.path == f"{QUERY}/01g0-2"  # noqa: E731
        held = fake.block(second_page)
        child = subprocess.Popen(
            [sys.executable, "manage.py", "sync", "--org", org.slug, "--provider", "salesforce"],
            cwd=django_settings.BASE_DIR,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not any(second_page(r) for r in fake.requests):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the sync never asked for the second page"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        fake.hold = None
        held.set()

        assert set(accounts(org)) == {"sf-001K0", "sf-001K1"}
        assert reload(org, connection).cursors["Account"]["next"] == f"{QUERY}/01g0-2"
        mark = len(fake.requests)

        resumed = sync(org, connection)

    assert resumed.status == "succeeded", resumed.error
    assert fake.requests[mark].path == f"{QUERY}/01g0-2"
    assert sorted(accounts(org)) == [f"sf-001K{n}" for n in range(5)]
    assert resumed.created == 3
