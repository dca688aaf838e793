"""Stripe (restricted key): customers matched to accounts, subscriptions → ARR and seats, invoices.

Requests are pinned to `Stripe-Version: 2023-08-16`, the version of Stripe's published OpenAPI
description that the tests check the fake server against. Every field read here (customer email,
name and metadata; subscription status, currency and items with price.unit_amount, recurring
interval and quantity; invoice amount_due, currency, due_date, status, status_transitions.paid_at,
collection_method, attempted) has the same shape in Stripe's current fixtures, so moving the pin
forward is a one-line change once tested.

The stream's cursor is a small state machine, committed with every page:
- `list`: the first sync (or one whose events have expired) lists customers, then subscriptions
  (status=all), then invoices, page by page with `starting_after`; `started` is when the listing
  began, so the events of anything that changed while it ran are read afterwards.
- `events`: later syncs read the Events API from `since`.
The cursor also carries the subscription ledger ({subscription id: [customer, currency, MRR in minor
units, seats]}): ARR is a sum over an account's subscriptions, and an event brings one subscription
at a time, so the others must be remembered somewhere that commits together with the page. There
is no table for subscriptions; the ledger is small (~80 bytes per subscription).
"""

import json
import re
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection as db
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Account, Invoice, InvoiceStatus
from csm.tenancy import tenant
from integrations.http import ProviderClient, ProviderError, RequestBudget
from integrations.matching import (
    Candidate,
    forget_unmatched,
    record_unmatched,
    remember_sources,
    resolve_accounts,
)
from integrations.models import AccountMapping, SourceRecord, UnmatchedRecord
from integrations.sync import Applied, Connector, ConnectorField, Page, Stream, register

PROVIDER = "stripe"
STRIPE_VERSION = "2023-08-16"
DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_METADATA_KEY = "vigil_account_id"
PAGE_SIZE = 100  # Stripe's largest page

# `types` takes exact names only (a wildcard works in `type`, which takes one pattern), at most 20:
# every event of these families that changes a customer, subscription or invoice.
EVENT_TYPES = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "invoice.created",
    "invoice.updated",
    "invoice.deleted",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.payment_action_required",
    "invoice.marked_uncollectible",
    "invoice.voided",
)
EVENT_RETENTION = 30 * 86400  # Stripe lists the events of the last 30 days only
RETENTION_MARGIN = 3600  # a cursor this close to the edge could lose events purged while we read
LISTING_CLOCK_MARGIN = 300  # our clock against Stripe's: events re-read twice are harmless, lost ones are not
EVENT_OVERLAP = 60  # seconds re-read at each window's start, for events that became visible late
MAX_WINDOW_PAGES = 1000  # 100,000 events: beyond, list everything instead (see _read_events)
APPLY_CHUNK = 500
MAX_CATCH_UP = 100  # newly matched customers whose invoices are fetched per run

COUNTED_STATUSES = {"active", "trialing", "past_due"}
# Amounts are in the currency's smallest unit; these currencies have none, or three decimals.
ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
MONTHS_PER = {
    "day": Decimal(12) / Decimal(365),
    "week": Decimal(12) / Decimal(52),
    "month": Decimal(1),
    "year": Decimal(12),
}

ARR_SNAPSHOT = "vigil.arr_snapshot"  # rides on a page so ARR commits with the cursor holding its ledger
OVERDUE_CHECK = "vigil.overdue_check"  # open invoices whose due date passed since they last changed

STRIPE_401 = (
    "Stripe refused the key (401): create a restricted key with read access to Customers, Subscriptions, "
    "Invoices and Events and reconnect"
)
RESOURCE_LABELS = {
    "rak_customer_read": "Customers",
    "rak_subscription_read": "Subscriptions",
    "rak_invoice_read": "Invoices",
    "rak_event_read": "Events",
}


# --- pure rules ---------------------------------------------------------------------------------


def minor_units(currency: str) -> Decimal:
    """How many of the amounts Stripe sends make one unit of the currency."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        return Decimal(1)
    if code in THREE_DECIMAL:
        return Decimal(1000)
    return Decimal(100)


def monthly_amount(item: dict) -> Decimal:
    """MRR of one subscription item in minor units: unit amount × quantity, per month."""
    price = item.get("price") or item.get("plan") or {}
    if price.get("object") == "plan":  # legacy plans carry the recurrence on themselves
        recurring = price
        amount = price.get("amount_decimal") or price.get("amount")
    else:
        recurring = price.get("recurring") or {}
        amount = price.get("unit_amount_decimal") or price.get("unit_amount")
    interval = recurring.get("interval")
    # Metered usage is billed after the fact and tiered prices have no unit amount: neither has a
    # price we can project, so they count for nothing rather than for a guess.
    if interval not in MONTHS_PER or recurring.get("usage_type") == "metered" or amount is None:
        return Decimal(0)
    quantity = item.get("quantity")
    count = recurring.get("interval_count") or 1
    return Decimal(str(amount)) * Decimal(1 if quantity is None else quantity) / (MONTHS_PER[interval] * count)


def subscription_entry(subscription: dict, items: list[dict]) -> list:
    """The ledger entry of a subscription: [customer, currency, MRR in minor units, seats]."""
    customer = subscription.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    if subscription.get("status") not in COUNTED_STATUSES:
        return [customer, subscription.get("currency") or "", "0", 0]
    mrr = sum((monthly_amount(item) for item in items), Decimal(0))
    # A plan's seat line is the item with the largest quantity (a flat platform fee has 1).
    seats = max((item.get("quantity") or 0 for item in items if _licensed(item)), default=0)
    return [customer, subscription.get("currency") or "", str(mrr.quantize(Decimal("0.000001"))), seats]


def _licensed(item: dict) -> bool:
    price = item.get("price") or item.get("plan") or {}
    recurring = price if price.get("object") == "plan" else price.get("recurring") or {}
    return recurring.get("usage_type") != "metered"


def arr_from_mrr(mrr_minor: Decimal, currency: str) -> Decimal:
    """ARR = 12 × MRR, in the currency's major units."""
    return (mrr_minor * 12 / minor_units(currency)).quantize(Decimal("0.01"))


def invoice_status(record: dict, *, due_date: date | None, today: date) -> str:
    status = record["status"]
    if status == "open":
        if due_date is not None and due_date < today:
            return InvoiceStatus.PAST_DUE
        # A card charge that failed leaves the invoice open with no due date: it is late all the same.
        if record.get("failed_charge"):
            return InvoiceStatus.PAST_DUE
        return InvoiceStatus.OPEN
    return {
        "paid": InvoiceStatus.PAID,
        "uncollectible": InvoiceStatus.UNCOLLECTIBLE,
        "void": InvoiceStatus.VOID,
        "draft": InvoiceStatus.DRAFT,
    }.get(status, InvoiceStatus.DRAFT)


def explain(status: int, body: str) -> str:
    """Stripe's error body ({"error": {type, code, message}}) in words an admin can act on."""
    try:
        error = (json.loads(body) or {}).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = str(error.get("message") or "").strip()
    kind = "/".join(str(part) for part in (error.get("type"), error.get("code")) if part)
    if status == 401:
        return STRIPE_401
    if status == 403:
        permission = re.search(r"\b(rak_[a-z_]+)\b", message)
        if permission:
            name = permission.group(1)
            resource = RESOURCE_LABELS.get(name) or name.removeprefix("rak_").rsplit("_", 1)[0].replace("_", " ")
            return (
                f"Stripe refused the request (403): the restricted key lacks the {name} permission; "
                f"give it Read access to {resource} (Stripe Dashboard → Developers → API keys) and sync again"
            )
        return (
            "Stripe refused the request (403): the key may not read this data; give the restricted key Read "
            "access to Customers, Subscriptions, Invoices and Events and sync again"
        )
    if status == 404:
        return f"Stripe could not find what was asked (404{', ' + kind if kind else ''}): {message or 'no details'}"
    return f"Stripe rejected the request ({status}{', ' + kind if kind else ''}): {message or 'no details'}"


# --- records: Stripe objects trimmed to what we keep --------------------------------------------


def customer_record(customer: dict, *, metadata_key: str, deleted: bool = False) -> dict:
    return {
        "object": "customer",
        "id": customer["id"],
        "email": customer.get("email") or "",
        "name": customer.get("name") or "",
        "account_ref": str((customer.get("metadata") or {}).get(metadata_key) or "").strip(),
        "deleted": deleted or bool(customer.get("deleted")),
    }


def invoice_record(invoice: dict, *, deleted: bool = False) -> dict:
    customer = invoice.get("customer")
    return {
        "object": "invoice",
        "id": invoice["id"],
        "customer": customer.get("id") if isinstance(customer, dict) else customer,
        "created": invoice.get("created"),
        "amount_due": invoice.get("amount_due") or 0,
        "currency": invoice.get("currency") or "",
        "due_date": invoice.get("due_date"),
        "status": invoice.get("status") or "draft",
        "paid_at": (invoice.get("status_transitions") or {}).get("paid_at"),
        "failed_charge": invoice.get("collection_method") == "charge_automatically" and bool(invoice.get("attempted")),
        "deleted": deleted,
    }


def arr_snapshot(ledger: dict) -> dict:
    """Per customer: MRR by currency and seats of the subscriptions that count."""
    customers: dict[str, dict] = {}
    for customer, currency, mrr, seats in ledger.values():
        entry = customers.setdefault(customer, {"mrr": {}, "seats": 0})
        if Decimal(mrr):
            entry["mrr"][currency] = str(Decimal(entry["mrr"].get(currency, "0")) + Decimal(mrr))
        entry["seats"] += seats
    return {"object": ARR_SNAPSHOT, "customers": customers}


# --- the stream ---------------------------------------------------------------------------------


class StripeStream(Stream):
    name = "stripe"

    def __init__(self, connector: "StripeConnector"):
        self.connector = connector
        settings = connector.connection.settings or {}
        self.metadata_key = (settings.get("account_metadata_key") or "").strip() or DEFAULT_METADATA_KEY
        self.seats_from_quantity = str(settings.get("seats_from_quantity") or "").strip().lower() in {
            "1",
            "true",
            "yes",
            "on",
        }

    # reading

    def read(self, client: ProviderClient, cursor: Any):
        state = cursor or self._new_listing()
        if state["mode"] == "events" and state["since"] < time.time() - EVENT_RETENTION + RETENTION_MARGIN:
            # Stripe no longer has every event since the cursor: only a full list sees what changed.
            state = self._new_listing()
        if state["mode"] == "events":
            yield from self._catch_up(client, state)
            state = yield from self._read_events(client, state)
            if state is None:
                return
        yield from self._read_listing(client, state)

    @staticmethod
    def _new_listing() -> dict:
        started = int(time.time()) - LISTING_CLOCK_MARGIN
        return {"mode": "list", "started": started, "object": "customers", "starting_after": None, "ledger": {}}

    def _read_listing(self, client, state: dict):
        order = ["customers", "subscriptions", "invoices"]
        while True:
            kind = state["object"]
            params: dict = {"limit": PAGE_SIZE}
            if kind == "subscriptions":
                params["status"] = "all"  # canceled ones too: they end an account's ARR
            if state["starting_after"]:
                params["starting_after"] = state["starting_after"]
            try:
                body = list_page(client, f"/v1/{kind}", params)
            except ProviderError as error:
                if error.status in (400, 404) and state["starting_after"]:
                    # The object the cursor points at is gone (a deleted customer or draft): list this
                    # kind again from its start; rows already saved are upserted unchanged.
                    state = {**state, "starting_after": None}
                    continue
                raise
            data = body["data"]
            records: list[dict] = []
            following = dict(state)
            if kind == "customers":
                records = [customer_record(c, metadata_key=self.metadata_key) for c in data]
            elif kind == "subscriptions":
                following["ledger"] = {**state["ledger"], **{s["id"]: self._ledger_entry(client, s) for s in data}}
            else:
                records = [invoice_record(i) for i in data]
            if body["has_more"] and data:
                following["starting_after"] = data[-1]["id"]
            elif kind == "invoices":
                # Everything is listed: from now on, the events since the listing began.
                final = {"mode": "events", "since": state["started"], "seen": [], "ledger": following["ledger"]}
                yield Page(records, final, done=True)
                return
            else:
                if kind == "subscriptions":
                    records = [arr_snapshot(following["ledger"])]
                following.update(object=order[order.index(kind) + 1], starting_after=None)
            yield Page(records, following)
            state = following

    def _read_events(self, client, state: dict):
        """Read the whole window, then apply the newest state of each object it touched.

        Stripe lists events newest first. Applying page by page would let an older event of an
        object overwrite a newer one read a page before; reading the window first and keeping the
        first (newest) event seen per object gives each object its latest state, in any order.
        Only the window's last page carries the advanced cursor: a sync killed while applying reads
        the same window again and writes the same rows (upserts by Stripe id), so nothing is lost
        and nothing is duplicated. Memory holds one trimmed record per changed object.
        """
        since, seen = state["since"], set(state["seen"])
        params: dict = {"limit": PAGE_SIZE, "created[gt]": since - EVENT_OVERLAP}
        params.update({f"types[{n}]": name for n, name in enumerate(EVENT_TYPES)})
        newest: dict[tuple, dict | list | None] = {}  # (kind, id) → its newest state, trimmed
        read: list[tuple[str, int]] = []
        top = since
        pages = 0
        while True:
            body = list_page(client, "/v1/events", params)
            pages += 1
            for event in body["data"]:
                top = max(top, event["created"])
                read.append((event["id"], event["created"]))
                obj = (event.get("data") or {}).get("object") or {}
                key = (obj.get("object"), obj.get("id"))
                if key not in newest:
                    # An event the previous window applied (in its last EVENT_OVERLAP seconds) still
                    # counts as the object's newest state, so an older event arriving late cannot undo it.
                    applied_before = event["id"] in seen
                    newest[key] = None if applied_before else self._trim(client, event["type"], obj)
            if not body["has_more"] or not body["data"]:
                break
            if pages >= MAX_WINDOW_PAGES:
                # A window commits only once read whole, and this one may not fit a run's request
                # budget: a full list commits page by page, so it always gets through.
                listing = self._new_listing()
                yield Page([], listing)
                return listing
            params["starting_after"] = body["data"][-1]["id"]

        records, ledger = [], dict(state["ledger"])
        for (kind, object_id), trimmed in newest.items():
            if trimmed is None:
                continue
            if kind == "subscription":
                ledger[object_id] = trimmed
            else:
                records.append(trimmed)
        final = {
            "mode": "events",
            "since": top,
            "seen": [event_id for event_id, created in read if created > top - EVENT_OVERLAP],
            "ledger": ledger,
        }
        records.sort(key=lambda r: r["object"] != "customer")  # customers first: their invoices need them matched
        chunks = [records[n : n + APPLY_CHUNK] for n in range(0, len(records), APPLY_CHUNK)] or [[]]
        for chunk in chunks[:-1]:
            yield Page(chunk, state)
        yield Page(chunks[-1] + [arr_snapshot(ledger), {"object": OVERDUE_CHECK}], final, done=True)
        return None

    def _trim(self, client, event_type: str, obj: dict) -> dict | list | None:
        """What an event's object becomes: a record to apply, a ledger entry, or nothing we keep."""
        kind = obj.get("object")
        if kind == "customer":
            return customer_record(obj, metadata_key=self.metadata_key, deleted=event_type == "customer.deleted")
        if kind == "subscription":
            return self._ledger_entry(client, obj)
        if kind == "invoice":
            return invoice_record(obj, deleted=event_type == "invoice.deleted")
        return None

    def _catch_up(self, client, state: dict):
        """Invoices of customers that matched no account before and match one now.

        The event window only brings invoices that changed, so a customer the admin maps today
        would otherwise show only its future invoices.
        """
        for customer_id in self._customers_to_catch_up()[:MAX_CATCH_UP]:
            try:
                customer = client.json("GET", f"/v1/customers/{customer_id}")
            except ProviderError as error:
                if error.status != 404:
                    raise
                customer = {"id": customer_id, "deleted": True}
            records = [customer_record(customer, metadata_key=self.metadata_key)]
            if "object" in customer:  # it exists, if only as deleted: its invoices remain
                params: dict = {"limit": PAGE_SIZE, "customer": customer_id}
                while True:
                    body = list_page(client, "/v1/invoices", params)
                    records += [invoice_record(i) for i in body["data"]]
                    if not body["has_more"] or not body["data"]:
                        break
                    params["starting_after"] = body["data"][-1]["id"]
            yield Page(records, state)

    def _customers_to_catch_up(self) -> list[str]:
        connection = self.connector.connection
        with tenant(connection.org_id):
            account_domains = (
                Account.objects.filter(org_id=connection.org_id).exclude(domain="").values(d=Lower("domain"))
            )
            by_domain = UnmatchedRecord.objects.filter(
                org_id=connection.org_id, connection=connection, stream="customers", domain__in=account_domains
            ).values_list("external_id", flat=True)
            linked = SourceRecord.objects.filter(
                org_id=connection.org_id, provider=PROVIDER, object_type="customer"
            ).values("external_id")
            mapped = (
                AccountMapping.objects.filter(org_id=connection.org_id, provider=PROVIDER)
                .exclude(external_id__in=linked)
                .values_list("external_id", flat=True)
            )
            return sorted(set(by_domain) | set(mapped))

    def _ledger_entry(self, client, subscription: dict) -> list:
        items_list = subscription.get("items") or {}
        items = list(items_list.get("data") or [])
        if items_list.get("has_more") and items:
            params: dict = {"limit": PAGE_SIZE, "subscription": subscription["id"]}
            while True:
                params["starting_after"] = items[-1]["id"]
                body = list_page(client, "/v1/subscription_items", params)
                items += body["data"]
                if not body["has_more"] or not body["data"]:
                    break
        return subscription_entry(subscription, items)

    # applying

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        kinds = defaultdict(list)
        for record in records:
            kinds[record["object"]].append(record)
        applied = Applied()
        for step, kind in (
            (self._apply_customers, "customer"),
            (self._apply_invoices, "invoice"),
            (self._apply_arr, ARR_SNAPSHOT),
            (self._apply_overdue, OVERDUE_CHECK),
        ):
            if kinds[kind]:
                done = step(org=org, connection=connection, records=kinds[kind])
                applied.created += done.created
                applied.updated += done.updated
                applied.unmatched += done.unmatched
        return applied

    def _apply_customers(self, *, org, connection, records: list[dict]) -> Applied:
        """Match by metadata (the account's external id), then e-mail domain, then the admin's mapping."""
        ids = [r["id"] for r in records]
        linked_before = dict(
            SourceRecord.objects.filter(
                org=org, provider=PROVIDER, object_type="customer", external_id__in=ids
            ).values_list("external_id", "account_id")
        )
        by_ref = dict(
            Account.objects.filter(
                org=org, external_id__in={r["account_ref"] for r in records if r["account_ref"]}
            ).values_list("external_id", "pk")
        )
        from_metadata = {r["id"]: by_ref[r["account_ref"]] for r in records if r["account_ref"] in by_ref}
        remember_sources(org=org, provider=PROVIDER, object_type="customer", pairs=from_metadata)
        rest = [
            Candidate(external_id=r["id"], domain=r["email"], name=r["name"] or r["email"] or r["id"])
            for r in records
            if r["id"] not in from_metadata
        ]
        # A deleted customer is still matched: the invoices it leaves behind belong to its account.
        matched = resolve_accounts(org=org, provider=PROVIDER, object_type="customer", candidates=rest)
        matched.update(from_metadata)
        # Unmatched customers are listed for the admin to map; they never become accounts.
        deleted = {r["id"] for r in records if r["deleted"]}
        unmatched = [c for c in rest if c.external_id not in matched and c.external_id not in deleted]
        record_unmatched(org=org, connection=connection, stream="customers", candidates=unmatched)
        forget_unmatched(
            org=org, connection=connection, stream="customers", external_ids=sorted(set(matched) | deleted)
        )
        return Applied(
            created=sum(1 for cid in matched if cid not in linked_before),
            updated=sum(1 for cid, pk in matched.items() if cid in linked_before and linked_before[cid] != pk),
            unmatched=len(unmatched),
        )

    def _apply_invoices(self, *, org, connection, records: list[dict]) -> Applied:
        latest = {r["id"]: r for r in records}  # one row per id, or ON CONFLICT would hit a row twice
        gone = [r["id"] for r in latest.values() if r["deleted"]]
        live = [r for r in latest.values() if not r["deleted"]]
        customers = sorted({r["customer"] for r in live if r["customer"]})
        accounts = resolve_accounts(
            org=org, provider=PROVIDER, object_type="customer", candidates=[Candidate(c) for c in customers]
        )
        # Invoices of customers that match no account wait: the customer is on the unmatched list,
        # and once it matches, the next sync fetches its invoices (StripeStream._catch_up).
        rows = [r for r in live if r["customer"] in accounts]
        removed = Invoice.objects.filter(org=org, external_id__in=gone).delete()[0] if gone else 0
        if not rows:
            return Applied(updated=removed)
        today = timezone.now().astimezone(org.tz).date()

        def local_date(ts):
            return None if ts is None else datetime.fromtimestamp(ts, org.tz).date()

        columns = {
            "external_id": ("text", [r["id"] for r in rows]),
            "account_id": ("bigint", [accounts[r["customer"]] for r in rows]),
            "issued_at": ("date", [local_date(r["created"]) for r in rows]),
            "amount": ("numeric", [Decimal(r["amount_due"]) / minor_units(r["currency"]) for r in rows]),
            "currency": ("text", [r["currency"].upper()[:3] for r in rows]),
            "status": (
                "text",
                [invoice_status(r, due_date=local_date(r["due_date"]), today=today) for r in rows],
            ),
            "due_date": ("date", [local_date(r["due_date"]) for r in rows]),
            "paid_at": ("timestamptz", [_utc(r["paid_at"]) for r in rows]),
        }
        created, updated = _upsert(table="accounts_invoice", org_id=org.pk, key="external_id", columns=columns)
        return Applied(created=created, updated=updated + removed)

    def _apply_arr(self, *, org, connection, records: list[dict]) -> Applied:
        """ARR (12 × MRR) and, where the admin asked, the seat limit of every account billed in Stripe."""
        customers = records[-1]["customers"]
        with db.cursor() as cursor:
            cursor.execute(
                """
                SELECT external_id, account_id FROM integrations_sourcerecord
                WHERE org_id = %s AND provider = %s AND object_type = 'customer' AND external_id = ANY(%s)
                """,
                [org.pk, PROVIDER, list(customers)],
            )
            links = cursor.fetchall()
        mrr: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        seats: dict[int, int] = defaultdict(int)
        for customer, account_id in links:
            for currency, amount in customers[customer]["mrr"].items():
                mrr[account_id][currency] += Decimal(amount)
            seats[account_id] += customers[customer]["seats"]
        ids, arrs, currencies, seat_limits = [], [], [], []
        for account_id in sorted({account_id for _, account_id in links}):
            amounts = {c: arr_from_mrr(m, c) for c, m in mrr[account_id].items()}
            # One ARR per account: with subscriptions in several currencies the largest one is
            # kept, since amounts in different currencies cannot be added.
            currency = max(amounts, key=lambda c: amounts[c], default=None)
            ids.append(account_id)
            arrs.append(amounts[currency] if currency else Decimal(0))
            currencies.append(currency.upper()[:3] if currency else None)
            seat_limits.append(seats[account_id] if self.seats_from_quantity and seats[account_id] else None)
        if not ids:
            return Applied()
        today = timezone.now().astimezone(org.tz).date()
        with db.cursor() as cursor:
            cursor.execute(
                """
                WITH v AS (
                    SELECT * FROM unnest(%(ids)s::bigint[], %(arrs)s::numeric[], %(currencies)s::text[],
                                         %(seats)s::int[]) AS v(id, arr, currency, seats)
                ), previous AS (
                    SELECT a.id, a.arr FROM accounts_account a JOIN v ON v.id = a.id WHERE a.org_id = %(org)s
                ), changed AS (
                    UPDATE accounts_account a
                    SET arr = v.arr, currency = COALESCE(v.currency, a.currency),
                        seat_limit = COALESCE(v.seats, a.seat_limit), updated_at = now()
                    FROM v
                    WHERE a.org_id = %(org)s AND a.id = v.id
                      AND (a.arr, a.currency, a.seat_limit)
                          IS DISTINCT FROM (v.arr, COALESCE(v.currency, a.currency), COALESCE(v.seats, a.seat_limit))
                    RETURNING a.id, a.arr
                ), history AS (
                    INSERT INTO accounts_arrchange (org_id, account_id, effective_date, arr)
                    SELECT %(org)s, c.id, %(today)s, c.arr FROM changed c JOIN previous p ON p.id = c.id
                    WHERE p.arr IS DISTINCT FROM c.arr
                    ON CONFLICT (org_id, account_id, effective_date) DO UPDATE SET arr = EXCLUDED.arr
                )
                SELECT count(*) FROM changed
                """,
                {
                    "ids": ids,
                    "arrs": arrs,
                    "currencies": currencies,
                    "seats": seat_limits,
                    "org": org.pk,
                    "today": today,
                },
            )
            return Applied(updated=cursor.fetchone()[0])

    def _apply_overdue(self, *, org, connection, records: list[dict]) -> Applied:
        # No event fires when a due date passes; Stripe invoice ids start with "in_".
        today = timezone.now().astimezone(org.tz).date()
        overdue = Invoice.objects.filter(
            org=org, status=InvoiceStatus.OPEN, due_date__lt=today, external_id__startswith="in_"
        ).update(status=InvoiceStatus.PAST_DUE)
        return Applied(updated=overdue)


def _utc(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _upsert(*, table: str, org_id: int, key: str, columns: dict[str, tuple[str, list]]) -> tuple[int, int]:
    """INSERT ... ON CONFLICT by (org, key), writing only rows that differ; returns (created, updated)."""
    names = list(columns)
    values = [name for name in names if name != key]
    unnest = ", ".join(f"%({name})s::{kind}[]" for name, (kind, _) in columns.items())
    stored = ", ".join(f"t.{name}" for name in values)
    incoming = ", ".join(f"i.{name}" for name in values)
    with db.cursor() as cursor:
        cursor.execute(
            f"""
            WITH i AS (SELECT * FROM unnest({unnest}) AS i({", ".join(names)})),
            upserted AS (
                INSERT INTO {table} AS cur (org_id, {", ".join(names)})
                SELECT %(org)s, {", ".join(f"i.{name}" for name in names)} FROM i
                -- Rows equal to the stored ones never reach ON CONFLICT, which would lock them.
                WHERE NOT EXISTS (
                    SELECT 1 FROM {table} t
                    WHERE t.org_id = %(org)s AND t.{key} = i.{key} AND ({stored}) IS NOT DISTINCT FROM ({incoming})
                )
                ON CONFLICT (org_id, {key}) DO UPDATE SET {", ".join(f"{n} = EXCLUDED.{n}" for n in values)}
                WHERE ({", ".join(f"cur.{n}" for n in values)}) IS DISTINCT FROM
                      ({", ".join(f"EXCLUDED.{n}" for n in values)})
                RETURNING cur.xmax = 0 AS created
            )
            SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
            """,
            {"org": org_id, **{name: data for name, (_, data) in columns.items()}},
        )
        created, updated = cursor.fetchone()
    return created, updated


def list_page(client: ProviderClient, path: str, params: dict) -> dict:
    """One page of a Stripe list: {object: "list", data, has_more, url}."""
    body = client.json("GET", path, params=params)
    if not (
        isinstance(body, dict)
        and body.get("object") == "list"
        and isinstance(body.get("data"), list)
        and isinstance(body.get("has_more"), bool)
    ):
        raise ProviderError(
            f"Stripe answered {path} with something that is not a list; nothing from it was saved, "
            "and the next run reads it again"
        )
    return body


# --- the connector ------------------------------------------------------------------------------


@register
class StripeConnector(Connector):
    provider = PROVIDER
    purpose = (
        "Billing: customers matched to accounts, subscriptions for ARR and seat limits, invoices and failed payments."
    )
    reread_after_mapping = False  # a newly mapped customer's invoices are fetched by the next sync itself
    credential_fields = [
        ConnectorField(
            "api_key",
            "Restricted key",
            help="Stripe Dashboard → Developers → API keys → Create restricted key, with Read access to "
            "Customers, Subscriptions, Invoices and Events (rk_live_…).",
        )
    ]
    setting_fields = [
        ConnectorField(
            "account_metadata_key",
            "Customer metadata key",
            secret=False,
            required=False,
            help=f"A customer whose metadata has this key is matched to the account with that external id "
            f"(empty: {DEFAULT_METADATA_KEY}). Others match by e-mail domain, then by your mappings.",
        ),
        ConnectorField(
            "seats_from_quantity",
            "Seat limit from subscription quantity",
            secret=False,
            required=False,
            help="yes: the quantity on active subscriptions becomes the account's seat limit. Empty: seat limits "
            "are left alone.",
        ),
        ConnectorField("api_base", "API address", secret=False, required=False, help=f"Empty for {DEFAULT_API_BASE}."),
    ]
    # Stripe sends no Retry-After on 429: the client's backoff with jitter decides the wait.
    backoff_base = 0.5
    sleep = staticmethod(time.sleep)

    def client(self, budget: RequestBudget) -> ProviderClient:
        base = (self.connection.settings or {}).get("api_base") or DEFAULT_API_BASE
        return ProviderClient(
            provider="Stripe",
            base_url=base.rstrip("/"),
            headers={"Authorization": f"Bearer {self.secrets.get('api_key', '')}", "Stripe-Version": STRIPE_VERSION},
            budget=budget,
            explain=explain,
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        )

    def streams(self) -> list[Stream]:
        return [StripeStream(self)]

    def test(self, client: ProviderClient) -> str:
        """One cheap list call per resource the sync reads, so a missing permission shows now."""
        newest = None
        for path in ("/v1/customers", "/v1/subscriptions", "/v1/invoices", "/v1/events"):
            body = list_page(client, path, {"limit": 1})
            if path == "/v1/customers" and body["data"]:
                newest = body["data"][0]
        key = self.secrets.get("api_key", "")
        mode = "live" if "_live_" in key else "test"
        found = (
            f"newest customer: {newest.get('name') or newest.get('email') or newest['id']}"
            if newest
            else "no customers yet"
        )
        advice = "" if key.startswith("rk_") else " A restricted key (rk_…) with read access only would be safer."
        return (
            f"Connected to Stripe in {mode} mode: the key reads customers, subscriptions, invoices and events "
            f"({found}).{advice}"
        )
