"""Zendesk connector against a local Zendesk (real sockets, real HTTP client, Zendesk-shaped answers)."""

import base64
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from decimal import Decimal

import pytest
import yaml
from django.conf import settings as django_settings

from accounts.models import Ticket
from csm.tenancy import tenant
from integrations.http import ProviderError, RequestBudget
from integrations.models import Connection, SourceRecord, UnmatchedRecord
from integrations.providers.zendesk import ZENDESK_401, ZendeskConnector, explain_for, ticket_row
from integrations.services import connection_save
from integrations.sync import connection_sync, connector_for
from tests.factories import make_account, make_org
from tests.integrations.fake_server import Reply
from tests.integrations.specs import PROVIDER_SPECS
from tests.integrations.zendesk_fake import EMAIL, TOKEN, ZendeskFake, encode, errors_body

pytestmark = pytest.mark.django_db

SPEC = PROVIDER_SPECS / "zendesk" / "oas.yaml"
TICKETS = "/api/v2/incremental/tickets/cursor.json"
ORGANIZATIONS = "/api/v2/incremental/organizations.json"


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"z" * 32).decode()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The waits the connector asked for (Retry-After, pacing), recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(ZendeskConnector, "sleep", staticmethod(asked.append))
    return asked


@pytest.fixture
def fake():
    with ZendeskFake() as server:
        yield server


@pytest.fixture
def org():
    return make_org("globo")


def connect(org, fake, *, token: str = TOKEN, **settings) -> Connection:
    with tenant(org):
        return connection_save(
            org=org,
            provider="zendesk",
            secrets={"email": EMAIL, "api_token": token},
            settings={"subdomain": "globo", "api_base": fake.url, "min_interval_seconds": "0", **settings},
        )


def sync(org, connection):
    return connection_sync(org=org, connection=connection, trigger="manual")


def reload(org, connection) -> Connection:
    with tenant(org):
        return Connection.objects.get(pk=connection.pk)


def tickets(org) -> dict:
    with tenant(org):
        return {
            t.external_id: (t.account.external_id, t.status, t.priority, t.csat, t.subject)
            for t in Ticket.objects.select_related("account")
        }


def unmatched(org) -> dict:
    with tenant(org):
        return {(r.stream, r.external_id): (r.name, r.domain) for r in UnmatchedRecord.objects.all()}


def seed(org, fake, count: int) -> list[dict]:
    make_account(org, external_id="ACME", domain="acme.example")
    acme = fake.add_organization("Acme", ["acme.example"])
    return [fake.add_ticket(acme, subject=f"Ticket {n}") for n in range(count)]


def ticket_pages(fake, start: int = 0) -> list:
    return [
        r.query.get("cursor") or f"start_time={r.query.get('start_time')}"
        for r in fake.requests[start:]
        if r.path == TICKETS
    ]


# --- full and incremental sync --------------------------------------------------------------------


def test_first_sync_matches_organizations_and_maps_tickets_onto_their_accounts(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    make_account(org, external_id="GLOBEX", domain="globex.example")
    acme = fake.add_organization("Acme Inc", ["acme.example", "acme.io"])
    globex = fake.add_organization("Globex", ["www.globex.example"])
    stranger = fake.add_organization("Unknown Ltd", ["unknown.example"])
    urgent = fake.add_ticket(acme, subject="Login broken", priority="urgent", status="open")
    happy = fake.add_ticket(
        globex, subject="Invoice question", status="solved", satisfaction_rating={"score": "good", "id": 1}
    )
    unhappy = fake.add_ticket(acme, subject="Slow", status="closed", satisfaction_rating={"score": "bad"})
    offered = fake.add_ticket(globex, subject="Export", status="pending", satisfaction_rating={"score": "offered"})
    orphan = fake.add_ticket(stranger, subject="Who are we")
    no_org = fake.add_ticket(None, subject="From a gmail user")
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    with tenant(org):
        links = dict(SourceRecord.objects.values_list("external_id", "account__external_id"))
    assert links == {str(acme["id"]): "ACME", str(globex["id"]): "GLOBEX"}
    assert tickets(org) == {
        str(urgent["id"]): ("ACME", "open", "urgent", None, "Login broken"),
        str(happy["id"]): ("GLOBEX", "solved", "normal", Decimal("5.00"), "Invoice question"),
        str(unhappy["id"]): ("ACME", "closed", "normal", Decimal("1.00"), "Slow"),
        str(offered["id"]): ("GLOBEX", "pending", "normal", None, "Export"),
    }
    assert unmatched(org) == {
        ("organizations", str(stranger["id"])): ("Unknown Ltd", "unknown.example"),
        ("tickets", str(orphan["id"])): ("Who are we", ""),
        ("tickets", str(no_org["id"])): ("From a gmail user", ""),
    }
    assert run.unmatched == 3 and run.created == 2 + 4
    with tenant(org):
        solved = Ticket.objects.get(external_id=str(happy["id"]))
        opened = Ticket.objects.get(external_id=str(urgent["id"]))
    assert solved.solved_at == datetime.fromisoformat(happy["updated_at"].replace("Z", "+00:00"))
    assert solved.opened_at == datetime.fromisoformat(happy["created_at"].replace("Z", "+00:00"))
    assert opened.solved_at is None
    cursors = reload(org, connection).cursors
    assert cursors["tickets"]["after"]  # the export's after_cursor, where the next sync starts
    assert ticket_pages(fake) == ["start_time=0"]


def test_mapping_an_unmatched_organization_brings_in_its_earlier_tickets_on_the_next_sync(org, fake, client):
    from django.urls import reverse

    from tests.factories import make_member

    made = seed(org, fake, 1)
    make_account(org, external_id="UMB", name="Umbrella", domain="umbrella.example")
    stranger = fake.add_organization("Umbrella Corporation", ["umbrella-corp.example"])  # no domain in common
    earlier = [fake.add_ticket(stranger, subject=f"Earlier {n}") for n in range(2)]
    connection = connect(org, fake)
    assert sync(org, connection).status == "succeeded"
    assert set(tickets(org)) == {str(made[0]["id"])}
    assert ("organizations", str(stranger["id"])) in unmatched(org)

    client.force_login(make_member(org, role="admin"))
    page = client.post(
        reverse("integration-unmatched", args=[org.slug, connection.pk]),
        {"external_id": str(stranger["id"]), "account_external_id": "UMB"},
        follow=True,
    ).content.decode()
    assert "reads Zendesk again from the start" in page
    assert reload(org, connection).cursors == {}
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert ticket_pages(fake, mark) == ["start_time=0"]  # read again from the start
    assert {i: v[0] for i, v in tickets(org).items()} == {
        str(made[0]["id"]): "ACME",
        str(earlier[0]["id"]): "UMB",
        str(earlier[1]["id"]): "UMB",
    }
    assert unmatched(org) == {}  # the organization and its tickets left the list
    assert run.created == 1 + 2  # the link to the organization and its two tickets; the third is not rewritten


def test_a_second_sync_reads_from_the_stored_cursor_only(org, fake):
    made = seed(org, fake, 3)
    connection = connect(org, fake)
    assert sync(org, connection).status == "succeeded"
    stored = reload(org, connection).cursors["tickets"]["after"]
    mark = len(fake.requests)
    solved = fake.update_ticket(made[0]["id"], status="solved")
    solved_at = datetime.fromisoformat(solved["updated_at"].replace("Z", "+00:00"))
    newer = fake.add_ticket(fake.organizations[made[0]["organization_id"]], subject="New one", priority="high")

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert ticket_pages(fake, mark) == [stored]
    assert (run.created, run.updated) == (1, 1)
    assert tickets(org)[str(made[0]["id"])][1] == "solved"
    assert tickets(org)[str(newer["id"])] == ("ACME", "new", "high", None, "New one")
    stored = reload(org, connection).cursors["tickets"]["after"]
    mark = len(fake.requests)
    fake.update_ticket(made[0]["id"], status="closed")

    closing = sync(org, reload(org, connection))

    assert (closing.created, closing.updated) == (0, 1)
    assert ticket_pages(fake, mark) == [stored]
    with tenant(org):
        closed = Ticket.objects.get(external_id=str(made[0]["id"]))
    assert (closed.status, closed.solved_at) == ("closed", solved_at)  # closing later does not move the solve
    mark = len(fake.requests)

    quiet = sync(org, reload(org, connection))

    assert (quiet.created, quiet.updated) == (0, 0)
    assert ticket_pages(fake, mark) == [reload(org, connection).cursors["tickets"]["after"]]


def test_the_export_is_read_page_by_page_until_end_of_stream(org, fake, waits):
    made = seed(org, fake, 7)
    fake.page_size = 3
    connection = connect(org, fake, min_interval_seconds="6")

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert set(tickets(org)) == {str(t["id"]) for t in made}
    assert run.pages == 1 + 3
    pages = ticket_pages(fake)
    assert pages[0] == "start_time=0" and len(pages) == 3 and len(set(pages)) == 3
    assert reload(org, connection).cursors["tickets"] == {"after": encode(fake.seq[made[-1]["id"]])}
    # Requests of the exports are spaced 6 s apart (10 a minute): every one after the first waited.
    assert len(waits) == 3 and all(0 < w <= 6 for w in waits)


def test_the_organization_export_is_read_page_by_page(org, fake):
    for n in range(5):
        make_account(org, external_id=f"C{n}", domain=f"c{n}.example")
    made = [fake.add_organization(f"Customer {n}", [f"c{n}.example"]) for n in range(5)]
    fake.page_size = 2
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    with tenant(org):
        links = dict(SourceRecord.objects.values_list("external_id", "account__external_id"))
    assert links == {str(o["id"]): f"C{n}" for n, o in enumerate(made)}
    # A time-based export starts each page at the previous one's end_time: the edge record comes twice.
    starts = [int(r.query["start_time"]) for r in fake.requests if r.path == ORGANIZATIONS]
    assert starts[0] == 0 and starts == sorted(starts) and len(starts) == 4
    assert (run.created, run.updated) == (5, 0)
    assert reload(org, connection).cursors["organizations"] == starts[-1] + 1


def test_a_deleted_ticket_leaves(org, fake):
    made = seed(org, fake, 2)
    connection = connect(org, fake)
    sync(org, connection)
    fake.update_ticket(made[1]["id"], status="deleted")

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert set(tickets(org)) == {str(made[0]["id"])}


# --- faults ---------------------------------------------------------------------------------------


def test_a_429_waits_for_retry_after_then_succeeds(org, fake, waits):
    made = seed(org, fake, 5)
    fake.page_size = 2
    fake.fail(
        Reply(429, errors_body("TooManyRequests", "Rate limit exceeded"), {"Retry-After": "17"}),
        when=lambda r: r.path == TICKETS and "cursor" in r.query,
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert set(tickets(org)) == {str(t["id"]) for t in made}
    assert waits == [17.0]


def test_a_500_storm_fails_the_run_keeps_committed_pages_and_resumes_there(org, fake):
    made = seed(org, fake, 5)
    fake.page_size = 2
    fake.fail(
        Reply(503, errors_body("ServiceUnavailable", "Service unavailable")),
        times=5,
        when=lambda r: r.path == TICKETS and "cursor" in r.query,
    )
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == (
        "Zendesk kept failing (503) after 5 tries; the data synced before stays, and the next run retries"
    )
    assert set(tickets(org)) == {str(t["id"]) for t in made[:2]}
    committed = reload(org, connection).cursors["tickets"]["after"]
    assert reload(org, connection).status == "failing"
    mark = len(fake.requests)

    resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert set(tickets(org)) == {str(t["id"]) for t in made}
    assert ticket_pages(fake, mark)[0] == committed
    assert resumed.created == 3


def test_a_malformed_page_fails_the_run_without_saving_it(org, fake):
    made = seed(org, fake, 4)
    fake.page_size = 2
    fake.fail(Reply(200, '{"tickets": [{"id": 1'), when=lambda r: r.path == TICKETS and "cursor" in r.query)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert "not valid JSON" in run.error
    assert set(tickets(org)) == {str(t["id"]) for t in made[:2]}
    fake.fail(Reply(200, {"results": []}), when=lambda r: r.path == TICKETS)

    again = sync(org, reload(org, connection))

    assert again.status == "failed"
    assert again.error.startswith("Zendesk answered the tickets export with a page that is not an export page")
    assert len(tickets(org)) == 2


def test_a_refused_token_says_what_to_do(org, fake):
    seed(org, fake, 1)
    connection = connect(org, fake, token="revoked")

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == ZENDESK_401
    assert reload(org, connection).last_error == ZENDESK_401
    connector = connector_for(reload(org, connection))
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert str(refused.value) == ZENDESK_401


def test_a_wrong_subdomain_is_named(org, fake):
    connection = connect(org, fake, subdomain="globoo", api_base=fake.url + "/elsewhere")

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error.startswith("No Zendesk account at globoo.zendesk.com")


def test_the_connection_test_gives_a_verdict(org, fake):
    connector = connector_for(connect(org, fake))

    assert connector.test(connector.client(RequestBudget(limit=5))) == (
        f"Connected to Zendesk at globo.zendesk.com as Ana Admin ({EMAIL}, admin)."
    )
    fake.role = "agent"
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert "the ticket export needs an admin" in str(refused.value)


def test_errors_in_plain_words():
    explain = explain_for("acme")

    assert explain(404, '{"error": "InvalidEndpoint"}').startswith("No Zendesk account at acme.zendesk.com")
    assert "(403)" in explain(403, '{"errors": [{"code": "Forbidden", "title": "no"}]}')
    assert explain(422, '{"errors": [{"code": "X", "title": "Bad start_time"}]}') == (
        "Zendesk rejected the request (422): Bad start_time"
    )


def test_another_organization_sees_nothing(org, fake):
    seed(org, fake, 2)
    fake.add_organization("Nobody", ["nobody.example"])
    other = make_org("elsewhere")
    make_account(other, external_id="ACME", domain="acme.example")

    assert sync(org, connect(org, fake)).status == "succeeded"

    assert len(tickets(org)) == 2 and len(unmatched(org)) == 1
    assert tickets(other) == {} and unmatched(other) == {}
    with tenant(other):
        assert SourceRecord.objects.count() == 0
        assert Connection.objects.count() == 0


# --- kill between pages, then resume --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_between_pages_resumes_with_nothing_lost_or_duplicated(subprocess_env):
    org = make_org("killed")
    with ZendeskFake() as fake:
        made = seed(org, fake, 9)
        fake.page_size = 3
        connection = connect(org, fake)
        third_page = [0]

        def when(request) -> bool:
            if request.path == TICKETS and "cursor" in request.query:
                third_page[0] += 1
            return third_page[0] >= 2 and request.path == TICKETS

        held = fake.block(when)
        child = subprocess.Popen(
            [sys.executable, "manage.py", "sync", "--org", org.slug, "--provider", "zendesk"],
            cwd=django_settings.BASE_DIR,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while third_page[0] < 2:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the sync never asked for the third page"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        fake.hold = None
        held.set()

        assert set(tickets(org)) == {str(t["id"]) for t in made[:6]}
        committed = reload(org, connection).cursors["tickets"]["after"]
        mark = len(fake.requests)

        resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert resumed.created == 3
    assert set(tickets(org)) == {str(t["id"]) for t in made}
    with tenant(org):
        assert Ticket.objects.count() == 9
    assert ticket_pages(fake, mark) == [committed]


# --- rules and shapes -----------------------------------------------------------------------------


def test_ticket_rows():
    row = ticket_row(
        {
            "id": 7,
            "organization_id": 3,
            "status": "solved",
            "priority": None,
            "created_at": "2026-01-02T03:04:05Z",
            "updated_at": "2026-01-05T00:00:00Z",
            "satisfaction_rating": {"score": "unoffered"},
            "subject": None,
            "raw_subject": "Raw",
        }
    )
    assert (row["id"], row["organization"], row["priority"], row["csat"], row["subject"]) == (
        "7",
        "3",
        "normal",
        None,
        "Raw",
    )
    assert row["solved_at"].date() == date(2026, 1, 5)


@pytest.fixture(scope="session")
def zendesk_spec():
    with open(SPEC, "rb") as file:
        return yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def missing_required(spec, name: str, obj: dict) -> list[str]:
    schema = spec["components"]["schemas"][name]
    problems = [f"{name}.{key} missing" for key in schema.get("required", []) if key not in obj]
    for key, value in obj.items():
        kind = (schema.get("properties", {}).get(key) or {}).get("type")
        python = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}.get(kind)
        if python and value is not None and not isinstance(value, python):
            problems.append(f"{name}.{key} is {type(value).__name__}, not {kind}")
    return problems


def test_the_fake_serves_exports_and_errors_shaped_like_the_spec(zendesk_spec, fake):
    import httpx

    acme = fake.add_organization("Acme", ["acme.example"])
    fake.add_ticket(acme, status="solved", priority="low", satisfaction_rating={"score": "good"})
    auth = (f"{EMAIL}/token", TOKEN)
    with httpx.Client(base_url=fake.url, auth=auth) as client:
        export = client.get(TICKETS, params={"start_time": 0}).json()
        organizations = client.get(ORGANIZATIONS, params={"start_time": 0}).json()
        refused = client.get(TICKETS, params={"start_time": 0}, auth=(f"{EMAIL}/token", "wrong"))

    assert missing_required(zendesk_spec, "CursorBasedExportIncrementalTicketsResponse", export) == []
    assert export["tickets"] and all(missing_required(zendesk_spec, "TicketObject", t) == [] for t in export["tickets"])
    assert missing_required(zendesk_spec, "ExportIncrementalOrganizationsResponse", organizations) == []
    assert all(missing_required(zendesk_spec, "OrganizationObject", o) == [] for o in organizations["organizations"])
    assert refused.status_code == 401
    assert missing_required(zendesk_spec, "Errors", refused.json()) == []
    assert all(missing_required(zendesk_spec, "Error", e) == [] for e in refused.json()["errors"])
