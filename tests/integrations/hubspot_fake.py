"""A local HubSpot: owners, companies, contacts and deals, served like HubSpot's CRM v3 API.

Shapes follow HubSpot's public documentation:
- objects are {id, properties (every value a string), createdAt, updatedAt, archived}; companies and
  deals carry `hs_lastmodifieddate`, contacts `lastmodifieddate`, all carry `hs_object_id`;
- POST /crm/v3/objects/{type}/search takes {filterGroups: [{filters}], sorts, properties, limit ≤ 200,
  after} and answers {total, results, paging: {next: {after, link}}}; filters in a group are ANDed,
  groups ORed; an `after` of 10,000 or more is refused with a 400 (search's result ceiling);
- GET /crm/v3/owners pages with `limit` ≤ 100 and `after`;
- batch reads (companies, deal properties, v4 deal→company associations) answer 200, or 207 with
  `errors` for ids they do not know;
- errors are {status: "error", message, correlationId, category}; a missing scope lists it under
  errors[].context.requiredGranularScopes.
Records are generated deterministically (`populate`); ties on the modified date are served in an
order that is not the id order, since HubSpot promises none.
"""

import bisect
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

from tests.integrations.fake_server import FakeProvider, FakeRequest, Reply

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
SCOPES = {
    "crm.objects.owners.read",
    "crm.objects.companies.read",
    "crm.objects.contacts.read",
    "crm.objects.deals.read",
}
CEILING = 10_000
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MODIFIED = {"companies": "hs_lastmodifieddate", "contacts": "lastmodifieddate", "deals": "hs_lastmodifieddate"}
DEFAULT_PROPERTIES = {
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "contacts": ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    "deals": [
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ],
}
NUMERIC = {"hs_object_id", "amount", "associatedcompanyid", "hubspot_owner_id", "annual_recurring_revenue"}
DEAL_PROPERTY_TYPES = {
    "amount": "number",
    "closedate": "datetime",
    "dealname": "string",
    "dealstage": "enumeration",
    "pipeline": "enumeration",
    "deal_currency_code": "enumeration",
    "hs_lastmodifieddate": "datetime",
    "annual_recurring_revenue": "number",
    "contract_end_date": "date",
}
SCOPE_OF = {"companies": "crm.objects.companies.read", "contacts": "crm.objects.contacts.read"}

ADJECTIVES = [
    "Northwind",
    "Blue",
    "Summit",
    "Bright",
    "Iron",
    "Silver",
    "Harbor",
    "Maple",
    "Quantum",
    "Atlas",
    "Cedar",
    "Polar",
    "Crimson",
    "Golden",
    "Pacific",
    "Evergreen",
    "Granite",
    "Lumen",
    "Vertex",
    "Orbit",
]
NOUNS = [
    "Analytics",
    "Logistics",
    "Health",
    "Robotics",
    "Foods",
    "Energy",
    "Media",
    "Labs",
    "Capital",
    "Systems",
    "Retail",
    "Mobility",
    "Security",
    "Learning",
    "Software",
    "Biotech",
    "Studios",
    "Networks",
]
SUFFIXES = ["Inc", "LLC", "GmbH", "Ltd", "SAS", "Co"]
FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Elif", "Farah", "Gustavo", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
LAST = ["Silva", "Moreau", "Kowalski", "Tanaka", "Okafor", "Nguyen", "Schmidt", "Haddad", "Rossi", "Berg"]
TITLES = ["VP Operations", "Head of Data", "CTO", "Product Manager", "IT Director", "Finance Manager"]
# Stages the default mapping lists: every generated company is a customer and becomes an account.
LIFECYCLES = ["customer"] * 7 + ["opportunity", "salesqualifiedlead", "evangelist"]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def error_body(message: str, *, category: str, **extra) -> dict:
    return {
        "status": "error",
        "message": message,
        "correlationId": "4f6a3e2c-0b8d-4c55-9a51-1d9b7a3c2e10",
        "category": category,
        **extra,
    }


def rate_limited() -> dict:
    body = error_body("You have reached your secondly limit.", category="RATE_LIMITS")
    return {**body, "errorType": "RATE_LIMIT", "policyName": "SECONDLY", "groupName": "publicapi:search"}


def _tie_order(object_id: str) -> int:
    # HubSpot gives no order among equal sort values; this one is stable but not the id order.
    return (int(object_id) * 2654435761) % 4294967296


class HubSpotFake(FakeProvider):
    def __init__(self, *, token: str = TOKEN):
        super().__init__()
        self.token = token
        self.scopes = set(SCOPES)
        self.owners: list[dict] = []
        self.objects: dict[str, dict[str, dict]] = {"companies": {}, "contacts": {}, "deals": {}}
        self.deal_companies: dict[str, list[tuple[str, bool]]] = {}  # deal id → [(company id, primary)]
        self.served: list[tuple[str, list[str]]] = []  # (object type, ids answered) per search
        self.before_search: dict[str, Callable[[], None]] = {}  # one-shot hooks per object type
        self.clock = BASE_MS
        self._ids = {
            "companies": itertools.count(5_000_000_001),
            "contacts": itertools.count(1_000_001),
            "deals": itertools.count(9_000_000_001),
            "owners": itertools.count(70_001),
        }
        self._index: dict[str, list | None] = {"companies": None, "contacts": None, "deals": None}
        self.route("GET", "/crm/v3/owners")(self._guarded("crm.objects.owners.read", self._owners))
        for object_type in self.objects:
            scope = SCOPE_OF.get(object_type, "crm.objects.deals.read")
            self.route("POST", f"/crm/v3/objects/{object_type}/search")(
                self._guarded(scope, lambda request, kind=object_type: self._search(kind, request))
            )
        self.route("POST", "/crm/v3/objects/companies/batch/read")(
            self._guarded("crm.objects.companies.read", self._batch_companies)
        )
        self.route("POST", "/crm/v4/associations/deals/companies/batch/read")(
            self._guarded("crm.objects.deals.read", self._deal_associations)
        )
        self.route("POST", "/crm/v3/properties/deals/batch/read")(
            self._guarded("crm.objects.deals.read", self._deal_properties)
        )

    # --- changing things ---------------------------------------------------------------------

    def tick(self, ms: int = 1000) -> int:
        self.clock += ms
        return self.clock

    def add_owner(self, email: str, *, first: str = "Sam", last: str = "Owner") -> dict:
        owner_id = str(next(self._ids["owners"]))
        owner = {
            "id": owner_id,
            "email": email,
            "type": "PERSON",
            "firstName": first,
            "lastName": last,
            "userId": int(owner_id) + 900_000,
            "userIdIncludingInactive": int(owner_id) + 900_000,
            "createdAt": iso(BASE_MS),
            "updatedAt": iso(BASE_MS),
            "archived": False,
            "teams": [],
        }
        self.owners.append(owner)
        return owner

    def _add(self, object_type: str, properties: dict, modified: int | None, created: int | None) -> dict:
        object_id = str(next(self._ids[object_type]))
        modified = modified if modified is not None else self.tick()
        created = created if created is not None else modified
        props = {k: (None if v is None else str(v)) for k, v in properties.items()}
        props.update(hs_object_id=object_id, createdate=iso(created), **{MODIFIED[object_type]: iso(modified)})
        if object_type == "contacts":
            props["hs_lastmodifieddate"] = iso(modified)
        record = {
            "id": object_id,
            "properties": props,
            "createdAt": iso(created),
            "updatedAt": iso(modified),
            "archived": False,
        }
        self.objects[object_type][object_id] = record
        self._index[object_type] = None
        return record

    def add_company(
        self,
        *,
        name: str,
        domain: str = "",
        owner: dict | None = None,
        lifecycle: str = "customer",
        modified: int | None = None,
        created: int | None = None,
        **properties,
    ) -> dict:
        return self._add(
            "companies",
            {
                "name": name,
                "domain": domain,
                "website": f"https://www.{domain}" if domain else None,
                "hubspot_owner_id": owner["id"] if owner else None,
                "lifecyclestage": lifecycle,
                "industry": "COMPUTER_SOFTWARE",
                "numberofemployees": "250",
                "country": "United States",
                **properties,
            },
            modified,
            created,
        )

    def add_contact(
        self,
        *,
        email: str,
        first: str = "",
        last: str = "",
        company: dict | None = None,
        phone: str = "",
        title: str = "",
        modified: int | None = None,
    ) -> dict:
        return self._add(
            "contacts",
            {
                "email": email,
                "firstname": first,
                "lastname": last,
                "phone": phone,
                "jobtitle": title,
                "associatedcompanyid": company["id"] if isinstance(company, dict) else company,
                "lifecyclestage": "customer",
                "hs_email_domain": email.rsplit("@", 1)[-1],
            },
            modified,
            None,
        )

    def add_deal(
        self,
        *,
        name: str,
        amount,
        closedate: str,
        stage: str = "closedwon",
        company=None,
        others: tuple = (),
        modified: int | None = None,
        **properties,
    ) -> dict:
        deal = self._add(
            "deals",
            {
                "dealname": name,
                "amount": amount,
                "closedate": closedate,
                "dealstage": stage,
                "pipeline": "default",
                "deal_currency_code": "USD",
                **properties,
            },
            modified,
            None,
        )
        links = [(c["id"] if isinstance(c, dict) else c, False) for c in others]
        if company is not None:
            links.insert(len(links) // 2, (company["id"] if isinstance(company, dict) else company, True))
        self.deal_companies[deal["id"]] = links
        return deal

    def touch(self, object_type: str, object_id: str, *, modified: int | None = None, **properties) -> dict:
        """Edit a record as a HubSpot user would: its last-modified date moves to now."""
        record = self.objects[object_type][object_id]
        modified = modified if modified is not None else self.tick()
        record["properties"].update({k: (None if v is None else str(v)) for k, v in properties.items()})
        record["properties"][MODIFIED[object_type]] = iso(modified)
        record["updatedAt"] = iso(modified)
        self._index[object_type] = None
        return record

    def populate(
        self,
        *,
        companies: int,
        contacts_per_company: int = 0,
        deals_per_company: int = 0,
        owners: int = 4,
        share: int = 1,
        step_ms: int = 3_600_000,
        start_at: int = 0,
    ) -> dict:
        """Deterministic records: `share` companies at a time get the same modified date, `step_ms` apart."""
        made_owners = [
            self.add_owner(
                f"{FIRST[n % len(FIRST)].lower()}.{LAST[n % len(LAST)].lower()}@vendor.example",
                first=FIRST[n % len(FIRST)],
                last=LAST[n % len(LAST)],
            )
            for n in range(owners)
        ]
        start = self.clock
        made = []
        for n in range(start_at, start_at + companies):
            name = f"{ADJECTIVES[n % len(ADJECTIVES)]} {NOUNS[(n // len(ADJECTIVES)) % len(NOUNS)]}"
            slug = name.lower().replace(" ", "")
            modified = start + ((n - start_at) // share + 1) * step_ms
            company = self.add_company(
                name=f"{name} {SUFFIXES[n % len(SUFFIXES)]}",
                domain=f"{slug}{n}.com",
                owner=made_owners[n % owners] if owners else None,
                lifecycle=LIFECYCLES[n % len(LIFECYCLES)],
                modified=modified,
                created=modified - 86_400_000 * (1 + n % 700),
            )
            made.append(company)
            for k in range(contacts_per_company):
                first, last = FIRST[(n + k) % len(FIRST)], LAST[(n * 3 + k) % len(LAST)]
                self.add_contact(
                    email=f"{first.lower()}.{last.lower()}{k}@{slug}{n}.com",
                    first=first,
                    last=last,
                    company=company,
                    phone=f"+1 555 01{n % 100:02d}",
                    title=TITLES[(n + k) % len(TITLES)],
                    modified=modified + 1 + k,
                )
            for k in range(deals_per_company):
                year = 2024 + k
                self.add_deal(
                    name=f"{name} — {year} subscription",
                    amount=f"{12_000 + 1_000 * (n % 40)}.00",
                    closedate=f"{year}-{1 + n % 12:02d}-15T00:00:00Z",
                    company=company,
                    modified=modified + 100 + k,
                )
        self.clock = max(self.clock, start + (companies // share + 2) * step_ms)
        return {"owners": made_owners, "companies": made}

    # --- serving -----------------------------------------------------------------------------

    def _guarded(self, scope: str, handler):
        def guarded(request: FakeRequest) -> Reply:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return Reply(
                    401,
                    error_body(
                        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                        "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                        category="INVALID_AUTHENTICATION",
                    ),
                )
            if scope not in self.scopes:
                return Reply(
                    403,
                    error_body(
                        "This app hasn't been granted all required scopes to make this call. Read more about required "
                        "scopes here: https://developers.hubspot.com/scopes.",
                        category="MISSING_SCOPES",
                        errors=[
                            {
                                "message": "One or more of the following scopes are required.",
                                "context": {"requiredGranularScopes": [scope]},
                            }
                        ],
                        links={"scopes": "https://developers.hubspot.com/scopes"},
                    ),
                )
            return handler(request)

        return guarded

    def _owners(self, request: FakeRequest) -> Reply:
        limit = int(request.query.get("limit", 100))
        if limit > 100:
            return Reply(400, error_body("limit must be at most 100", category="VALIDATION_ERROR"))
        offset = int(request.query.get("after") or 0)
        page = self.owners[offset : offset + limit]
        body: dict = {"results": page}
        if offset + limit < len(self.owners):
            after = str(offset + limit)
            body["paging"] = {"next": {"after": after, "link": f"{self.url}/crm/v3/owners?limit={limit}&after={after}"}}
        return Reply(200, body)

    def _value(self, object_type: str, record: dict, name: str):
        value = record["properties"].get(name)
        if value is None:
            return None
        if name.endswith("date") and not value.isdigit():
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        if name in NUMERIC or name.endswith("date"):
            return float(value)
        return value

    def _matches(self, object_type: str, record: dict, flt: dict) -> bool:
        name, operator = flt["propertyName"], flt["operator"]
        value = self._value(object_type, record, name)
        if operator == "HAS_PROPERTY":
            return value is not None
        if operator == "NOT_HAS_PROPERTY":
            return value is None
        if operator in {"IN", "NOT_IN"}:
            inside = value is not None and str(record["properties"][name]) in {str(v) for v in flt["values"]}
            return inside if operator == "IN" else not inside
        wanted = flt["value"]
        if isinstance(value, float | int):
            wanted = float(wanted) if str(wanted).replace(".", "", 1).isdigit() else self._iso_ms(wanted)
        if value is None:
            return operator == "NEQ"
        return {
            "EQ": value == wanted,
            "NEQ": value != wanted,
            "GT": value > wanted,
            "GTE": value >= wanted,
            "LT": value < wanted,
            "LTE": value <= wanted,
        }[operator]

    @classmethod
    def _filter_ms(cls, value) -> float:
        text = str(value)
        return float(text) if text.isdigit() else cls._iso_ms(text)

    @staticmethod
    def _iso_ms(value) -> float:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000

    def _by_modified(self, object_type: str) -> list[tuple[int, int, str]]:
        if self._index[object_type] is None:
            modified = MODIFIED[object_type]
            self._index[object_type] = sorted(
                (self._value(object_type, r, modified), _tie_order(i), i) for i, r in self.objects[object_type].items()
            )
        return self._index[object_type]

    def _search(self, object_type: str, request: FakeRequest) -> Reply:
        hook = self.before_search.pop(object_type, None)
        if hook:
            hook()
        body = request.json()
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        if limit > 200:
            return Reply(400, error_body("limit must be 200 or less", category="VALIDATION_ERROR"))
        if after >= CEILING:
            return Reply(
                400,
                error_body(
                    f"There was a problem with the request. Paging beyond {CEILING} results is not supported "
                    "(after={after}).",
                    category="VALIDATION_ERROR",
                ),
            )
        groups = [list(g.get("filters") or []) for g in body.get("filterGroups") or []]
        sorts = body.get("sorts") or [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        sort = sorts[0]["propertyName"] if isinstance(sorts[0], dict) else str(sorts[0])
        descending = isinstance(sorts[0], dict) and sorts[0].get("direction") == "DESCENDING"
        modified = MODIFIED[object_type]
        index = self._by_modified(object_type)
        # The modified-date index answers the connector's queries without scanning every record.
        lo, hi = 0, len(index)
        if len(groups) == 1:
            for flt in list(groups[0]):
                if flt["propertyName"] == modified and flt["operator"] in {"GTE", "EQ"}:
                    value = self._filter_ms(flt["value"])
                    lo = bisect.bisect_left(index, (value,))
                    if flt["operator"] == "EQ":
                        hi = bisect.bisect_left(index, (value + 0.5,))
                    groups[0].remove(flt)
                    break
            groups = [g for g in groups if g]
        tail = index[lo:hi]
        if groups or sort != modified or descending:
            candidates = [self.objects[object_type][i] for _, _, i in tail]
            if groups:
                candidates = [
                    r for r in candidates if any(all(self._matches(object_type, r, f) for f in g) for g in groups)
                ]
            if sort != modified:
                candidates.sort(key=lambda r: (self._value(object_type, r, sort) or 0, _tie_order(r["id"])))
            if descending:
                candidates.reverse()
            total = len(candidates)
            page = candidates[after : after + limit]
        else:
            total = len(tail)
            page = [self.objects[object_type][i] for _, _, i in tail[after : after + limit]]
        wanted = set(body.get("properties") or DEFAULT_PROPERTIES[object_type]) | {
            "hs_object_id",
            "createdate",
            modified,
        }
        results = [{**r, "properties": {k: v for k, v in r["properties"].items() if k in wanted}} for r in page]
        self.served.append((object_type, [r["id"] for r in page]))
        answer: dict = {"total": total, "results": results}
        if after + limit < total:
            answer["paging"] = {
                "next": {"after": str(after + limit), "link": f"{self.url}{request.path}?after={after + limit}"}
            }
        return Reply(200, answer)

    def _batch_companies(self, request: FakeRequest) -> Reply:
        body = request.json()
        wanted = set(body.get("properties") or DEFAULT_PROPERTIES["companies"]) | {
            "hs_object_id",
            "createdate",
            "hs_lastmodifieddate",
        }
        ids = [str(i["id"]) for i in body.get("inputs") or []]
        found = [self.objects["companies"][i] for i in ids if i in self.objects["companies"]]
        missing = [i for i in ids if i not in self.objects["companies"]]
        answer: dict = {
            "status": "COMPLETE",
            "results": [{**r, "properties": {k: v for k, v in r["properties"].items() if k in wanted}} for r in found],
            "startedAt": iso(self.clock),
            "completedAt": iso(self.clock),
        }
        if missing:
            answer["numErrors"] = 1
            answer["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some COMPANY objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    "context": {"ids": missing},
                }
            ]
        return Reply(207 if missing else 200, answer)

    def _deal_associations(self, request: FakeRequest) -> Reply:
        ids = [str(i["id"]) for i in request.json().get("inputs") or []]
        results, without = [], []
        for deal_id in ids:
            links = self.deal_companies.get(deal_id) or []
            if not links:
                without.append(deal_id)
                continue
            results.append(
                {
                    "from": {"id": deal_id},
                    "to": [
                        {
                            "toObjectId": int(company_id),
                            "associationTypes": (
                                [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"}] if primary else []
                            )
                            + [{"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}],
                        }
                        for company_id, primary in links
                    ],
                }
            )
        answer: dict = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(self.clock),
            "completedAt": iso(self.clock),
        }
        if without:
            answer["numErrors"] = len(without)
            answer["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"No company is associated to deal {deal_id}.",
                    "context": {"fromObjectId": [deal_id]},
                }
                for deal_id in without
            ]
        return Reply(207 if without else 200, answer)

    def _deal_properties(self, request: FakeRequest) -> Reply:
        names = [i["name"] for i in request.json().get("inputs") or []]
        results = [
            {
                "name": n,
                "label": n.replace("_", " ").title(),
                "type": DEAL_PROPERTY_TYPES[n],
                "fieldType": "number" if DEAL_PROPERTY_TYPES[n] == "number" else "date",
                "groupName": "dealinformation",
                "hidden": False,
                "hubspotDefined": n in {"amount", "closedate"},
            }
            for n in names
            if n in DEAL_PROPERTY_TYPES
        ]
        missing = [n for n in names if n not in DEAL_PROPERTY_TYPES]
        answer: dict = {"status": "COMPLETE", "results": results}
        if missing:
            answer["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Unable to find property {n}",
                    "context": {"name": [n]},
                }
                for n in missing
            ]
        return Reply(207 if missing else 200, answer)
