"""HubSpot (private app token): owners, then companies → accounts, contacts, and won deals → ARR and renewal.

HubSpot is the CRM of record: a customer company that matches no account becomes one (external id
`hubspot-<id>`), and its name, domain, owner (the CSM, when the owner's e-mail is a member of the
organization) and lifecycle stage (through the admin's mapping) follow HubSpot. A company is a
customer when its lifecycle stage is one the admin's mapping lists, or when it has a won deal (the
deals read are the won ones). The rest of a CRM (leads, subscribers, prospects) are not accounts:
a CS team's morning list is no place for them, and listing each lead and its contacts as unmatched
would bury the records that do need a mapping. Such a company becomes an account the day it is won.

Companies, contacts and deals are read incrementally through the CRM search API, filtered on the
last-modified date and sorted by it ascending. Every page is a new query anchored at the last
record read (`modified >= since`), never the next `after` offset of the previous one, because:
- `after` is an offset into a result set that moves while it is read: a record edited after it
  was read jumps to the end of the set, and the record that took its place is skipped for good;
- search refuses offsets of 10,000 and more, and an anchored query never goes near them.
Records at the anchor's timestamp that were already read are listed in the cursor and skipped.
When more records than a page share one timestamp (bulk imports do that), the anchor alone cannot
move: those are read by `hs_object_id`, anchored the same way, before moving past the timestamp.
The cursor after each page is {"since", "last", "seen", "tie"} and commits with the page, so a
kill resumes at the next page. Each run starts a few minutes before the stored cursor, because
HubSpot's search index shows a change a little after it is made; records read twice are upserts
that change nothing and count for nothing.

Owners have no search: each run lists them all (a few pages) and keeps {owner id: e-mail} in the
owners stream's cursor, where companies read it, whichever stream a company arrives with.
Contacts and deals name their company by id; a company not seen yet (created after the companies
stream ran) is fetched by id with the page, so its contacts and deals are not left unmatched.
"""

import calendar
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from django.db import connection as db
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Membership, Stage
from csm.tenancy import tenant
from integrations.http import ProviderClient, ProviderError, RequestBudget
from integrations.matching import (
    Candidate,
    forget_unmatched,
    normalize_domain,
    record_unmatched,
    remember_sources,
    resolve_accounts,
)
from integrations.models import SourceRecord
from integrations.sync import Applied, Connector, ConnectorField, Page, Stream, register

PROVIDER = "hubspot"
DEFAULT_API_BASE = "https://api.hubapi.com"
PAGE_SIZE = 200  # the search API's largest page
OWNERS_PAGE_SIZE = 100  # the owners API's largest page
BATCH_SIZE = 100  # batch read of objects by id
SEARCH_CEILING = 10_000  # search answers 400 past this offset (we never page by offset)
INDEX_LAG_MS = 5 * 60 * 1000  # "it may take a few moments for updated objects to appear in search"
SEARCH_INTERVAL = 0.2  # the search API allows 5 requests per second per account

DEFAULT_STAGE_MAP = "customer=steady, evangelist=steady, opportunity=onboarding, salesqualifiedlead=onboarding"
DEFAULT_ARR_PROPERTY = "amount"
DEFAULT_RENEWAL_PROPERTY = "closedate"
DEFAULT_RENEWAL_TERM_MONTHS = 12
DEFAULT_DEAL_STAGES = "closedwon"
KEEP = "keep"

COMPANY_PROPERTIES = ["name", "domain", "website", "hubspot_owner_id", "lifecyclestage", "createdate"]
CONTACT_PROPERTIES = ["email", "firstname", "lastname", "phone", "jobtitle", "associatedcompanyid"]
DEAL_PROPERTIES = ["dealname", "dealstage", "closedate", "deal_currency_code"]

HUBSPOT_401 = (
    "HubSpot refused the token (401): reconnect with a private app token that has the crm.objects.companies.read scope"
)
SCOPES_NEEDED = (
    "crm.objects.owners.read, crm.objects.companies.read, crm.objects.contacts.read and crm.objects.deals.read"
)


# --- pure rules ---------------------------------------------------------------------------------


def parse_stage_map(text: str | None) -> dict[str, str]:
    """`customer=steady, lead=keep` → {"customer": "steady", "lead": "keep"}; bad entries raise ValueError."""
    mapping = {}
    for entry in re.split(r"[,;\n]", text or ""):
        if not entry.strip():
            continue
        lifecycle, sep, stage = entry.partition("=")
        lifecycle, stage = lifecycle.strip().lower(), stage.strip().lower()
        if not sep or not lifecycle or stage not in {*Stage.values, KEEP}:
            raise ValueError(
                f"the lifecycle stage mapping entry {entry.strip()!r} should read lifecyclestage=stage, with a stage "
                f"among {', '.join(Stage.values)} or {KEEP}"
            )
        mapping[lifecycle] = stage
    return mapping


def parse_names(text: str | None) -> list[str]:
    return [name.strip() for name in re.split(r"[,;\s]+", text or "") if name.strip()]


def timestamp_ms(value: str | None) -> int | None:
    """HubSpot datetimes come as ISO 8601 (`2024-05-01T12:34:56.789Z`) or epoch milliseconds."""
    if not value:
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def local_date(value: str | None, tz) -> date | None:
    """A date (`2026-03-31`, or midnight UTC) as is; another datetime on the organization's calendar."""
    if not value:
        return None
    text = str(value).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return date.fromisoformat(text)
    ms = timestamp_ms(text)
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    # HubSpot keeps a picked date as midnight UTC: that is a date, on no time zone's clock.
    return moment.date() if moment.time() == datetime.min.time() else moment.astimezone(tz).date()


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day (Jan 31 + 1 month → Feb 28/29)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def decimal_or_none(value: str | None) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        return None
    return amount.quantize(Decimal("0.01")) if amount.is_finite() else None


def start_state(cursor: dict | None) -> dict:
    """Where a run starts reading: the stored cursor, moved back by the search index's lag."""
    if not cursor:
        return {"since": 0, "last": None, "seen": [], "tie": None}
    if cursor.get("tie") is not None:
        return dict(cursor)
    return {**cursor, "since": max(0, cursor["since"] - INDEX_LAG_MS)}


def advance(state: dict, stamps: list[tuple[str, int]], *, limit: int) -> tuple[dict, set[str], bool]:
    """The cursor after one search page, the ids of the page not read before, and whether the stream is done.

    `stamps` are the page's (id, last-modified ms) in the order served. Normal mode reads
    `modified >= since` sorted by modified; tie mode reads `modified == since and id > tie` sorted
    by id, and is entered when a full page holds nothing but the anchor's timestamp (the anchor
    cannot move past records it has not read).
    """
    last, seen = state.get("last"), set(state.get("seen") or [])
    fresh = {record_id for record_id, stamp in stamps if not (stamp == last and record_id in seen)}
    full = len(stamps) >= limit
    if state.get("tie") is not None:
        if full:
            return {**state, "tie": max(int(record_id) for record_id, _ in stamps)}, fresh, False
        # Every record at this timestamp is read: move past it.
        return {"since": state["since"] + 1, "last": state["since"], "seen": [], "tie": None}, fresh, False
    if not stamps:
        return state, fresh, True
    top = max(stamp for _, stamp in stamps)
    if full and top == state["since"]:
        # Those of this page are read: the walk by id skips them.
        at_since = {record_id for record_id, _ in stamps} | (seen if last == top else set())
        return {"since": top, "last": top, "seen": sorted(at_since), "tie": 0}, fresh, False
    at_top = {record_id for record_id, stamp in stamps if stamp == top}
    if top == last:
        at_top |= seen
    return {"since": top, "last": top, "seen": sorted(at_top), "tie": None}, fresh, not full


def search_body(state: dict, *, modified: str, properties: list[str], extra: list[dict]) -> dict:
    if state.get("tie") is not None:
        filters = [
            {"propertyName": modified, "operator": "EQ", "value": str(state["since"])},
            {"propertyName": "hs_object_id", "operator": "GT", "value": str(state["tie"])},
        ]
        sort = "hs_object_id"
    else:
        filters = [{"propertyName": modified, "operator": "GTE", "value": str(state["since"])}]
        sort = modified
    return {
        "filterGroups": [{"filters": filters + extra}],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": properties,
        "limit": PAGE_SIZE,
    }


def explain(status: int, body: str) -> str:
    """HubSpot's error body ({status, message, correlationId, category, errors}) in words an admin can act on."""
    try:
        error = json.loads(body) or {}
        if not isinstance(error, dict):
            error = {}
    except ValueError:
        error = {}
    message = str(error.get("message") or "").strip()
    category = str(error.get("category") or "")
    if status == 401:
        return HUBSPOT_401
    if status == 403:
        scopes: set[str] = set()
        for detail in error.get("errors") or []:
            for key, values in ((detail or {}).get("context") or {}).items():
                if "scope" in key.lower() and isinstance(values, list):
                    scopes.update(str(v) for v in values)
        scopes = scopes or set(re.findall(r"\b(crm\.[a-z_.]+\.(?:read|write))\b", message))
        if scopes:
            names = ", ".join(sorted(scopes))
            return (
                f"HubSpot refused the request (403): the private app lacks the scope {names}; add it in HubSpot "
                "(Settings → Integrations → Private Apps → your app → Scopes), then sync again"
            )
        return (
            f"HubSpot refused the request (403{', ' + category if category else ''}): {message or 'no details'}; "
            f"the private app needs the scopes {SCOPES_NEEDED}"
        )
    if status == 404:
        return f"HubSpot could not find what was asked (404): {message or 'no details'}"
    return f"HubSpot rejected the request ({status}{', ' + category if category else ''}): {message or 'no details'}"


# --- reading ------------------------------------------------------------------------------------


def _object_list(client: ProviderClient, method: str, path: str, **kwargs) -> dict:
    """A HubSpot answer holding `results` (search, batch read, owners); anything else is refused."""
    body = client.json(method, path, **kwargs)
    if not (isinstance(body, dict) and isinstance(body.get("results"), list)):
        raise ProviderError(
            f"HubSpot answered {path} with something that is not a list of results; nothing from it was saved, "
            "and the next run reads it again"
        )
    return body


def company_record(company: dict) -> dict:
    props = company.get("properties") or {}
    return {
        "object": "company",
        "id": str(company["id"]),
        "name": (props.get("name") or "").strip(),
        "domain": normalize_domain(props.get("domain") or props.get("website")),
        "owner": str(props.get("hubspot_owner_id") or "").strip(),
        "lifecycle": (props.get("lifecyclestage") or "").strip().lower(),
        "created": timestamp_ms(props.get("createdate") or company.get("createdAt")),
    }


def contact_record(contact: dict) -> dict:
    props = contact.get("properties") or {}
    email = (props.get("email") or "").strip().lower()
    name = " ".join(part.strip() for part in (props.get("firstname"), props.get("lastname")) if part and part.strip())
    return {
        "object": "contact",
        "id": str(contact["id"]),
        "email": email,
        "name": name,
        "phone": (props.get("phone") or "").strip(),
        "title": (props.get("jobtitle") or "").strip(),
        "company": str(props.get("associatedcompanyid") or "").strip() or None,
    }


class _Reader:
    """Shared by the streams of one run: the client's search pacing and fetching companies by id."""

    def __init__(self, connector: "HubSpotConnector"):
        self.connector = connector
        self.last_search = 0.0

    def search(self, client: ProviderClient, object_type: str, body: dict) -> dict:
        interval = self.connector.search_interval
        wait = self.last_search + interval - time.monotonic()
        if wait > 0:
            self.connector.sleep(wait)
        self.last_search = time.monotonic()
        return _object_list(client, "POST", f"/crm/v3/objects/{object_type}/search", json=body)

    def companies_missing(self, client: ProviderClient, company_ids: set[str]) -> list[dict]:
        """Companies named by contacts or deals that no earlier page brought (one query, then batch reads)."""
        if not company_ids:
            return []
        org_id = self.connector.connection.org_id
        with tenant(org_id):
            known = set(
                SourceRecord.objects.filter(
                    org_id=org_id, provider=PROVIDER, object_type="company", external_id__in=company_ids
                ).values_list("external_id", flat=True)
            )
        missing = sorted(company_ids - known)
        records = []
        for start in range(0, len(missing), BATCH_SIZE):
            body = _object_list(
                client,
                "POST",
                "/crm/v3/objects/companies/batch/read",
                json={
                    "properties": COMPANY_PROPERTIES,
                    "inputs": [{"id": company_id} for company_id in missing[start : start + BATCH_SIZE]],
                },
            )
            # Ids HubSpot no longer has come back under `errors`: their records stay unmatched.
            records += [company_record(company) for company in body["results"]]
        return records

    def contacts_of(self, client: ProviderClient, company_ids: set[str]) -> list[dict]:
        """Every contact of these companies (search on the company id, a hundred companies a query)."""
        ids = sorted(company_ids)
        records = []
        for start in range(0, len(ids), BATCH_SIZE):
            after = None
            while True:
                body = {
                    "filterGroups": [
                        {
                            "filters": [
                                {
                                    "propertyName": "associatedcompanyid",
                                    "operator": "IN",
                                    "values": ids[start : start + BATCH_SIZE],
                                }
                            ]
                        }
                    ],
                    "properties": CONTACT_PROPERTIES,
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "limit": PAGE_SIZE,
                }
                if after:
                    body["after"] = after
                answer = self.search(client, "contacts", body)
                records += [contact_record(result) for result in answer["results"]]
                after = ((answer.get("paging") or {}).get("next") or {}).get("after")
                if not after:
                    break
        return records


class OwnersStream(Stream):
    name = "owners"

    def __init__(self, connector: "HubSpotConnector"):
        self.connector = connector

    def read(self, client: ProviderClient, cursor: Any) -> Iterator[Page]:
        # Owners are few and have no modified filter: every run lists them again, resuming a
        # listing a kill interrupted.
        state = cursor if cursor and cursor.get("after") else {"after": None, "owners": {}}
        while True:
            params: dict = {"limit": OWNERS_PAGE_SIZE}
            if state["after"]:
                params["after"] = state["after"]
            body = _object_list(client, "GET", "/crm/v3/owners", params=params)
            owners = dict(state["owners"])
            for owner in body["results"]:
                if owner.get("email"):
                    owners[str(owner["id"])] = owner["email"].strip().lower()
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            state = {"after": after, "owners": owners}
            yield Page([], state, done=not after)
            if not after:
                return

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        return Applied()


class SearchStream(Stream):
    """One CRM object type read through search, page by page from its cursor."""

    object_type: str  # companies | contacts | deals
    modified = "hs_lastmodifieddate"

    def __init__(self, connector: "HubSpotConnector", reader: _Reader):
        self.connector = connector
        self.reader = reader

    def properties(self) -> list[str]:
        raise NotImplementedError

    def extra_filters(self) -> list[dict]:
        return []

    def records(self, client: ProviderClient, results: list[dict]) -> list[dict]:
        raise NotImplementedError

    def prepare(self, client: ProviderClient) -> None:
        """Checks before the first page (the deals stream checks its configured properties)."""

    def read(self, client: ProviderClient, cursor: Any) -> Iterator[Page]:
        self.prepare(client)
        state = start_state(cursor)
        properties = [*self.properties(), self.modified]
        while True:
            body = self.reader.search(
                client,
                self.object_type,
                search_body(state, modified=self.modified, properties=properties, extra=self.extra_filters()),
            )
            results = body["results"]
            stamps = []
            for result in results:
                stamp = timestamp_ms((result.get("properties") or {}).get(self.modified) or result.get("updatedAt"))
                if stamp is None or "id" not in result:
                    raise ProviderError(
                        f"HubSpot sent a {self.object_type} record without an id or {self.modified}; nothing from "
                        "that page was saved, and the next run reads it again"
                    )
                stamps.append((str(result["id"]), stamp))
            state, fresh, done = advance(state, stamps, limit=PAGE_SIZE)
            unseen = [result for result in results if str(result["id"]) in fresh]
            # Bulk edits repeat a record inside one page only if HubSpot's answer does: one row per id.
            unique = list({str(result["id"]): result for result in unseen}.values())
            yield Page(self.records(client, unique), state, done=done)
            if done:
                return

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        companies = [r for r in records if r["object"] == "company"]
        contacts = [r for r in records if r["object"] == "contact"]
        others = [r for r in records if r["object"] not in ("company", "contact")]
        applied = Applied()
        # Companies first: contacts and deals of the same page point at them. Contacts go the contacts'
        # way whichever stream brought them (a won deal's company brings its people along).
        apply_companies = partial(self.connector.apply_companies, create_all=self.creates_companies)
        steps = ((apply_companies, companies), (self.connector.contacts.apply_own, contacts), (self.apply_own, others))
        for step, batch in steps:
            if batch:
                done = step(org=org, connection=connection, records=batch)
                applied.created += done.created
                applied.updated += done.updated
                applied.unmatched += done.unmatched
        return applied

    def apply_own(self, *, org, connection, records: list[dict]) -> Applied:
        raise NotImplementedError

    # Whether a company this stream brings becomes an account whatever its lifecycle stage.
    creates_companies = False


class CompaniesStream(SearchStream):
    name = "companies"
    object_type = "companies"

    def properties(self) -> list[str]:
        return COMPANY_PROPERTIES

    def records(self, client, results):
        return [company_record(result) for result in results]

    def apply_own(self, *, org, connection, records):
        raise AssertionError("company records are applied by the connector")


class ContactsStream(SearchStream):
    name = "contacts"
    object_type = "contacts"
    modified = "lastmodifieddate"  # contacts keep the older name of the property

    def properties(self) -> list[str]:
        return CONTACT_PROPERTIES

    def records(self, client, results):
        contacts = [contact_record(result) for result in results]
        companies = self.reader.companies_missing(client, {c["company"] for c in contacts if c["company"]})
        return companies + contacts

    def apply_own(self, *, org, connection, records):
        named = [r for r in records if r["company"]]
        accounts = resolve_accounts(
            org=org,
            provider=PROVIDER,
            object_type="company",
            candidates=[Candidate(company) for company in sorted({r["company"] for r in named})],
        )
        matched = [r for r in named if r["company"] in accounts]
        # A prospect's people are not listed: its company is not an account on purpose.
        unmatched = [
            Candidate(external_id=r["id"], domain=r["email"], name=r["name"] or r["email"] or r["id"])
            for r in records
            if r["company"] not in accounts and r["company"] not in self.connector.prospects
        ]
        record_unmatched(org=org, connection=connection, stream="contacts", candidates=unmatched)
        forget_unmatched(org=org, connection=connection, stream="contacts", external_ids=[r["id"] for r in matched])
        if not matched:
            return Applied(unmatched=len(unmatched))
        with db.cursor() as cursor:
            cursor.execute(
                """
                WITH v AS (
                    SELECT * FROM unnest(%(external_ids)s::text[], %(accounts)s::bigint[], %(names)s::text[],
                                         %(emails)s::text[], %(phones)s::text[], %(titles)s::text[])
                        AS v(external_id, account_id, name, email, phone, title)
                ), upserted AS (
                    INSERT INTO accounts_contact AS c (org_id, external_id, account_id, name, email, phone, title,
                                                       is_champion)
                    SELECT %(org)s, v.external_id, v.account_id, v.name, v.email, v.phone, v.title, false FROM v
                    -- Rows equal to the stored ones never reach ON CONFLICT, which would lock them.
                    WHERE NOT EXISTS (
                        SELECT 1 FROM accounts_contact t
                        WHERE t.org_id = %(org)s AND t.external_id = v.external_id
                          AND (t.account_id, t.name, t.email, t.phone, t.title)
                              IS NOT DISTINCT FROM (v.account_id, v.name, v.email, v.phone, v.title)
                    )
                    ON CONFLICT (org_id, external_id) DO UPDATE
                    SET account_id = EXCLUDED.account_id, name = EXCLUDED.name, email = EXCLUDED.email,
                        phone = EXCLUDED.phone, title = EXCLUDED.title
                    WHERE (c.account_id, c.name, c.email, c.phone, c.title)
                          IS DISTINCT FROM (EXCLUDED.account_id, EXCLUDED.name, EXCLUDED.email, EXCLUDED.phone,
                                            EXCLUDED.title)
                    RETURNING c.xmax = 0 AS created
                )
                SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
                """,
                {
                    "org": org.pk,
                    "external_ids": [f"hubspot-{r['id']}" for r in matched],
                    "accounts": [accounts[r["company"]] for r in matched],
                    "names": [r["name"][:200] for r in matched],
                    "emails": [r["email"][:254] for r in matched],
                    "phones": [r["phone"][:50] for r in matched],
                    "titles": [r["title"][:200] for r in matched],
                },
            )
            created, updated = cursor.fetchone()
        return Applied(created=created, updated=updated, unmatched=len(unmatched))


class DealsStream(SearchStream):
    name = "deals"
    object_type = "deals"

    def __init__(self, connector, reader):
        super().__init__(connector, reader)
        settings = connector.connection.settings or {}
        self.arr_property = (settings.get("arr_property") or "").strip() or DEFAULT_ARR_PROPERTY
        self.renewal_property = (settings.get("renewal_property") or "").strip() or DEFAULT_RENEWAL_PROPERTY
        term = str(settings.get("renewal_term_months") or "").strip()
        if term and not term.isdigit():
            raise ProviderError(
                f"The HubSpot setting 'Renewal term (months)' is {term!r}: write a whole number of months "
                "(0 when the renewal property already holds the renewal date)"
            )
        self.renewal_term = int(term) if term else DEFAULT_RENEWAL_TERM_MONTHS
        self.stages = parse_names(settings.get("deal_stages")) or parse_names(DEFAULT_DEAL_STAGES)

    creates_companies = True  # only won deals are read: their companies are customers

    def properties(self) -> list[str]:
        return sorted({*DEAL_PROPERTIES, self.arr_property, self.renewal_property})

    def extra_filters(self) -> list[dict]:
        return [{"propertyName": "dealstage", "operator": "IN", "values": self.stages}]

    def prepare(self, client):
        self.connector.check_deal_properties(client, self.arr_property, self.renewal_property)

    def records(self, client, results):
        primary = self._primary_companies(client, [str(result["id"]) for result in results])
        deals = []
        for result in results:
            props = result.get("properties") or {}
            deals.append(
                {
                    "object": "deal",
                    "id": str(result["id"]),
                    "name": (props.get("dealname") or "").strip(),
                    "company": primary.get(str(result["id"])),
                    "arr": props.get(self.arr_property),
                    "renewal": props.get(self.renewal_property),
                    "closed": props.get("closedate"),
                    "currency": (props.get("deal_currency_code") or "").strip().upper()[:3] or None,
                    "modified": timestamp_ms(props.get(self.modified)) or 0,
                }
            )
        companies = self.reader.companies_missing(client, {d["company"] for d in deals if d["company"]})
        # A company brought by a won deal becomes an account now; its people, skipped while it was a
        # prospect and not modified since, come with it.
        people = self.reader.contacts_of(client, {c["id"] for c in companies})
        return companies + people + deals

    def _primary_companies(self, client, deal_ids: list[str]) -> dict[str, str]:
        """{deal id: company id} from the v4 associations (search does not return associations)."""
        if not deal_ids:
            return {}
        body = _object_list(
            client,
            "POST",
            "/crm/v4/associations/deals/companies/batch/read",
            json={"inputs": [{"id": deal_id} for deal_id in deal_ids]},
        )
        companies = {}
        for result in body["results"]:
            targets = result.get("to") or []
            # The primary company (HubSpot's association type 5) when there are several.
            primary = [
                t
                for t in targets
                if any(a.get("typeId") == 5 or a.get("label") == "Primary" for a in t.get("associationTypes") or [])
            ]
            chosen = (primary or targets)[:1]
            if chosen:
                companies[str((result.get("from") or {}).get("id"))] = str(chosen[0]["toObjectId"])
        return companies

    def apply_own(self, *, org, connection, records):
        """ARR and renewal date from each account's latest won deal; a change of ARR goes into its history."""
        tz = org.tz
        today = timezone.now().astimezone(tz).date()
        named = [r for r in records if r["company"]]
        accounts = resolve_accounts(
            org=org,
            provider=PROVIDER,
            object_type="company",
            candidates=[Candidate(company) for company in sorted({r["company"] for r in named})],
        )
        matched = [r for r in named if r["company"] in accounts]
        unmatched = [
            Candidate(external_id=r["id"], name=r["name"] or f"Deal {r['id']}")
            for r in records
            if r["company"] not in accounts
        ]
        record_unmatched(org=org, connection=connection, stream="deals", candidates=unmatched)
        forget_unmatched(org=org, connection=connection, stream="deals", external_ids=[r["id"] for r in matched])
        remember_sources(
            org=org, provider=PROVIDER, object_type="deal", pairs={r["id"]: accounts[r["company"]] for r in matched}
        )
        best: dict[int, tuple] = {}
        for r in matched:
            renewal = local_date(r["renewal"], tz)
            if renewal is not None and self.renewal_term:
                renewal = add_months(renewal, self.renewal_term)
            closed = local_date(r["closed"], tz)
            rank = (renewal or date.min, closed or date.min, r["modified"])
            account_id = accounts[r["company"]]
            if account_id not in best or rank > best[account_id][0]:
                effective = min(closed or today, today)
                best[account_id] = (rank, decimal_or_none(r["arr"]), renewal, r["currency"], effective)
        if not best:
            return Applied(unmatched=len(unmatched))
        ids = sorted(best)
        with db.cursor() as cursor:
            cursor.execute(
                """
                WITH v AS (
                    SELECT * FROM unnest(%(ids)s::bigint[], %(arrs)s::numeric[], %(renewals)s::date[],
                                         %(currencies)s::text[], %(effective)s::date[])
                        AS v(id, arr, renewal, currency, effective)
                ), eligible AS (
                    -- The latest renewal wins: a deal renewing before the account's current renewal
                    -- date is an older contract, edited later, and must not roll the account back.
                    SELECT v.*, a.arr AS previous_arr FROM v JOIN accounts_account a ON a.id = v.id
                    WHERE a.org_id = %(org)s
                      AND ((v.renewal IS NOT NULL AND (a.renewal_date IS NULL OR v.renewal >= a.renewal_date))
                           OR (v.renewal IS NULL AND a.renewal_date IS NULL))
                ), changed AS (
                    UPDATE accounts_account a
                    SET arr = COALESCE(e.arr, a.arr), renewal_date = COALESCE(e.renewal, a.renewal_date),
                        currency = COALESCE(e.currency, a.currency), updated_at = now()
                    FROM eligible e
                    WHERE a.org_id = %(org)s AND a.id = e.id
                      AND (a.arr, a.renewal_date, a.currency) IS DISTINCT FROM
                          (COALESCE(e.arr, a.arr), COALESCE(e.renewal, a.renewal_date),
                           COALESCE(e.currency, a.currency))
                    RETURNING a.id, a.arr
                ), history AS (
                    -- ARR took effect when the deal closed (never in the future).
                    INSERT INTO accounts_arrchange (org_id, account_id, effective_date, arr)
                    SELECT %(org)s, c.id, e.effective, c.arr FROM changed c JOIN eligible e ON e.id = c.id
                    WHERE e.previous_arr IS DISTINCT FROM c.arr
                    ON CONFLICT (org_id, account_id, effective_date) DO UPDATE SET arr = EXCLUDED.arr
                )
                SELECT count(*) FROM changed
                """,
                {
                    "org": org.pk,
                    "ids": ids,
                    "arrs": [best[i][1] for i in ids],
                    "renewals": [best[i][2] for i in ids],
                    "currencies": [best[i][3] for i in ids],
                    "effective": [best[i][4] for i in ids],
                },
            )
            updated = cursor.fetchone()[0]
        return Applied(updated=updated, unmatched=len(unmatched))


# --- the connector ------------------------------------------------------------------------------


@register
class HubSpotConnector(Connector):
    provider = PROVIDER
    purpose = "CRM: companies become accounts with their owner as CSM; contacts; won deals set ARR and renewal."
    credential_fields = [
        ConnectorField(
            "access_token",
            "Private app access token",
            help="HubSpot → Settings → Integrations → Private Apps → Create a private app, with the read scopes "
            f"{SCOPES_NEEDED}; paste its access token (pat-…).",
        )
    ]
    setting_fields = [
        ConnectorField(
            "lifecycle_stages",
            "Lifecycle stage → account stage",
            secret=False,
            required=False,
            help=f"Comma-separated lifecyclestage=stage pairs; a stage among {', '.join(Stage.values)}, or keep. "
            f"Stages not listed leave the account's stage alone (new accounts start in onboarding), and a company "
            f"in one becomes an account only once it has a won deal. "
            f"Empty: {DEFAULT_STAGE_MAP}.",
        ),
        ConnectorField(
            "arr_property",
            "Deal property holding ARR",
            secret=False,
            required=False,
            help=f"Internal name of a number property of deals (empty: {DEFAULT_ARR_PROPERTY}).",
        ),
        ConnectorField(
            "renewal_property",
            "Deal property the renewal date comes from",
            secret=False,
            required=False,
            help=f"Internal name of a date property of deals (empty: {DEFAULT_RENEWAL_PROPERTY}).",
        ),
        ConnectorField(
            "renewal_term_months",
            "Renewal term (months)",
            secret=False,
            required=False,
            help=f"Added to the renewal property: the renewal falls this many months after it (empty: "
            f"{DEFAULT_RENEWAL_TERM_MONTHS}; 0 when the property already holds the renewal date).",
        ),
        ConnectorField(
            "deal_stages",
            "Deal stages that set ARR",
            secret=False,
            required=False,
            help="Comma-separated internal ids of the pipeline stages whose deals count "
            f"(empty: {DEFAULT_DEAL_STAGES}). The account's latest such deal sets its ARR and renewal date.",
        ),
        ConnectorField(
            "api_base",
            "API base URL (leave as is)",
            secret=False,
            required=False,
            help=f"Empty for {DEFAULT_API_BASE}.",
        ),
    ]
    backoff_base = 0.5
    search_interval = SEARCH_INTERVAL
    sleep = staticmethod(time.sleep)

    def client(self, budget: RequestBudget) -> ProviderClient:
        base = (self.connection.settings or {}).get("api_base") or DEFAULT_API_BASE
        return ProviderClient(
            provider="HubSpot",
            base_url=base.rstrip("/"),
            headers={"Authorization": f"Bearer {self.secrets.get('access_token', '')}"},
            budget=budget,
            explain=explain,
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        )

    def streams(self) -> list[Stream]:
        try:
            self.stage_map = parse_stage_map(
                (self.connection.settings or {}).get("lifecycle_stages") or DEFAULT_STAGE_MAP
            )
        except ValueError as error:
            raise ProviderError(f"The HubSpot setting 'Lifecycle stage → account stage' is wrong: {error}") from error
        self.prospects: set[str] = set()  # companies of this run that are not customers (see the module doc)
        reader = _Reader(self)
        self.contacts = ContactsStream(self, reader)
        return [OwnersStream(self), CompaniesStream(self, reader), self.contacts, DealsStream(self, reader)]

    def test(self, client: ProviderClient) -> str:
        """Five cheap calls: one per object the sync reads, and the deal properties the settings name."""
        deals = DealsStream(self, _Reader(self))
        counts = {}
        for object_type, extra in (("companies", []), ("contacts", []), ("deals", deals.extra_filters())):
            body = _object_list(
                client,
                "POST",
                f"/crm/v3/objects/{object_type}/search",
                json={"filterGroups": [{"filters": extra}] if extra else [], "limit": 1},
            )
            counts[object_type] = int(body.get("total") or 0)
        _object_list(client, "GET", "/crm/v3/owners", params={"limit": 1})
        self.check_deal_properties(client, deals.arr_property, deals.renewal_property)
        term = f" + {deals.renewal_term} months" if deals.renewal_term else ""
        return (
            f"Connected to HubSpot: the token reads owners, {counts['companies']:,} companies, "
            f"{counts['contacts']:,} contacts and {counts['deals']:,} deals in {', '.join(deals.stages)} "
            f"(ARR from {deals.arr_property}, renewal from {deals.renewal_property}{term})."
        )

    def check_deal_properties(self, client: ProviderClient, arr_property: str, renewal_property: str) -> None:
        """A misspelt property would read as empty on every deal: say so instead."""
        wanted = {arr_property: ("number", "ARR"), renewal_property: ("date", "renewal")}
        body = _object_list(
            client,
            "POST",
            "/crm/v3/properties/deals/batch/read",
            json={"archived": False, "inputs": [{"name": name} for name in wanted]},
        )
        found = {result.get("name"): result.get("type") for result in body["results"]}
        for name, (kind, role) in wanted.items():
            if name not in found:
                raise ProviderError(
                    f"HubSpot has no deal property named {name!r} (the {role} property setting): use the internal "
                    "name shown in HubSpot under Settings → Properties → Deal properties"
                )
            if (kind == "number" and found[name] != "number") or (
                kind == "date" and found[name] not in {"date", "datetime"}
            ):
                raise ProviderError(
                    f"The HubSpot deal property {name!r} (the {role} property setting) holds {found[name]} values, "
                    f"not {'numbers' if kind == 'number' else 'dates'}: choose another property"
                )

    # companies arrive with their own stream and with the contacts and deals that name them

    def apply_companies(self, *, org, connection, records: list[dict], create_all: bool = False) -> Applied:
        """Match each company to an account, create the customers that match none, and write HubSpot's values."""
        latest = {r["id"]: r for r in records}
        companies = list(latest.values())
        matched = resolve_accounts(
            org=org,
            provider=PROVIDER,
            object_type="company",
            candidates=[Candidate(external_id=c["id"], domain=c["domain"], name=c["name"]) for c in companies],
        )
        owners = ((connection.cursors or {}).get("owners") or {}).get("owners") or {}
        owner_emails = {owners[c["owner"]] for c in companies if c["owner"] in owners}
        members = dict(
            Membership.objects.filter(org=org)
            .annotate(address=Lower("user__email"))
            .filter(address__in=owner_emails)
            .values_list("address", "user_id")
        )

        def csm(company: dict) -> int | None:
            return members.get(owners.get(company["owner"], ""))

        def stage(company: dict) -> str | None:
            mapped = self.stage_map.get(company["lifecycle"])
            return None if mapped in (None, KEEP) else mapped

        created = 0
        new = [c for c in companies if c["id"] not in matched]
        if not create_all:
            self.prospects.update(c["id"] for c in new if c["lifecycle"] not in self.stage_map)
            new = [c for c in new if c["lifecycle"] in self.stage_map]
        if new:
            with db.cursor() as cursor:
                cursor.execute(
                    """
                    WITH v AS (
                        SELECT * FROM unnest(%(external_ids)s::text[], %(names)s::text[], %(domains)s::text[],
                                             %(stages)s::text[], %(csms)s::bigint[], %(created)s::timestamptz[])
                            AS v(external_id, name, domain, stage, csm_id, created_at)
                    )
                    INSERT INTO accounts_account AS a (org_id, external_id, name, domain, tier, arr, currency, plan,
                                                       stage, csm_id, created_at, updated_at)
                    SELECT %(org)s, v.external_id, v.name, v.domain, '', 0, 'USD', '', v.stage, v.csm_id,
                           v.created_at, now()
                    FROM v
                    -- An account made for this company whose link was lost: found again, updated below.
                    ON CONFLICT (org_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
                    RETURNING a.external_id, a.id, a.xmax = 0
                    """,
                    {
                        "org": org.pk,
                        "external_ids": [f"hubspot-{c['id']}" for c in new],
                        "names": [(c["name"] or c["domain"] or f"HubSpot company {c['id']}")[:200] for c in new],
                        "domains": [c["domain"][:200] for c in new],
                        "stages": [stage(c) or Stage.ONBOARDING for c in new],
                        "csms": [csm(c) for c in new],
                        "created": [
                            datetime.fromtimestamp(c["created"] / 1000, UTC) if c["created"] else timezone.now()
                            for c in new
                        ],
                    },
                )
                inserted = cursor.fetchall()
            pairs = {external_id.removeprefix("hubspot-"): pk for external_id, pk, _ in inserted}
            remember_sources(org=org, provider=PROVIDER, object_type="company", pairs=pairs)
            created = sum(1 for *_, is_new in inserted if is_new)
            fresh = {external_id.removeprefix("hubspot-") for external_id, _, is_new in inserted if is_new}
            matched.update({company_id: pk for company_id, pk in pairs.items() if company_id not in fresh})
        # Several companies can land on one account (duplicates sharing a domain): the one modified
        # last is written, as one UPDATE cannot set a row twice.
        by_account = {matched[c["id"]]: c for c in companies if c["id"] in matched}
        if not by_account:
            return Applied(created=created)
        ids = sorted(by_account)
        today = timezone.now().astimezone(org.tz).date()
        with db.cursor() as cursor:
            cursor.execute(
                """
                WITH v AS (
                    SELECT * FROM unnest(%(ids)s::bigint[], %(names)s::text[], %(domains)s::text[],
                                         %(stages)s::text[], %(csms)s::bigint[])
                        AS v(id, name, domain, stage, csm_id)
                )
                UPDATE accounts_account a
                SET name = COALESCE(v.name, a.name), domain = COALESCE(v.domain, a.domain),
                    stage = COALESCE(v.stage, a.stage), csm_id = COALESCE(v.csm_id, a.csm_id),
                    -- As the CSV import does: the day an account becomes churned, kept while it stays so.
                    churned_on = CASE WHEN COALESCE(v.stage, a.stage) = 'churned'
                                      THEN COALESCE(a.churned_on, %(today)s) END,
                    updated_at = now()
                FROM v
                WHERE a.org_id = %(org)s AND a.id = v.id
                  AND (a.name, a.domain, a.stage, a.csm_id) IS DISTINCT FROM
                      (COALESCE(v.name, a.name), COALESCE(v.domain, a.domain), COALESCE(v.stage, a.stage),
                       COALESCE(v.csm_id, a.csm_id))
                """,
                {
                    "org": org.pk,
                    "today": today,
                    "ids": ids,
                    "names": [by_account[i]["name"][:200] or None for i in ids],
                    "domains": [by_account[i]["domain"][:200] or None for i in ids],
                    "stages": [stage(by_account[i]) for i in ids],
                    "csms": [csm(by_account[i]) for i in ids],
                },
            )
            updated = cursor.rowcount
        return Applied(created=created, updated=updated)
