"""Stripe connector against a local Stripe (real sockets, real HTTP client, Stripe-shaped answers)."""

import base64
import copy
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import yaml
from django.conf import settings as django_settings

from accounts.models import Account, ArrChange, Invoice
from csm.tenancy import tenant
from integrations.http import ProviderError, RequestBudget
from integrations.models import Connection, SourceRecord, UnmatchedRecord
from integrations.providers import stripe as stripe_provider
from integrations.providers.stripe import (
    EVENT_TYPES,
    STRIPE_401,
    STRIPE_VERSION,
    StripeConnector,
    arr_from_mrr,
    monthly_amount,
)
from integrations.services import connection_save, mapping_save
from integrations.sync import connection_sync, connector_for
from tests.factories import make_account, make_org
from tests.integrations.fake_server import Reply
from tests.integrations.stripe_fake import DAY, KEY, SPECS, Item, StripeFake, error_body

pytestmark = pytest.mark.django_db

LONG_AGO = int(time.time()) - 40 * DAY  # seeded before the retention window: no event survives


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"s" * 32).decode()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The backoff waits the client asked for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(StripeConnector, "sleep", staticmethod(asked.append))
    return asked


@pytest.fixture
def fake():
    with StripeFake() as server:
        yield server


@pytest.fixture
def org():
    return make_org("globo", timezone_name="America/New_York")


def connect(org, fake, *, key: str = KEY, **settings) -> Connection:
    with tenant(org):
        return connection_save(
            org=org, provider="stripe", secrets={"api_key": key}, settings={"api_base": fake.url, **settings}
        )


def sync(org, connection):
    return connection_sync(org=org, connection=connection, trigger="manual")


def reload(org, connection) -> Connection:
    with tenant(org):
        return Connection.objects.get(pk=connection.pk)


def invoices(org) -> dict:
    with tenant(org):
        rows = Invoice.objects.values_list("external_id", "account__external_id", "status", "amount", "currency")
        return {
            external_id: (account, status, amount, currency) for external_id, account, status, amount, currency in rows
        }


def unmatched(org) -> dict:
    with tenant(org):
        return {r.external_id: (r.stream, r.name, r.domain) for r in UnmatchedRecord.objects.all()}


def accounts(org) -> dict:
    with tenant(org):
        return {a.external_id: a for a in Account.objects.all()}


def arr_history(org) -> list:
    with tenant(org):
        return sorted(ArrChange.objects.values_list("account__external_id", "arr"))


def requested(fake, start: int = 0) -> list[str]:
    return [r.path for r in fake.requests[start:]]


# --- first sync: list everything ------------------------------------------------------------------


def test_first_sync_matches_customers_by_metadata_then_domain_then_mapping_and_lists_the_rest(org, fake):
    make_account(org, external_id="ACME-1", domain="acme.example")
    make_account(org, external_id="GLOBEX", domain="globex.example")
    initech = make_account(org, external_id="INITECH", domain="initech.example", seat_limit=40)
    by_metadata = fake.add_customer(email="ap@billing-agency.example", metadata={"vigil_account_id": "ACME-1"})
    by_domain = fake.add_customer(email="finance@globex.example", name="Globex Corp")
    by_mapping = fake.add_customer(email="initech.billing@gmail.com", name="Initech EU")
    stranger = fake.add_customer(email="ops@unknown.example", name="Unknown Ltd")
    free_mail = fake.add_customer(email="someone@gmail.com")
    fake.add_subscription(by_mapping, [Item(1000, quantity=12)])
    paid = fake.add_invoice(by_metadata, amount_due=120000, status="paid")
    not_kept = fake.add_invoice(stranger, amount_due=5000)
    connection = connect(org, fake)
    with tenant(org):
        mapping_save(org=org, provider="stripe", external_id=by_mapping["id"], account=initech)

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    assert run.unmatched == 2
    with tenant(org):
        links = dict(SourceRecord.objects.values_list("external_id", "account__external_id"))
    assert links == {by_metadata["id"]: "ACME-1", by_domain["id"]: "GLOBEX", by_mapping["id"]: "INITECH"}
    assert unmatched(org) == {
        stranger["id"]: ("customers", "Unknown Ltd", "unknown.example"),
        free_mail["id"]: ("customers", "someone@gmail.com", ""),
    }
    assert set(accounts(org)) == {"ACME-1", "GLOBEX", "INITECH"}  # unmatched customers never become accounts
    assert invoices(org) == {paid["id"]: ("ACME-1", "paid", Decimal("1200.00"), "USD")}
    assert not_kept["id"] not in invoices(org)
    assert accounts(org)["INITECH"].seat_limit == 40  # seats_from_quantity is off by default
    # Lists are read with Stripe's largest page, subscriptions with every status.
    assert requested(fake) == ["/v1/customers", "/v1/subscriptions", "/v1/invoices"]
    assert [r.query for r in fake.requests] == [{"limit": "100"}, {"limit": "100", "status": "all"}, {"limit": "100"}]
    assert {(r.headers["authorization"], r.headers["stripe-version"]) for r in fake.requests} == {
        (f"Bearer {KEY}", STRIPE_VERSION)
    }
    cursor = reload(org, connection).cursors["stripe"]
    assert cursor["mode"] == "events"
    assert run.started_at.timestamp() - 400 < cursor["since"] < run.started_at.timestamp()


def test_subscriptions_that_count_set_arr_with_its_history_and_seat_limits(org, fake):
    acme = make_account(org, external_id="ACME", domain="acme.example", arr=Decimal("50000"))
    make_account(org, external_id="GLOBEX", domain="globex.example", arr=Decimal("0"))
    make_account(org, external_id="TOKYO", domain="tokyo.example", currency="USD")
    make_account(org, external_id="HOOLI", domain="hooli.example", arr=Decimal("9000"), seat_limit=7)
    make_account(org, external_id="ONEOFF", domain="oneoff.example", arr=Decimal("3000"))
    acme_customer = fake.add_customer(email="a@acme.example")
    globex_customer = fake.add_customer(email="g@globex.example")
    tokyo_customer = fake.add_customer(email="t@tokyo.example")
    hooli_customer = fake.add_customer(email="h@hooli.example")
    fake.add_customer(email="o@oneoff.example")  # invoices only, no subscription: ARR left alone
    # 10 seats at 50.00 a month plus a 1,200.00 yearly platform fee; usage billed later counts nothing.
    fake.add_subscription(
        acme_customer,
        [Item(5000, quantity=10), Item(120000, "year"), Item(7, quantity=None, usage_type="metered")],
    )
    fake.add_subscription(acme_customer, [Item(99999, quantity=50)], status="canceled")
    fake.add_subscription(
        globex_customer, [Item(1000, "week"), Item(30000, "month", interval_count=3)], status="trialing"
    )
    fake.add_subscription(tokyo_customer, [Item(10000, "day", quantity=2)], status="past_due", currency="jpy")
    fake.add_subscription(hooli_customer, [Item(4000, quantity=3)], status="incomplete")
    connection = connect(org, fake, seats_from_quantity="yes")

    run = sync(org, connection)

    assert run.status == "succeeded", run.error
    found = accounts(org)
    # MRR = 10 × 50.00 + 1,200.00 / 12 = 600.00 → ARR 7,200.00
    assert (found["ACME"].arr, found["ACME"].currency, found["ACME"].seat_limit) == (Decimal("7200.00"), "USD", 10)
    # weekly 10.00 → 520.00 a year; 300.00 every 3 months → 1,200.00 a year
    assert (found["GLOBEX"].arr, found["GLOBEX"].seat_limit) == (Decimal("1720.00"), 1)
    # yen have no minor unit: 2 × ¥10,000 a day → ¥7,300,000 a year
    assert (found["TOKYO"].arr, found["TOKYO"].currency, found["TOKYO"].seat_limit) == (Decimal("7300000.00"), "JPY", 2)
    # an incomplete subscription is not revenue yet: ARR 0, seat limit left as it was
    assert (found["HOOLI"].arr, found["HOOLI"].seat_limit) == (Decimal("0.00"), 7)
    assert found["ONEOFF"].arr == Decimal("3000")
    assert arr_history(org) == [
        ("ACME", Decimal("7200.00")),
        ("GLOBEX", Decimal("1720.00")),
        ("HOOLI", Decimal("0.00")),
        ("TOKYO", Decimal("7300000.00")),
    ]
    assert acme.pk == found["ACME"].pk

    again = sync(org, reload(org, connection))

    assert (again.created, again.updated) == (0, 0)
    assert len(arr_history(org)) == 4


def test_a_subscription_with_more_items_than_stripe_embeds_is_read_to_the_end(org, fake):
    make_account(org, external_id="BIG", domain="big.example")
    customer = fake.add_customer(email="x@big.example")
    subscription = fake.add_subscription(customer, [Item(100 * n) for n in range(1, 13)])
    assert subscription["items"]["has_more"] is True and len(subscription["items"]["data"]) == 10

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert accounts(org)["BIG"].arr == Decimal("936.00")  # 12 × (1 + 2 + … + 12) = 936.00
    item_calls = [r.query for r in fake.requests if r.path == "/v1/subscription_items"]
    assert item_calls == [
        {"limit": "100", "subscription": subscription["id"], "starting_after": subscription["items"]["data"][-1]["id"]}
    ]


def test_invoice_statuses_amounts_and_dates(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example")
    now = int(time.time())
    march_10_3am_utc = int(datetime(2026, 3, 10, 3, 0, tzinfo=UTC).timestamp())
    made = {
        "paid": fake.add_invoice(customer, amount_due=150050, status="paid", at=march_10_3am_utc, paid_at=now - DAY),
        "open": fake.add_invoice(customer, amount_due=1000, due_date=now + 10 * DAY),
        "late": fake.add_invoice(customer, amount_due=2000, due_date=now - 3 * DAY),
        "card_failed": fake.add_invoice(customer, amount_due=3000),
        "uncollectible": fake.add_invoice(customer, amount_due=4000, status="uncollectible"),
        "void": fake.add_invoice(customer, amount_due=5000, status="void"),
        "draft": fake.add_invoice(customer, amount_due=6000, status="draft", currency="eur"),
        "yen": fake.add_invoice(customer, amount_due=125000, currency="jpy", due_date=now + DAY),
    }
    fake.set_invoice_status(made["card_failed"]["id"], "open", attempted=True)

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    stored = invoices(org)
    assert {name: stored[invoice["id"]][1:] for name, invoice in made.items()} == {
        "paid": ("paid", Decimal("1500.50"), "USD"),
        "open": ("open", Decimal("10.00"), "USD"),
        "late": ("past_due", Decimal("20.00"), "USD"),
        "card_failed": ("past_due", Decimal("30.00"), "USD"),
        "uncollectible": ("uncollectible", Decimal("40.00"), "USD"),
        "void": ("void", Decimal("50.00"), "USD"),
        "draft": ("draft", Decimal("60.00"), "EUR"),
        "yen": ("open", Decimal("125000.00"), "JPY"),
    }
    with tenant(org):
        paid = Invoice.objects.get(external_id=made["paid"]["id"])
        late = Invoice.objects.get(external_id=made["late"]["id"])
    assert paid.issued_at == date(2026, 3, 9)  # 03:00 UTC is still the 9th in New York
    assert paid.paid_at == datetime.fromtimestamp(now - DAY, UTC)
    assert late.due_date == datetime.fromtimestamp(now - 3 * DAY, org.tz).date()
    assert run.created == 1 + 8  # the customer's link to its account, and the invoices


# --- later syncs: the Events API -----------------------------------------------------------------


def test_later_syncs_read_only_events_and_apply_every_change(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    make_account(org, external_id="GLOBEX", domain="globex.example")
    acme = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    globex = fake.add_customer(email="ap@globex.example", at=LONG_AGO)
    stranger = fake.add_customer(email="ops@stranger.example", name="Stranger", at=LONG_AGO)
    seats = fake.add_subscription(acme, [Item(5000, quantity=10)], at=LONG_AGO)
    globex_plan = fake.add_subscription(globex, [Item(20000)], at=LONG_AGO)
    open_invoice = fake.add_invoice(acme, amount_due=50000, due_date=int(time.time()) + 5 * DAY, at=LONG_AGO)
    draft = fake.add_invoice(globex, amount_due=100, status="draft", at=LONG_AGO)
    connection = connect(org, fake, seats_from_quantity="yes")
    first = sync(org, connection)
    assert first.status == "succeeded", first.error
    assert unmatched(org) == {stranger["id"]: ("customers", "Stranger", "stranger.example")}
    assert (accounts(org)["ACME"].arr, accounts(org)["GLOBEX"].arr) == (Decimal("6000.00"), Decimal("2400.00"))
    mark = len(fake.requests)
    since_before = reload(org, connection).cursors["stripe"]["since"]

    fake.update_customer(stranger["id"], metadata={"vigil_account_id": "GLOBEX"})  # the admin tags it in Stripe
    newcomer = fake.add_customer(email="cfo@acme.example")
    fake.update_subscription(seats["id"], quantity=15)
    fake.update_subscription(globex_plan["id"], status="canceled")
    fake.set_invoice_status(open_invoice["id"], "paid")
    late = fake.add_invoice(newcomer, amount_due=7000, due_date=int(time.time()) - DAY)
    stranger_invoice = fake.add_invoice(stranger, amount_due=800, status="paid")
    fake.delete_invoice(draft["id"])
    fake.emit_other("charge.succeeded")

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert requested(fake, mark) == ["/v1/events"]
    query = fake.requests[mark].query
    assert [query[f"types[{n}]"] for n in range(len(EVENT_TYPES))] == list(EVENT_TYPES)
    assert int(query["created[gt]"]) == since_before - 60  # a minute re-read for late events
    assert unmatched(org) == {}
    assert invoices(org) == {
        open_invoice["id"]: ("ACME", "paid", Decimal("500.00"), "USD"),
        late["id"]: ("ACME", "past_due", Decimal("70.00"), "USD"),
        stranger_invoice["id"]: ("GLOBEX", "paid", Decimal("8.00"), "USD"),
    }
    found = accounts(org)
    assert (found["ACME"].arr, found["ACME"].seat_limit) == (Decimal("9000.00"), 15)
    assert found["GLOBEX"].arr == Decimal("0.00")
    # Both syncs ran today: the day's history row holds the latest ARR.
    assert arr_history(org) == [("ACME", Decimal("9000.00")), ("GLOBEX", Decimal("0.00"))]
    mark = len(fake.requests)

    quiet = sync(org, reload(org, connection))

    assert quiet.status == "succeeded", quiet.error
    assert requested(fake, mark) == ["/v1/events"]
    assert (quiet.created, quiet.updated, quiet.unmatched) == (0, 0, 0)


def test_a_window_spanning_pages_keeps_the_newest_state_of_each_object(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    invoice = fake.add_invoice(customer, amount_due=1000, due_date=int(time.time()) + DAY, at=LONG_AGO)
    subscription = fake.add_subscription(customer, [Item(1000, quantity=5)], at=LONG_AGO)
    connection = connect(org, fake, seats_from_quantity="yes")
    sync(org, connection)
    mark = len(fake.requests)
    now = int(time.time())
    fake.set_invoice_status(invoice["id"], "uncollectible", at=now - 120)
    fake.update_subscription(subscription["id"], quantity=9, at=now - 120)
    for n in range(230):  # pushes the older changes onto the window's third page
        fake.update_customer(customer["id"], name=f"Acme {n}", at=now - 60)
    fake.set_invoice_status(invoice["id"], "paid", at=now - 10)
    fake.update_subscription(subscription["id"], quantity=7, at=now - 10)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    event_pages = [r.query.get("starting_after") for r in fake.requests[mark:]]
    assert len(event_pages) == 3 and event_pages[0] is None and all(event_pages[1:])
    assert invoices(org)[invoice["id"]][1] == "paid"
    assert (accounts(org)["ACME"].seat_limit, accounts(org)["ACME"].arr) == (7, Decimal("840.00"))


def test_events_that_become_visible_late_are_applied_unless_a_newer_state_was(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    invoice = fake.add_invoice(customer, amount_due=1000, due_date=int(time.time()) + DAY, at=LONG_AGO)
    connection = connect(org, fake)
    sync(org, connection)
    stale_copy = copy.deepcopy(invoice)  # the invoice while still open
    fake.set_invoice_status(invoice["id"], "paid")
    sync(org, reload(org, connection))
    since = reload(org, connection).cursors["stripe"]["since"]
    # Two events stamped before the cursor that Stripe only lists now: a new invoice, and an
    # older state of the paid one.
    late_invoice = fake.add_invoice(customer, amount_due=2500, status="paid", at=since - 30)
    fake.emit("invoice.updated", stale_copy, at=since - 20)
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert requested(fake, mark) == ["/v1/events"]
    assert invoices(org)[late_invoice["id"]][1] == "paid"
    assert invoices(org)[invoice["id"]][1] == "paid"  # the stale open state did not come back


def test_a_cursor_older_than_stripes_event_retention_lists_everything_again(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    connection = connect(org, fake)
    sync(org, connection)
    stale = int(time.time()) - 31 * DAY
    with tenant(org):
        Connection.objects.filter(pk=connection.pk).update(
            cursors={"stripe": {**reload(org, connection).cursors["stripe"], "since": stale}}
        )
    missed = fake.add_invoice(customer, amount_due=4200, status="paid", at=int(time.time()) - 35 * DAY)
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert requested(fake, mark) == ["/v1/customers", "/v1/subscriptions", "/v1/invoices"]
    assert missed["id"] in invoices(org)
    assert reload(org, connection).cursors["stripe"]["since"] > time.time() - 400


def test_a_window_too_long_for_one_run_falls_back_to_a_full_list(org, fake, monkeypatch):
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    connection = connect(org, fake)
    sync(org, connection)
    made = [fake.add_invoice(customer, amount_due=100 + n) for n in range(150)]
    monkeypatch.setattr(stripe_provider, "MAX_WINDOW_PAGES", 1)
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert requested(fake, mark) == ["/v1/events", "/v1/customers", "/v1/subscriptions", "/v1/invoices", "/v1/invoices"]
    assert set(invoices(org)) == {i["id"] for i in made}


def test_a_customer_mapped_after_the_first_sync_brings_its_invoices(org, fake):
    initech = make_account(org, external_id="INITECH", domain="initech.example")
    customer = fake.add_customer(email="initech@gmail.com", name="Initech EU", at=LONG_AGO)
    old_invoice = fake.add_invoice(customer, amount_due=9900, status="paid", at=LONG_AGO)
    connection = connect(org, fake)
    sync(org, connection)
    assert customer["id"] in unmatched(org) and invoices(org) == {}
    with tenant(org):
        mapping_save(org=org, provider="stripe", external_id=customer["id"], account=initech)
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert requested(fake, mark) == [f"/v1/customers/{customer['id']}", "/v1/invoices", "/v1/events"]
    assert invoices(org) == {old_invoice["id"]: ("INITECH", "paid", Decimal("99.00"), "USD")}
    mark = len(fake.requests)
    sync(org, reload(org, connection))
    assert requested(fake, mark) == ["/v1/events"]  # caught up once


# --- paging, faults and errors ------------------------------------------------------------------


def test_lists_are_read_page_by_page_with_starting_after(org, fake):
    with tenant(org):
        Account.objects.bulk_create(
            [
                Account(
                    org=org,
                    external_id=f"A{n}",
                    name=f"Customer {n}",
                    domain=f"c{n}.example",
                    created_at=datetime.now(UTC),
                )
                for n in range(120)
            ]
        )
    customers = [fake.add_customer(email=f"ap@c{n}.example", at=LONG_AGO + n) for n in range(120)]
    made = [
        fake.add_invoice(customers[n % 120], amount_due=100 + n, status="paid", at=LONG_AGO + n) for n in range(250)
    ]

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert (run.pages, run.created, run.unmatched) == (2 + 1 + 3, 120 + 250, 0)
    assert set(invoices(org)) == {invoice["id"] for invoice in made}
    pages = [(r.path, r.query.get("starting_after")) for r in fake.requests]
    newest_invoices = sorted(made, key=lambda i: i["created"], reverse=True)
    newest_customers = sorted(customers, key=lambda c: c["created"], reverse=True)
    assert pages == [
        ("/v1/customers", None),
        ("/v1/customers", newest_customers[99]["id"]),
        ("/v1/subscriptions", None),
        ("/v1/invoices", None),
        ("/v1/invoices", newest_invoices[99]["id"]),
        ("/v1/invoices", newest_invoices[199]["id"]),
    ]


def seed_invoices(org, fake, count: int) -> list[dict]:
    make_account(org, external_id="ACME", domain="acme.example")
    customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
    return [fake.add_invoice(customer, amount_due=100, status="paid", at=LONG_AGO + n) for n in range(count)]


def second_invoice_page(request) -> bool:
    return request.path == "/v1/invoices" and "starting_after" in request.query


def test_a_429_waits_with_backoff_then_succeeds(org, fake, waits):
    seed_invoices(org, fake, 150)
    fake.fail(
        Reply(429, error_body("Too many requests hit the API too quickly.", code="rate_limit")),
        when=second_invoice_page,
    )

    run = sync(org, connect(org, fake))

    assert run.status == "succeeded", run.error
    assert len(invoices(org)) == 150
    assert len(waits) == 1  # Stripe sends no Retry-After: the client's own backoff
    assert sum(1 for r in fake.requests if second_invoice_page(r)) == 2


def test_a_500_storm_fails_the_run_keeps_committed_pages_and_resumes_there(org, fake):
    made = seed_invoices(org, fake, 150)
    fake.fail(Reply(500, error_body("An unknown error occurred", type="api_error")), times=5, when=second_invoice_page)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert (
        run.error == "Stripe kept failing (500) after 5 tries; the data synced before stays, and the next run retries"
    )
    newest = sorted(made, key=lambda i: i["created"], reverse=True)
    assert set(invoices(org)) == {i["id"] for i in newest[:100]}
    cursor = reload(org, connection).cursors["stripe"]
    assert (cursor["mode"], cursor["object"], cursor["starting_after"]) == ("list", "invoices", newest[99]["id"])
    assert reload(org, connection).status == "failing"
    mark = len(fake.requests)

    resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (50, 0)
    assert set(invoices(org)) == {i["id"] for i in made}
    assert [r.query.get("starting_after") for r in fake.requests[mark:]] == [newest[99]["id"]]


def test_a_listing_whose_cursor_object_was_deleted_starts_that_list_again(org, fake):
    customers = [fake.add_customer(email=f"ap@c{n}.example", at=LONG_AGO + n) for n in range(150)]
    fake.fail(
        Reply(500, error_body("An unknown error occurred", type="api_error")),
        times=5,
        when=lambda r: "starting_after" in r.query,
    )
    connection = connect(org, fake)
    assert sync(org, connection).status == "failed"
    cursor = reload(org, connection).cursors["stripe"]
    assert cursor["object"] == "customers"
    fake.delete_customer(cursor["starting_after"])
    mark = len(fake.requests)

    run = sync(org, reload(org, connection))

    assert run.status == "succeeded", run.error
    assert [(r.path, r.query.get("starting_after")) for r in fake.requests[mark:]][:3] == [
        ("/v1/customers", cursor["starting_after"]),
        ("/v1/customers", None),
        ("/v1/customers", sorted(customers, key=lambda c: c["created"], reverse=True)[100]["id"]),
    ]
    assert len(unmatched(org)) == 150  # the listing no longer shows the deleted customer...

    sync(org, reload(org, connection))

    assert len(unmatched(org)) == 149  # ...and its customer.deleted event takes it off the list


def test_a_malformed_page_fails_the_run_without_saving_it(org, fake):
    seed_invoices(org, fake, 150)
    fake.fail(Reply(200, '{"object": "list", "data": [{"id": "in_'), when=second_invoice_page)
    connection = connect(org, fake)

    run = sync(org, connection)

    assert run.status == "failed"
    assert "not valid JSON" in run.error
    assert len(invoices(org)) == 100
    assert reload(org, connection).cursors["stripe"]["object"] == "invoices"


def test_a_refused_key_says_what_to_do(org, fake):
    fake.add_customer(email="ap@acme.example")
    connection = connect(org, fake, key="rk_live_revoked0000")

    run = sync(org, connection)

    assert run.status == "failed"
    assert run.error == STRIPE_401
    assert reload(org, connection).last_error == STRIPE_401
    connector = connector_for(reload(org, connection))
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert str(refused.value) == STRIPE_401


def test_the_connection_test_names_a_missing_permission_or_says_what_it_found(org, fake):
    fake.add_customer(email="ap@acme.example", name="Acme Corp")
    connector = connector_for(connect(org, fake))

    verdict = connector.test(connector.client(RequestBudget(limit=5)))

    assert verdict == (
        "Connected to Stripe in test mode: the key reads customers, subscriptions, invoices and events "
        "(newest customer: Acme Corp)."
    )
    fake.denied = {"event"}
    with pytest.raises(ProviderError) as refused:
        connector.test(connector.client(RequestBudget(limit=5)))
    assert str(refused.value) == (
        "Stripe refused the request (403): the restricted key lacks the rak_event_read permission; give it Read "
        "access to Events (Stripe Dashboard → Developers → API keys) and sync again"
    )


def test_another_organization_sees_nothing(org, fake):
    make_account(org, external_id="ACME", domain="acme.example")
    other = make_org("elsewhere")
    twin = make_account(other, external_id="ACME", domain="acme.example", arr=Decimal("1000"))
    customer = fake.add_customer(email="ap@acme.example")
    fake.add_customer(email="x@nobody.example")
    fake.add_subscription(customer, [Item(10000)])
    fake.add_invoice(customer, amount_due=100, status="paid")

    assert sync(org, connect(org, fake)).status == "succeeded"

    assert len(invoices(org)) == 1 and len(unmatched(org)) == 1
    assert invoices(other) == {} and unmatched(other) == {}
    with tenant(other):
        assert SourceRecord.objects.count() == 0
        assert Connection.objects.count() == 0
        assert ArrChange.objects.count() == 0
        assert Account.objects.get(pk=twin.pk).arr == Decimal("1000")


# --- kill between pages, then resume --------------------------------------------------------------


def kill_sync_at(org, fake, when, env) -> None:
    """Run `manage.py sync` in a child process and SIGKILL it while Stripe holds a `when` request."""
    held = fake.block(when)
    child = subprocess.Popen(
        [sys.executable, "manage.py", "sync", "--org", org.slug, "--provider", "stripe"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not any(when(r) for r in fake.requests):
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the sync never made the request to be killed at"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    fake.hold = None
    held.set()


@pytest.mark.django_db(transaction=True)
def test_a_listing_killed_between_pages_resumes_with_nothing_lost_or_duplicated(subprocess_env):
    org = make_org("killed")
    with StripeFake() as fake:
        made = seed_invoices(org, fake, 250)
        connection = connect(org, fake)

        kill_sync_at(org, fake, second_invoice_page, subprocess_env)

        newest = sorted(made, key=lambda i: i["created"], reverse=True)
        assert set(invoices(org)) == {i["id"] for i in newest[:100]}
        cursor = reload(org, connection).cursors["stripe"]
        assert (cursor["object"], cursor["starting_after"]) == ("invoices", newest[99]["id"])
        mark = len(fake.requests)

        resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (150, 0)
    assert set(invoices(org)) == {i["id"] for i in made}
    assert requested(fake, mark) == ["/v1/invoices", "/v1/invoices"]  # no customer or subscription re-read


@pytest.mark.django_db(transaction=True)
def test_an_event_window_killed_midway_is_read_again_whole(subprocess_env):
    org = make_org("killed-events")
    with StripeFake() as fake:
        make_account(org, external_id="ACME", domain="acme.example")
        customer = fake.add_customer(email="ap@acme.example", at=LONG_AGO)
        connection = connect(org, fake)
        assert sync(org, connection).status == "succeeded"
        before = reload(org, connection).cursors["stripe"]
        made = [fake.add_invoice(customer, amount_due=100 + n) for n in range(130)]  # two pages of events

        kill_sync_at(org, fake, lambda r: r.path == "/v1/events" and "starting_after" in r.query, subprocess_env)

        assert invoices(org) == {}
        assert reload(org, connection).cursors["stripe"] == before
        mark = len(fake.requests)

        resumed = sync(org, reload(org, connection))

    assert resumed.status == "succeeded", resumed.error
    assert (resumed.created, resumed.updated) == (130, 0)
    assert set(invoices(org)) == {i["id"] for i in made}
    assert requested(fake, mark) == ["/v1/events", "/v1/events"]
    assert reload(org, connection).cursors["stripe"]["since"] == max(i["created"] for i in made)


# --- pure rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "count", "unit_amount", "quantity", "arr"),
    [
        ("day", 1, 100, 1, Decimal("365.00")),
        ("week", 1, 1000, 1, Decimal("520.00")),
        ("week", 2, 1000, 3, Decimal("780.00")),
        ("month", 1, 2999, 4, Decimal("1439.52")),
        ("month", 6, 60000, 1, Decimal("1200.00")),
        ("year", 1, 1234567, 1, Decimal("12345.67")),
        ("year", 2, 100000, 5, Decimal("2500.00")),
    ],
)
def test_mrr_is_normalized_to_a_month_and_arr_is_twelve_times_it(interval, count, unit_amount, quantity, arr):
    item = {
        "quantity": quantity,
        "price": {
            "object": "price",
            "unit_amount": unit_amount,
            "recurring": {"interval": interval, "interval_count": count},
        },
    }
    assert arr_from_mrr(monthly_amount(item), "usd") == arr


# --- the fake answers like the published spec -------------------------------------------------------


@pytest.fixture(scope="session")
def stripe_spec():
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the spec is 4 MB: the C loader reads it in seconds
    with open(SPECS / "spec3.2023-08-16.yaml", "rb") as file:
        return yaml.load(file, Loader=loader)


JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def resolve(spec, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def type_problems(spec, schema: dict, value, where: str) -> list[str]:
    if value is None:
        return [] if schema.get("nullable") else [f"{where} is null"]
    schema = resolve(spec, schema)
    if "anyOf" in schema:
        fits = any(not type_problems(spec, option, value, where) for option in schema["anyOf"])
        return [] if fits else [f"{where}: {value!r:.60} matches none of its anyOf"]
    expected = schema.get("type")
    if expected and not JSON_TYPES[expected](value):
        return [f"{where}: {type(value).__name__} where the spec says {expected}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    return []


def object_problems(spec, name: str, obj: dict) -> list[str]:
    """Required top-level keys present, and each known key of the declared type."""
    schema = spec["components"]["schemas"][name]
    problems = [f"{name}.{key} missing" for key in schema.get("required", []) if key not in obj]
    for key, value in obj.items():
        if key in schema["properties"]:
            problems += type_problems(spec, schema["properties"][key], value, f"{name}.{key}")
    return problems


def list_problems(spec, path: str, body: dict) -> list[str]:
    envelope = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    problems = [f"list.{key} missing" for key in envelope["required"] if key not in body]
    for key in ("object", "has_more", "url", "data"):
        problems += type_problems(spec, envelope["properties"][key], body.get(key), f"list.{key}")
    if not re.match(envelope["properties"]["url"]["pattern"], body["url"]):
        problems.append(f"list.url {body['url']} does not match {envelope['properties']['url']['pattern']}")
    item = envelope["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[1]
    for obj in body["data"]:
        problems += object_problems(spec, item, obj)
        if item == "event":
            problems += type_problems(
                spec, {"$ref": "#/components/schemas/notification_event_data"}, obj["data"], "event.data"
            )
            inner = obj["data"]["object"]
            problems += object_problems(spec, inner["object"], inner)
    return problems


def test_the_fake_serves_lists_objects_events_and_errors_shaped_like_the_spec(stripe_spec, fake):
    import httpx

    customer = fake.add_customer(email="ap@acme.example", name="Acme", metadata={"vigil_account_id": "A-1"})
    subscription = fake.add_subscription(customer, [Item(5000, quantity=3), Item(100000, "year")])
    invoice = fake.add_invoice(customer, amount_due=1000, due_date=int(time.time()) + DAY)
    fake.update_customer(customer["id"], name="Acme Corp")
    fake.update_subscription(subscription["id"], quantity=5)
    fake.set_invoice_status(invoice["id"], "paid")
    headers = {"Authorization": f"Bearer {KEY}", "Stripe-Version": STRIPE_VERSION}
    with httpx.Client(base_url=fake.url, headers=headers) as client:
        pages = {
            path: client.get(path, params={"limit": 100, **extra}).json()
            for path, extra in (
                ("/v1/customers", {}),
                ("/v1/subscriptions", {"status": "all"}),
                ("/v1/invoices", {}),
                (
                    "/v1/events",
                    {
                        "types[0]": "customer.updated",
                        "types[1]": "invoice.paid",
                        "types[2]": "customer.subscription.updated",
                    },
                ),
            )
        }
        refused = client.get("/v1/customers", headers={"Authorization": "Bearer rk_test_wrong"})
        fake.denied = {"invoice"}
        forbidden = client.get("/v1/invoices")
        missing = client.get("/v1/customers", params={"starting_after": "cus_nothing"})

    for path, body in pages.items():
        assert body["data"], path
        assert list_problems(stripe_spec, path, body) == [], path
    assert [e["type"] for e in pages["/v1/events"]["data"]] == [
        "invoice.paid",
        "customer.subscription.updated",
        "customer.updated",
    ]
    assert pages["/v1/events"]["data"][-1]["data"]["previous_attributes"] == {"name": "Acme"}
    for reply, status in ((refused, 401), (forbidden, 403), (missing, 404)):
        assert reply.status_code == status
        assert object_problems(stripe_spec, "error", reply.json()) == []
        assert object_problems(stripe_spec, "api_errors", reply.json()["error"]) == []
