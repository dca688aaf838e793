"""Intercom connector against a local Intercom (real sockets, real HTTP client, 2.14-shaped answers)."""

import base64
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from django.conf import settings as django_settings

from accounts.models import Account, Activity, Ticket
from csm.tenancy import tenant
from integrations.http import ProviderError, RequestBudget
from integrations.models import Connection, SourceRecord, UnmatchedRecord
from integrations.providers.intercom import INTERCOM_401, INTERCOM_VERSION, OVERLAP, PER_PAGE, IntercomConnector
from integrations.services import connection_save
from integrations.sync import connection_sync, connector_for
from tests.factories import make_account, make_org
from tests.integrations.fake_server import Reply
from tests.integrations.intercom_fake import APP_NAME, TOKEN, IntercomFake, error_body
from tests.integrations.specs import PROVIDER_SPECS

pytestmark = pytest.mark.django_db

SPEC = PROVIDER_SPECS / "intercom" / "api.intercom.io.2.14.yaml"


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"i" * 32).decode()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The waits the client and the scroll asked for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(IntercomConnector, "sleep", staticmethod(asked.append))
    return asked


@pytest.fixture
def fake():
    with IntercomFake() as server:
        yield server


@pytest.fixture
def org():
    return make_org("globo")


def connect(org, fake, *, token: str = TOKEN) -> Connection:
    with tenant(org):
        return connection_save(
            org=org, provider="intercom", secrets={"access_token": token}, settings={"api_base": fake.url}
        )


def sync(org, connection):
    return connection_sync(org=org, connection=connection, trigger="manual")


def reload(org, connection) -> Connection:
    with tenant(org):
        return Connection.objects.get(pk=connection.pk)


def tickets(org) -> dict:
    with tenant(org):
        return {
            t.external_id: (t.account.external_id, t.status, t.priority, t.subject)
            for t in Ticket.objects.select_related("account")
        }


def activities(org) -> dict:
    with tenant(org):
        return {
            a.external_id: (a.account.external_id, a.actor_side, int(a.occurred_at.timestamp()))
            for a in Activity.objects.select_related("account")
        }


def unmatched(org) -> dict:
    with tenant(org):
        return {r.external_id: (r.stream, r.name, r.domain) for r in UnmatchedRecord.objects.all()}


def searches(fake, start: int = 0) -> list[dict]:
    return [r.json() for r in fake.requests[start:] if r.path == "/conversations/search"]


def seed(fake, count: int, *, domain: str = "acme.example") -> list[dict]:
    return [fake.add_conversation(email=f"u{n}@{domain}", subject=f"Question {n}") for n in range(count)]


# --- full and incremental sync --------------------------------------------------------------------


def test_first_sync_matches_companies_and_turns_conversations_into_tickets_and_activities(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    make_account(org, external_id="GLOBEX", domain="globex.example")
    by_id = fake.add_company(name="Acme", company_id="ACME", website="https://www.acme.example")
    by_domain = fake.add_company(name="Globex", company_id="gx-77", website="globex.example")
    stranger = fake.add_company(name="Unknown Ltd", company_id="unk", website="https://unknown.example")
    client = fake.add_conversation(
        email="jane@acme.example", subject="<p>Invoice wrong</p>", priority="priority", last_contact_reply_at=None
    )
    replied = fake.add_conversation(email="bob@globex.example", title="Login", state="snoozed")
    fake.touch(
        replied["id"], at=replied["created_at"] + 50, statistics={"last_contact_reply_at": replied["created_at"] + 40}
    )
    vendor = fake.add_conversation(
        author_type="admin",
        email="csm@vendor.example",
        author_company_id=by_id["id"],
        subject="Renewal",
        state="closed",
    )
    lost = fake.add_conversation(email="who@nowhere.example", subject="Hi")
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert all(r.headers["intercom-version"] == INTERCOM_VERSION for r in fake.requests)
    with tenant(org):
        links = set(
            SourceRecord.objects.filter(object_type="company").values_list("external_id", "account__external_id")
        )
    assert links == {("ACME", "ACME"), (by_id["id"], "ACME"), ("gx-77", "GLOBEX"), (by_domain["id"], "GLOBEX")}
    assert unmatched(org) == {
        "unk": ("companies", "Unknown Ltd", "unknown.example"),
        lost["id"]: ("conversations", "Hi", "nowhere.example"),
    }
    with tenant(org):
        assert set(Account.objects.values_list("external_id", flat=True)) == {"ACME", "GLOBEX"}
    assert stranger["id"] not in str(tickets(org))
    assert tickets(org) == {
        f"intercom-{client['id']}": ("ACME", "open", "high", "Invoice wrong"),
        f"intercom-{replied['id']}": ("GLOBEX", "pending", "normal", "Login"),
        f"intercom-{vendor['id']}": ("ACME", "closed", "normal", "Renewal"),
    }
    assert activities(org) == {
        f"intercom-conv-{client['id']}": ("ACME", "client", client["created_at"]),
        f"intercom-conv-{replied['id']}": ("GLOBEX", "client", replied["created_at"] + 40),
        f"intercom-conv-{vendor['id']}": ("ACME", "vendor", vendor["created_at"]),
    }
    assert (run.created, run.unmatched) == (2 + 3, 2)  # two companies linked, three tickets


def test_a_later_sync_searches_only_what_changed_since_the_cursor(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    first = seed(fake, 3)
    connection = connect(org, fake)
    assert sync(org, connection).status == "succeeded"
    cursor = reload(org, connection).cursors["conversations"]
    assert (cursor["since"], cursor["starting_after"]) == (max(c["updated_at"] for c in first), None)
    fake.touch(first[0]["id"], at=cursor["since"] + 100, state="closed")
    new = fake.add_conversation(email="z@acme.example", subject="New", at=cursor["since"] + 200)
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert searches(fake, mark) == [
        {
            "query": {"field": "updated_at", "operator": ">", "value": cursor["since"] - OVERLAP},
            "pagination": {"per_page": PER_PAGE},
            "sort": {"field": "updated_at", "order": "ascending"},
        }
    ]
    assert (run.created, run.updated) == (1, 1)
    assert tickets(org)[f"intercom-{first[0]['id']}"][1] == "closed"
    assert f"intercom-{new['id']}" in tickets(org)
    assert reload(org, connection).cursors["conversations"]["since"] == cursor["since"] + 200


def test_conversations_are_paged_with_starting_after_and_each_page_commits_its_cursor(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    made = seed(fake, 320)
    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    bodies = searches(fake)
    assert [b["pagination"].get("starting_after") is not None for b in bodies] == [False, True, True]
    assert all(b["query"]["value"] == 0 for b in bodies)  # the anchor stays put while its pages are followed
    assert len(tickets(org)) == 320 == len(activities(org))
    assert run.pages == 1 + 3  # companies: the empty end of the scroll; conversations: three pages
    assert {f"intercom-{c['id']}" for c in made} == set(tickets(org))


# --- companies scroll -----------------------------------------------------------------------------


def test_companies_are_scrolled_back_to_back_and_no_scroll_param_is_stored(org, fake):
    for n in range(120):
        fake.add_company(name=f"Co {n}", company_id=f"C{n}", website=f"c{n}.example")
    make_account(org, external_id="C7", domain="elsewhere.example")
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    scrolls = [r.query.get("scroll_param") for r in fake.requests if r.path == "/companies/scroll"]
    assert scrolls[0] is None and len(set(scrolls[1:])) == 1 and len(scrolls) == 4  # 50 + 50 + 20 + the empty end
    assert fake.scroll is None  # the empty page closed it
    assert reload(org, connection).cursors["companies"] is None
    assert len([k for k, v in unmatched(org).items() if v[0] == "companies"]) == 119


def test_a_scroll_already_open_waits_and_restarts_then_says_so_in_plain_words(org, fake, waits):
    fake.add_company(name="Acme", company_id="ACME")
    fake.fail(Reply(400, error_body("scroll_exists", "scroll already exists for this workspace")), times=1)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert waits == [65.0]
    assert unmatched(org) == {"ACME": ("companies", "Acme", "")}

    fake.fail(Reply(400, error_body("scroll_exists", "scroll already exists for this workspace")), times=3)
    again = sync(org, reload(org, connection))

    assert again.status == "failed"
    assert again.error.startswith(
        "Intercom kept refusing to list companies because another company scroll is open in this workspace or ours "
        "expired"
    )
    assert "stop other tools scrolling companies" in again.error


def test_an_expired_scroll_is_started_again_from_the_top(org, fake, waits):
    for n in range(60):
        fake.add_company(name=f"Co {n}", company_id=f"C{n}")
    fake.fail(
        Reply(404, error_body("scroll_param_not_found", "scroll expired: restart the scroll")),
        when=lambda r: r.path == "/companies/scroll" and "scroll_param" in r.query and fake.expire(),
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert waits == [65.0]
    assert len(unmatched(org)) == 60


def test_a_conversation_a_teammate_started_lands_on_the_account_of_its_contact(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    written = fake.add_conversation(email="jane@acme.example", subject="Help")
    contact = written["source"]["author"]["id"]
    outreach = fake.add_conversation(
        author_type="admin", email="csm@vendor.example", subject="Check-in", contact_ids=(contact,)
    )
    stranger = fake.add_conversation(
        author_type="admin", email="csm@vendor.example", subject="Cold", contact_ids=("x",)
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert activities(org) == {
        f"intercom-conv-{written['id']}": ("ACME", "client", written["created_at"]),
        f"intercom-conv-{outreach['id']}": ("ACME", "vendor", outreach["created_at"]),
    }
    assert unmatched(org) == {stranger["id"]: ("conversations", "Cold", "")}  # never the teammate's domain


# --- faults ---------------------------------------------------------------------------------------


def test_a_scroll_broken_by_a_server_error_is_started_again(org, fake, waits):
    for n in range(60):
        fake.add_company(name=f"Co {n}", company_id=f"C{n}")
    fake.fail(
        Reply(500, error_body("server_error", "Request failed due to an internal network error")),
        times=5,
        when=lambda r: r.path == "/companies/scroll" and "scroll_param" in r.query and fake.expire(),
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert waits[-1] == 65.0
    assert len(unmatched(org)) == 60


def test_a_429_waits_until_the_reset_time_then_succeeds(org, fake, waits):
    make_account(org, external_id="ACME", domain="acme.example")
    seed(fake, 5)
    reset = int(time.time()) + 7
    fake.fail(
        Reply(429, error_body("rate_limit_exceeded", "Exceeded rate limit"), {"X-RateLimit-Reset": str(reset)}),
        when=lambda r: r.path == "/conversations/search",
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert len(waits) == 1 and 4 <= waits[0] <= 7
    assert len(searches(fake)) == 2
    assert len(tickets(org)) == 5


def test_a_500_storm_fails_the_run_and_keeps_the_pages_already_committed(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    made = seed(fake, 200)
    fake.fail(
        Reply(500, error_body("server_error", "Server Error")),
        times=5,
        when=lambda r: r.path == "/conversations/search" and "starting_after" in r.json().get("pagination", {}),
    )
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == (
        "Intercom kept failing (500) after 5 tries; the data synced before stays, and the next run retries"
    )
    assert len(tickets(org)) == 150
    cursor = reload(org, connection).cursors["conversations"]
    assert cursor["since"] == 0 and cursor["starting_after"]
    mark = len(fake.requests)

    resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert resumed.created == 50
    assert {f"intercom-{c['id']}" for c in made} == set(tickets(org))
    assert [b["pagination"].get("starting_after") for b in searches(fake, mark)] == [cursor["starting_after"]]


def test_a_malformed_page_fails_the_run_without_saving_it(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    seed(fake, 200)
    fake.fail(
        Reply(200, '{"type": "conversation.list", "conversations": [{"id": "1'),
        when=lambda r: r.path == "/conversations/search" and "starting_after" in r.json().get("pagination", {}),
    )
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert "not valid JSON" in run.error
    assert len(tickets(org)) == 150
    assert reload(org, connection).cursors["conversations"]["starting_after"]


def test_a_refused_token_says_what_to_do_and_the_test_names_the_workspace(org, fake):
    refused = connect(org, fake, token="revoked")

    run = sync(org, refused)

    assert run.status == "failed"
    assert run.error == INTERCOM_401
    connector = connector_for(reload(org, refused))
    with pytest.raises(ProviderError) as error:
        connector.test(connector.client(RequestBudget(limit=3)))
    assert str(error.value) == INTERCOM_401

    good = connector_for(connect(org, fake))
    assert good.test(good.client(RequestBudget(limit=3))) == (
        f"Connected to Intercom workspace {APP_NAME} as Ana Admin."
    )


def test_another_organization_sees_nothing(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    other = make_org("elsewhere")
    make_account(other, external_id="ACME", domain="acme.example")
    fake.add_company(name="Acme", company_id="ACME")
    fake.add_company(name="Nobody", company_id="NOBODY")
    seed(fake, 2)

    assert sync(org, connect(org, fake)).status == "succeeded"

    assert len(tickets(org)) == 2 and len(unmatched(org)) == 1
    assert tickets(other) == {} and activities(other) == {} and unmatched(other) == {}
    with tenant(other):
        assert SourceRecord.objects.count() == 0
        assert Connection.objects.count() == 0


# --- kill between pages, then resume --------------------------------------------------------------


def later_search_page(request) -> bool:
    return request.path == "/conversations/search" and "starting_after" in request.json().get("pagination", {})


@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_between_pages_resumes_with_nothing_lost_or_duplicated(subprocess_env):
    org = make_org("killed")
    with IntercomFake() as fake:
        make_account(org, external_id="ACME", domain="acme.example")
        made = seed(fake, 400)
        connection = connect(org, fake)
        held = fake.block(later_search_page)
        child = subprocess.Popen(
            [sys.executable, "manage.py", "sync", "--org", org.slug, "--provider", "intercom"],
            cwd=django_settings.BASE_DIR,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not any(later_search_page(r) for r in fake.requests):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the sync never asked for a second page"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        fake.hold = None
        held.set()

        assert len(tickets(org)) == 150
        cursor = reload(org, connection).cursors["conversations"]
        assert cursor["starting_after"]
        mark = len(fake.requests)

        resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (250, 0)
    assert {f"intercom-{c['id']}" for c in made} == set(tickets(org))
    assert len(activities(org)) == 400
    assert searches(fake, mark)[0]["pagination"]["starting_after"] == cursor["starting_after"]


# --- the fake against Intercom's 2.14 description -------------------------------------------------


def shape_problems(spec: dict, schema: dict, value, where: str) -> list[str]:
    """Keys documented by `schema` with the documented JSON types (nested $refs followed one level)."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if value is None:
        return [] if schema.get("nullable") or "type" not in schema else [f"{where} is null"]
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "number": (int, float)}
    kind = schema.get("type")
    if kind in kinds and not isinstance(value, kinds[kind]):
        return [f"{where} is {type(value).__name__}, not {kind}"]
    if kind == "string" and "enum" in schema and value not in schema["enum"]:
        return [f"{where}={value!r} not in {schema['enum']}"]
    problems = []
    if isinstance(value, dict) and "properties" in schema:
        problems += [f"{where}.{k} missing" for k in schema.get("required", []) if k not in value]
        problems += [f"{where}.{k} undocumented" for k in value if k not in schema["properties"]]
        for key, item in value.items():
            if key in schema["properties"]:
                problems += shape_problems(spec, schema["properties"][key], item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value[:3]):
            problems += shape_problems(spec, schema["items"], item, f"{where}[{index}]")
    return problems


def test_the_fake_answers_shaped_like_intercoms_2_14_description():
    import httpx

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads the 0.9 MB spec in a second
    with open(SPEC, "rb") as file:
        spec = yaml.load(file, Loader=loader)
    schemas = spec["components"]["schemas"]
    with IntercomFake(scroll_page=2) as fake:
        for n in range(3):
            fake.add_company(name=f"Co {n}", website=f"https://c{n}.example")
            fake.add_conversation(email=f"u{n}@c{n}.example", subject="Hello", state=["open", "snoozed", "closed"][n])
        headers = {"Authorization": f"Bearer {TOKEN}", "Intercom-Version": INTERCOM_VERSION}
        with httpx.Client(base_url=fake.url, headers=headers) as client:
            scroll = client.get("/companies/scroll").json()
            busy = client.get("/companies/scroll")
            query = {"query": {"field": "updated_at", "operator": ">", "value": 0}, "pagination": {"per_page": 2}}
            search = client.post("/conversations/search", json=query).json()
            me = client.get("/me").json()
            refused = client.get("/me", headers={"Authorization": "Bearer nope"})

    assert scroll["data"] and search["conversations"] and search["pages"]["next"]["starting_after"]
    assert shape_problems(spec, {"$ref": "#/components/schemas/company_scroll"}, scroll, "company_scroll") == []
    assert shape_problems(spec, {"$ref": "#/components/schemas/conversation_list"}, search, "conversation_list") == []
    search_200 = spec["paths"]["/conversations/search"]["post"]["responses"]["200"]["content"]["application/json"]
    assert search_200["schema"]["$ref"].endswith("/conversation_list")
    assert shape_problems(spec, {"$ref": "#/components/schemas/admin_with_app"}, me, "me") == []
    for reply, status in ((busy, 400), (refused, 401)):
        assert reply.status_code == status
        assert shape_problems(spec, {"$ref": "#/components/schemas/error"}, reply.json(), "error") == []
        assert set(schemas["error"]["required"]) <= set(reply.json())
