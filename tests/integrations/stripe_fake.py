"""A local Stripe: customers, subscriptions, invoices and their events, served like Stripe's API.

Objects are copies of Stripe's own fixtures (provider-specs/stripe/fixtures3.json) with ids and
fields overridden, shaped for API version 2023-08-16 (the version the connector pins): a
subscription keeps its top-level current_period_*, an invoice its `paid`, `paid_out_of_band` and
`total_tax_amounts`. Lists are newest first with `limit` ≤ 100, `starting_after` and `has_more`;
events carry `data.object` (and `previous_attributes` on updates) and are kept 30 days; errors use
Stripe's body {"error": {type, code, message}}.
"""

import copy
import fnmatch
import functools
import itertools
import json
import time
from dataclasses import dataclass

from tests.integrations.fake_server import FakeProvider, FakeRequest, Reply
from tests.integrations.specs import PROVIDER_SPECS

SPECS = PROVIDER_SPECS / "stripe"
KEY = "rk_test_51VigilFakeRestrictedKey0000000000000000"
DAY = 86400


@functools.cache
def fixtures() -> dict:
    return json.loads((SPECS / "fixtures3.json").read_text())["resources"]


def fixture(name: str) -> dict:
    return copy.deepcopy(fixtures()[name])


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None, **extra) -> dict:
    error = {"type": type, "message": message, **extra}
    if code:
        error["code"] = code
    return {"error": error}


@dataclass
class Item:
    """One subscription item: a recurring price and its quantity."""

    unit_amount: int | None
    interval: str = "month"
    interval_count: int = 1
    quantity: int | None = 1
    usage_type: str = "licensed"


PERIODS = {"day": DAY, "week": 7 * DAY, "month": 30 * DAY, "year": 365 * DAY}
RESOURCES = {"/v1/customers": "customer", "/v1/subscriptions": "subscription", "/v1/invoices": "invoice"}
PERMISSIONS = {
    "customer": "rak_customer_read",
    "subscription": "rak_subscription_read",
    "subscription_item": "rak_subscription_read",
    "invoice": "rak_invoice_read",
    "event": "rak_event_read",
}


class StripeFake(FakeProvider):
    def __init__(self, *, key: str = KEY):
        super().__init__()
        self.key = key
        self.denied: set[str] = set()  # resources the key may not read ("event", "invoice", ...)
        self.customers: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.items: dict[str, list[dict]] = {}  # subscription id → all its items
        self.events: list[dict] = []
        self._ids = itertools.count(1)
        for path, resource in RESOURCES.items():
            self.route("GET", path)(self._guarded(resource, functools.partial(self._list, resource)))
        self.route("GET", "/v1/subscription_items")(self._guarded("subscription_item", self._list_items))
        self.route("GET", "/v1/events")(self._guarded("event", self._list_events))

    # --- changing things (each change records its event, like Stripe) ---------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_Vg{next(self._ids):012d}"

    def add_customer(self, *, email=None, name=None, metadata=None, at=None) -> dict:
        at = at or int(time.time())
        customer = fixture("customer")
        customer.update(
            id=self._id("cus"),
            created=at,
            email=email,
            name=name,
            metadata=metadata or {},
            discount=None,
            description=None,
            shipping=None,
        )
        self.customers[customer["id"]] = customer
        self.route("GET", f"/v1/customers/{customer['id']}")(
            self._guarded("customer", functools.partial(self._retrieve_customer, customer["id"]))
        )
        self.emit("customer.created", customer, at=at)
        return customer

    def update_customer(self, customer_id: str, *, at=None, **fields) -> dict:
        customer = self.customers[customer_id]
        previous = {name: copy.deepcopy(customer.get(name)) for name in fields}
        customer.update(fields)
        self.emit("customer.updated", customer, previous=previous, at=at)
        return customer

    def delete_customer(self, customer_id: str, *, at=None) -> None:
        customer = self.customers.pop(customer_id)
        self.emit("customer.deleted", customer, at=at)

    def add_subscription(self, customer: dict, items: list[Item], *, status="active", currency="usd", at=None) -> dict:
        at = at or int(time.time())
        subscription = fixture("subscription")
        subscription_id = self._id("sub")
        built = [self._item(subscription_id, item, currency=currency, at=at) for item in items]
        period = PERIODS[items[0].interval] * items[0].interval_count if items else 30 * DAY
        subscription.update(
            id=subscription_id,
            customer=customer["id"],
            created=at,
            start_date=at,
            billing_cycle_anchor=at,
            current_period_start=at,
            current_period_end=at + period,
            status=status,
            currency=currency,
            cancel_at=None,
            canceled_at=None,
            ended_at=None,
            cancel_at_period_end=False,
            trial_start=at if status == "trialing" else None,
            trial_end=at + 14 * DAY if status == "trialing" else None,
            pause_collection=None,
            pending_update=None,
            transfer_data=None,
            next_pending_invoice_item_invoice=None,
            pending_invoice_item_interval=None,
        )
        self.items[subscription_id] = built
        self._embed_items(subscription)
        self.subscriptions[subscription_id] = subscription
        self.emit("customer.subscription.created", subscription, at=at)
        return subscription

    def update_subscription(self, subscription_id: str, *, status=None, quantity=None, at=None) -> dict:
        at = at or int(time.time())
        subscription = self.subscriptions[subscription_id]
        previous = {}
        if quantity is not None:
            previous["items"] = copy.deepcopy(subscription["items"])
            for item in self.items[subscription_id]:
                item["quantity"] = quantity
            self._embed_items(subscription)
        if status is not None:
            previous["status"] = subscription["status"]
            subscription["status"] = status
            if status == "canceled":
                subscription.update(canceled_at=at, ended_at=at)
        kind = "deleted" if status == "canceled" else "updated"
        self.emit(
            f"customer.subscription.{kind}", subscription, previous=previous if kind == "updated" else None, at=at
        )
        return subscription

    def add_invoice(
        self, customer: dict, *, amount_due: int, status="open", currency="usd", due_date=None, at=None, paid_at=None
    ) -> dict:
        at = at or int(time.time())
        invoice = fixture("invoice")
        invoice_id = self._id("in")
        line = invoice["lines"]["data"][0]
        line.update(id=self._id("il"), invoice=invoice_id, amount=amount_due, currency=currency, subtotal=amount_due)
        line["period"] = {"start": at, "end": at}
        paid = status == "paid"
        invoice.update(
            id=invoice_id,
            customer=customer["id"],
            customer_email=customer.get("email"),
            customer_name=customer.get("name"),
            created=at,
            effective_at=at if status != "draft" else None,
            period_start=at,
            period_end=at,
            webhooks_delivered_at=at,
            amount_due=amount_due,
            amount_paid=amount_due if paid else 0,
            amount_remaining=0 if paid else amount_due,
            amount_overpaid=0,
            subtotal=amount_due,
            subtotal_excluding_tax=amount_due,
            total=amount_due,
            total_excluding_tax=amount_due,
            currency=currency,
            # Invoices sent for payment have a due date; card-charged ones have none.
            collection_method="send_invoice" if due_date else "charge_automatically",
            due_date=due_date,
            status=status,
            number=None if status == "draft" else f"VG-{invoice_id[-4:]}",
            last_finalization_error=None,
            from_invoice=None,
            next_payment_attempt=None,
            shipping_cost=None,
            parent=None,
            # API version 2023-08-16 fields (since moved or removed):
            paid=paid,
            paid_out_of_band=False,
            total_tax_amounts=[],
            subscription=None,
        )
        invoice["lines"]["url"] = f"/v1/invoices/{invoice_id}/lines"
        invoice["status_transitions"] = {
            "finalized_at": None if status == "draft" else at,
            "marked_uncollectible_at": at if status == "uncollectible" else None,
            "paid_at": (paid_at or at) if paid else None,
            "voided_at": at if status == "void" else None,
        }
        self.invoices[invoice_id] = invoice
        self.emit("invoice.created", invoice, at=at)
        return invoice

    def set_invoice_status(self, invoice_id: str, status: str, *, at=None, attempted: bool | None = None) -> dict:
        """Move an invoice on: Stripe sends the specific event, then `invoice.updated`."""
        at = at or int(time.time())
        invoice = self.invoices[invoice_id]
        previous = {"status": invoice["status"]}
        invoice["status"] = status
        if attempted is not None:
            invoice.update(attempted=attempted, attempt_count=1 if attempted else 0)
        transitions = invoice["status_transitions"]
        if status == "paid":
            invoice.update(paid=True, amount_paid=invoice["amount_due"], amount_remaining=0)
            transitions["paid_at"] = at
        elif status == "void":
            transitions["voided_at"] = at
        elif status == "uncollectible":
            transitions["marked_uncollectible_at"] = at
        elif status == "open":
            transitions["finalized_at"] = at
        specific = {
            "paid": "invoice.paid",
            "void": "invoice.voided",
            "uncollectible": "invoice.marked_uncollectible",
            "open": "invoice.payment_failed" if attempted else "invoice.finalized",
        }[status]
        self.emit(specific, invoice, at=at)
        self.emit("invoice.updated", invoice, previous=previous, at=at)
        return invoice

    def delete_invoice(self, invoice_id: str, *, at=None) -> None:
        """Only drafts can be deleted."""
        invoice = self.invoices.pop(invoice_id)
        self.emit("invoice.deleted", invoice, at=at)

    def emit_other(self, event_type: str = "charge.succeeded", *, at=None) -> dict:
        """An event of a type the connector does not ask for."""
        return self.emit(event_type, fixture("charge") if "charge" in fixtures() else {"object": "charge"}, at=at)

    def _item(self, subscription_id: str, item: Item, *, currency: str, at: int) -> dict:
        built = fixture("subscription_item")
        price = built["price"]
        price_id = self._id("price")
        price.update(
            id=price_id,
            currency=currency,
            unit_amount=item.unit_amount,
            unit_amount_decimal=None if item.unit_amount is None else str(item.unit_amount),
            billing_scheme="per_unit" if item.unit_amount is not None else "tiered",
            tiers_mode=None if item.unit_amount is not None else "graduated",
            transform_quantity=None,
        )
        price["recurring"].update(
            interval=item.interval, interval_count=item.interval_count, usage_type=item.usage_type
        )
        built.update(
            id=self._id("si"),
            subscription=subscription_id,
            created=at,
            quantity=item.quantity,
            current_period_start=at,
            current_period_end=at + PERIODS[item.interval] * item.interval_count,
            billing_thresholds=None,
        )
        # The legacy `plan` mirrors the price, as Stripe renders it.
        built["plan"] = {
            **built["plan"],
            "id": price_id,
            "amount": item.unit_amount,
            "amount_decimal": price["unit_amount_decimal"],
            "billing_scheme": price["billing_scheme"],
            "currency": currency,
            "interval": item.interval,
            "interval_count": item.interval_count,
            "usage_type": item.usage_type,
            "transform_usage": None,
            "metadata": {},
        }
        return built

    def _embed_items(self, subscription: dict) -> None:
        # Stripe embeds the first 10 items; the rest are read from /v1/subscription_items.
        items = self.items[subscription["id"]]
        subscription["items"] = {
            "object": "list",
            "data": copy.deepcopy(items[:10]),
            "has_more": len(items) > 10,
            "url": f"/v1/subscription_items?subscription={subscription['id']}",
        }

    def emit(self, event_type: str, obj: dict, *, previous: dict | None = None, at=None) -> dict:
        """Record an event with a copy of `obj` as it is now (tests use it for events that arrive late)."""
        event = fixture("event")
        data = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event.update(
            id=self._id("evt"),
            created=at or int(time.time()),
            type=event_type,
            data=data,
            api_version="2023-08-16",
            request={"id": f"req_Vg{len(self.events):010d}", "idempotency_key": None},
        )
        self.events.append(event)
        return event

    # --- serving ----------------------------------------------------------------------------------

    def _guarded(self, resource: str, handler):
        def guarded(request: FakeRequest) -> Reply:
            if request.headers.get("authorization") != f"Bearer {self.key}":
                shown = (request.headers.get("authorization") or "").removeprefix("Bearer ")
                return Reply(401, error_body(f"Invalid API Key provided: {shown[:8]}****{shown[-4:]}"))
            if resource in self.denied:
                return Reply(
                    403,
                    error_body(
                        f"The provided key '{self.key[:8]}***{self.key[-4:]}' does not have the required "
                        "permissions for this endpoint on account 'acct_1VigilFake'. Having the "
                        f"'{PERMISSIONS[resource]}' permission would allow this request to continue."
                    ),
                )
            return handler(request)

        return guarded

    def _page(self, request: FakeRequest, items: list[dict], url: str) -> Reply:
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return Reply(400, error_body("Invalid limit: must be between 1 and 100", param="limit"))
        after = request.query.get("starting_after")
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                kind = after.split("_", 1)[0]
                return Reply(
                    404,
                    error_body(f"No such {kind}: '{after}'", code="resource_missing", param="starting_after"),
                )
            items = items[ids.index(after) + 1 :]
        return Reply(200, {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url})

    def _newest_first(self, objects) -> list[dict]:
        return sorted(objects, key=lambda o: (o["created"], self._sequence(o["id"])), reverse=True)

    def _sequence(self, object_id: str) -> int:
        return int(object_id.rsplit("_Vg", 1)[1])

    def _list(self, resource: str, request: FakeRequest) -> Reply:
        objects = list(
            {"customer": self.customers, "subscription": self.subscriptions, "invoice": self.invoices}[
                resource
            ].values()
        )
        if resource != "customer" and request.query.get("customer"):
            objects = [o for o in objects if o["customer"] == request.query["customer"]]
        if resource == "subscription":
            status = request.query.get("status")
            # By default Stripe lists the subscriptions that are not canceled.
            if status is None:
                objects = [o for o in objects if o["status"] not in ("canceled", "incomplete_expired")]
            elif status != "all":
                objects = [o for o in objects if o["status"] == status]
        elif resource == "invoice" and request.query.get("status"):
            objects = [o for o in objects if o["status"] == request.query["status"]]
        return self._page(request, self._newest_first(objects), f"/v1/{resource}s")

    def _retrieve_customer(self, customer_id: str, request: FakeRequest) -> Reply:
        if customer_id not in self.customers:  # Stripe still answers for a deleted customer
            return Reply(200, {"id": customer_id, "object": "customer", "deleted": True})
        return Reply(200, self.customers[customer_id])

    def _list_items(self, request: FakeRequest) -> Reply:
        subscription_id = request.query.get("subscription")
        if subscription_id not in self.items:
            return Reply(400, error_body("Missing required param: subscription.", param="subscription"))
        # Items are listed oldest first (the order they were added).
        return self._page(request, copy.deepcopy(self.items[subscription_id]), "/v1/subscription_items")

    def _list_events(self, request: FakeRequest) -> Reply:
        query = request.query
        types = [value for name, value in query.items() if name.startswith("types[")]
        if types and "type" in query:
            return Reply(400, error_body("You may pass either `type` or `types`, but not both.", param="types"))
        if len(types) > 20:
            return Reply(400, error_body("You may pass at most 20 types.", param="types"))
        now = int(time.time())
        events = [e for e in self.events if e["created"] >= now - 30 * DAY]  # Stripe keeps 30 days
        bounds = {
            "gt": lambda c, v: c > v,
            "gte": lambda c, v: c >= v,
            "lt": lambda c, v: c < v,
            "lte": lambda c, v: c <= v,
        }
        for name, test in bounds.items():
            if f"created[{name}]" in query:
                value = int(query[f"created[{name}]"])
                events = [e for e in events if test(e["created"], value)]
        if types:
            events = [e for e in events if e["type"] in types]  # exact names: no wildcard in `types`
        if "type" in query:
            events = [e for e in events if fnmatch.fnmatchcase(e["type"], query["type"])]
        return self._page(request, self._newest_first(events), "/v1/events")
