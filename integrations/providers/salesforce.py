"""Salesforce (OAuth 2.0): accounts, contacts, opportunities → ARR and renewal, tasks and events → activities.

Each object is read with incremental SOQL on `SystemModstamp` (the field Salesforce changes on every
write, system ones included), oldest first, following `nextRecordsUrl` page by page. The cursor per
stream is {"since": newest SystemModstamp saved, "next": the nextRecordsUrl still to read or null}.

The first pull of a large object (`SELECT COUNT()` at or above BULK_THRESHOLD) goes through a Bulk API
2.0 query job instead: one job exports the whole object as CSV, read page by page with the results'
`Sforce-Locator`. The cursor meanwhile also holds {"bulk": {"job": id, "locator": next results page}},
so a stopped run resumes at the saved page; a job whose results are gone (Salesforce deletes finished
jobs after 7 days) is started again, which is harmless because records are upserted. After the last
page the cursor is the plain {"since", "next"} one and later runs are incremental SOQL. A job that
Salesforce fails or aborts fails the run with its reason and leaves {"paged": true}: the next run
pages through SOQL rather than meet the same failure every night.

Tokens: the access token expires; on 401 INVALID_SESSION_ID the client gets a new one ONCE (refresh
token from the web-server flow, or a JWT bearer assertion for server-to-server) and stores it with
`connection_save`, which merges it into the saved secrets.

Users become people by e-mail through the relationship field `Owner.Email`, read with the record, so
no table of Salesforce users is needed: an account's owner is its CSM, and the owner of the won
opportunity that sets its ARR and renewal is its Account Manager (when they are members).
"""

import base64
import csv
import io
import json
import time
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Account, Activity, ActivityKind, Contact, Membership, Side
from csm.tenancy import tenant
from integrations.http import ProviderClient, ProviderError, RateLimited, RequestBudget
from integrations.matching import (
    Candidate,
    forget_unmatched,
    normalize_domain,
    record_unmatched,
    remember_sources,
    resolve_accounts,
)
from integrations.sync import Applied, Connector, ConnectorField, Page, Stream, register

PROVIDER = "salesforce"
API_VERSION = "v60.0"
DEFAULT_LOGIN_URL = "https://login.salesforce.com"
DEFAULT_ARR_FIELD = "Amount"
DEFAULT_RENEWAL_FIELD = "CloseDate"
DEFAULT_WON_STAGE = "Closed Won"
JWT_LIFETIME = 180  # seconds; Salesforce accepts an assertion whose exp is at most 3 minutes ahead
QUERY_PATH = f"/services/data/{API_VERSION}/query"
JOBS_PATH = f"/services/data/{API_VERSION}/jobs/query"
# Salesforce designs Bulk API 2.0 query for results of 10,000 records or more; below that, paged SOQL
# finishes sooner and spends none of the org's daily bulk query jobs.
BULK_THRESHOLD = 10_000
BULK_PAGE_RECORDS = 50_000  # maxRecords per results page: one page is one transaction
BULK_FIRST_POLL = 2.0  # seconds; doubling up to BULK_POLL_CAP between status checks
BULK_POLL_CAP = 30.0
BULK_MAX_WAIT = 900.0  # seconds one run waits for a job; the next run picks the same job up

RECONNECT = "Salesforce rejected the saved authorization: reconnect Salesforce from the Integrations page"
LIMIT_MESSAGE = (
    "Salesforce says this org's daily API request limit is used up (REQUEST_LIMIT_EXCEEDED); "
    "the next run continues where this one stopped"
)


# --- pure helpers -------------------------------------------------------------------------------


def error_codes(body: str) -> list[str]:
    """Salesforce errors are a list of {message, errorCode}; anything else yields nothing."""
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        return []
    items = parsed if isinstance(parsed, list) else [parsed]
    return [str(item.get("errorCode") or item.get("error") or "") for item in items if isinstance(item, dict)]


def explain(status: int, body: str) -> str:
    codes = error_codes(body)
    try:
        parsed = json.loads(body)
        message = parsed[0].get("message", "") if isinstance(parsed, list) and parsed else ""
    except (ValueError, TypeError, AttributeError):
        message = ""
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        return LIMIT_MESSAGE
    if status == 401:
        return RECONNECT
    if status == 403:
        return (
            "Salesforce refused the request (403): the connected user needs the API Enabled permission and read "
            f"access to Accounts, Contacts, Opportunities, Tasks and Events ({message or 'no details'})"
        )
    code = ", ".join(c for c in codes if c)
    return f"Salesforce rejected the request ({status}{', ' + code if code else ''}): {message or 'no details'}"


def soql_datetime(value: str) -> str:
    """`2024-03-01T10:00:00.000+0000` → `2024-03-01T10:00:00Z`: seconds only, so a boundary second is
    read again (harmless, rows are upserted) rather than skipped."""
    parsed = datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    offset = value[23:] if len(value) > 23 else ""
    if offset and offset not in ("Z", "+0000", "+00:00"):
        parsed = datetime.fromisoformat(value.replace("+0000", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]  # +0000 → +00:00
    return datetime.fromisoformat(text)


def parse_date(value: str | None) -> date | None:
    if not value:
        return None
    return date.fromisoformat(str(value)[:10])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_assertion(*, client_id: str, username: str, audience: str, private_key_pem: str, now: float) -> str:
    """An RS256-signed JWT for the OAuth 2.0 JWT bearer flow."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = b64url(
        json.dumps({"iss": client_id, "sub": username, "aud": audience, "exp": int(now) + JWT_LIFETIME}).encode()
    )
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{b64url(signature)}"


def token_request(*, login_url: str, data: dict) -> dict:
    """POST /services/oauth2/token; returns {access_token, instance_url, ...} or raises ProviderError."""
    try:
        response = httpx.post(f"{login_url.rstrip('/')}/services/oauth2/token", data=data, timeout=20.0)
    except httpx.TransportError as error:
        raise ProviderError(f"Salesforce's login server could not be reached ({type(error).__name__})") from error
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not body.get("access_token"):
        raise ProviderError(RECONNECT, status=response.status_code)
    return body


class BulkJobRunning(RateLimited):
    """The bulk query job is still running when this run stops waiting: like a rate limit, the run is
    partial and the next one resumes the same job from the saved cursor."""


# --- the client: refresh once on an expired session, REQUEST_LIMIT_EXCEEDED as a rate limit ----------


class SalesforceClient(ProviderClient):
    def __init__(self, *, connector: "SalesforceConnector", **kwargs):
        super().__init__(**kwargs)
        self.connector = connector

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return super().request(method, url, **kwargs)
        except RateLimited:
            raise
        except ProviderError as error:
            if str(error) == LIMIT_MESSAGE:
                raise RateLimited(LIMIT_MESSAGE, status=error.status) from error
            if error.status != 401:
                raise
        # The access token expired or was revoked: one new token, one retry.
        token = self.connector.refresh()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"
        if token.get("instance_url"):
            self.http.base_url = token["instance_url"].rstrip("/")
        try:
            return super().request(method, url, **kwargs)
        except ProviderError as error:
            if str(error) == LIMIT_MESSAGE:
                raise RateLimited(LIMIT_MESSAGE, status=error.status) from error
            if error.status == 401:
                raise ProviderError(RECONNECT, status=401) from error
            raise


# --- streams ------------------------------------------------------------------------------------


class SoqlStream(Stream):
    object_name: str = ""
    fields: tuple[str, ...] = ()

    def __init__(self, connector: "SalesforceConnector"):
        self.connector = connector
        self.name = self.object_name

    def query_fields(self) -> list[str]:
        return ["Id", "SystemModstamp", *self.fields]

    def soql(self, since: str | None) -> str:
        where = f" WHERE SystemModstamp > {soql_datetime(since)}" if since else ""
        return f"SELECT {', '.join(self.query_fields())} FROM {self.object_name}{where} ORDER BY SystemModstamp ASC"

    def bulk_soql(self) -> str:
        # No WHERE (the whole object) and no ORDER BY: Bulk API 2.0 rejects it or loses PK chunking.
        return f"SELECT {', '.join(self.query_fields())} FROM {self.object_name}"

    def read(self, client: ProviderClient, cursor: Any):
        state = dict(cursor or {"since": None, "next": None})
        first_pull = not state.get("since") and not state.get("next") and not state.get("paged")
        if state.get("bulk") or (first_pull and self.is_large(client)):
            yield from self.read_bulk(client, state)
            return
        while True:
            if state.get("next"):
                try:
                    body = query_page(client, state["next"], None)
                except ProviderError as error:
                    if error.status not in (400, 404):
                        raise
                    # The query locator expired (INVALID_QUERY_LOCATOR): query again from `since`.
                    state["next"] = None
                    continue
            else:
                body = query_page(client, QUERY_PATH, self.soql(state.get("since")))
            records = body["records"]
            since = max((r["SystemModstamp"] for r in records if r.get("SystemModstamp")), default=state.get("since"))
            done = bool(body["done"]) or not body.get("nextRecordsUrl")
            state = {"since": since, "next": None if done else body["nextRecordsUrl"]}
            yield Page(records, dict(state), done=done)
            if done:
                return

    def is_large(self, client: ProviderClient) -> bool:
        return object_count(client, self.object_name) >= BULK_THRESHOLD

    def read_bulk(self, client: ProviderClient, state: dict):
        """The first pull through one Bulk API 2.0 query job, a results page per Page."""
        started = False
        while True:
            bulk = state.get("bulk") or {}
            if not bulk.get("job"):
                if started:
                    raise ProviderError(
                        f"Salesforce lost the bulk export of {self.object_name} it had just prepared; "
                        "the data synced before stays, and the next run starts it again"
                    )
                started = True
                bulk = {"job": bulk_job_create(client, self.bulk_soql()), "locator": None}
                state = {**state, "bulk": bulk}
                # Saved at once, before the wait: a run that stops while Salesforce works resumes this job.
                yield Page([], dict(state))
            if not bulk.get("locator"):
                job = bulk_job_wait(client, bulk["job"], object_name=self.object_name, sleep=self.connector.sleep)
                if job is None:  # deleted: expired, or removed by an admin
                    state = {**state, "bulk": None}
                    continue
                if job["state"] != "JobComplete":
                    # Forget the job; a reason that would fail every new export (a query too large to
                    # chunk, say) must not stop the object forever: the next run pages through SOQL.
                    yield Page([], {"since": None, "next": None, "paged": True})
                    ended = "was aborted" if job["state"] == "Aborted" else "failed"
                    raise ProviderError(
                        f"Salesforce's bulk export of {self.object_name} {ended}: "
                        f"{job.get('errorMessage') or 'no reason given'}. The data synced before stays, "
                        "and the next run reads it through paged queries instead"
                    )
            params = {"maxRecords": BULK_PAGE_RECORDS}
            if bulk.get("locator"):
                params["locator"] = bulk["locator"]
            response = bulk_get(client, f"{JOBS_PATH}/{bulk['job']}/results", params=params)
            if response is None:  # the job's results are gone (Salesforce keeps them 7 days): a new job
                state = {**state, "bulk": None}
                continue
            records = bulk_records(response.content.decode("utf-8"))
            # Bulk results come in no order: `since` is only the newest seen, used once the export is done.
            since = max(filter(None, [*(r.get("SystemModstamp") for r in records), state.get("since")]), default=None)
            locator = response.headers.get("Sforce-Locator") or "null"
            done = locator == "null"
            state = {"since": since, "next": None}
            if not done:
                state["bulk"] = {"job": bulk["job"], "locator": locator}
            yield Page(records, dict(state), done=done)
            if done:
                return


def query_page(client: ProviderClient, path: str, soql: str | None) -> dict:
    body = client.json("GET", path, params={"q": soql} if soql else None)
    if not (
        isinstance(body, dict)
        and isinstance(body.get("records"), list)
        and isinstance(body.get("done"), bool)
        and all(isinstance(r, dict) and r.get("Id") for r in body["records"])
    ):
        raise ProviderError(
            "Salesforce answered a query with something that is not a query result; nothing from it was saved, "
            "and the next run reads it again"
        )
    return body


def object_count(client: ProviderClient, object_name: str) -> int:
    return int(query_page(client, QUERY_PATH, f"SELECT COUNT() FROM {object_name}").get("totalSize") or 0)


def bulk_job_create(client: ProviderClient, soql: str) -> str:
    """POST /jobs/query; returns the new job's id."""
    body = client.json("POST", JOBS_PATH, json={"operation": "query", "query": soql})
    if not (isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]):
        raise ProviderError(
            "Salesforce answered a bulk query request with something that is not a job; nothing was saved"
        )
    return body["id"]


def bulk_get(client: ProviderClient, path: str, **kwargs) -> httpx.Response | None:
    """GET a job or its results; None when Salesforce no longer has the job (404)."""
    try:
        return client.request("GET", path, **kwargs)
    except ProviderError as error:
        if error.status == 404:
            return None
        raise


def bulk_job_wait(client: ProviderClient, job_id: str, *, object_name: str, sleep) -> dict | None:
    """The job's info once it is JobComplete, Failed or Aborted; None if it is gone; raises
    BulkJobRunning after BULK_MAX_WAIT seconds of waiting."""
    waited, pause = 0.0, BULK_FIRST_POLL
    while True:
        response = bulk_get(client, f"{JOBS_PATH}/{job_id}")
        if response is None:
            return None
        try:
            job = response.json()
        except ValueError:
            job = None
        if not (isinstance(job, dict) and isinstance(job.get("state"), str)):
            raise ProviderError(
                f"Salesforce answered about the bulk export of {object_name} with something that is not a job; "
                "the next run asks again"
            )
        if job["state"] in ("JobComplete", "Failed", "Aborted"):
            return job
        if waited >= BULK_MAX_WAIT:
            raise BulkJobRunning(
                f"Salesforce is still preparing the bulk export of {object_name} after {waited / 60:.0f} minutes; "
                "the next run picks up its results"
            )
        sleep(pause)
        waited += pause
        pause = min(pause * 2, BULK_POLL_CAP)


def bulk_records(text: str) -> list[dict]:
    """Bulk results CSV → records shaped like the REST query's: `Owner.Email` becomes {"Owner": {"Email": …}},
    an empty cell None, and a lookup whose fields are all empty None (CSV cannot tell null from "")."""
    records = []
    for row in csv.DictReader(io.StringIO(text)):
        record: dict = {}
        for column, value in row.items():
            *parents, field = (column or "").split(".")
            target = record
            for parent in parents:
                target = target.setdefault(parent, {})
            target[field] = value if value != "" else None
        records.append(_nulls_for_empty_lookups(record))
    if not all(r.get("Id") for r in records):
        raise ProviderError(
            "Salesforce sent bulk results without record ids; nothing from them was saved, and the next run reads "
            "them again"
        )
    return records


def _nulls_for_empty_lookups(record: dict) -> dict:
    for key, value in record.items():
        if isinstance(value, dict):
            value = _nulls_for_empty_lookups(value)
            record[key] = None if all(v is None for v in value.values()) else value
    return record


def members_by_email(org, emails: set[str]) -> dict[str, int]:
    emails = {e.strip().lower() for e in emails if e}
    if not emails:
        return {}
    return dict(
        Membership.objects.filter(org=org)
        .annotate(email_lower=Lower("user__email"))
        .filter(email_lower__in=emails)
        .values_list("email_lower", "user_id")
    )


def _upsert(model, *, org, rows: list, update_fields: list[str]) -> tuple[int, int]:
    """Bulk INSERT ... ON CONFLICT (org, external_id); returns (created, updated)."""
    if not rows:
        return 0, 0
    ids = [row.external_id for row in rows]
    existing = set(model.objects.filter(org=org, external_id__in=ids).values_list("external_id", flat=True))
    model.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["org", "external_id"], update_fields=update_fields
    )
    created = sum(1 for i in ids if i not in existing)
    return created, len(ids) - created


def _owner_email(record: dict) -> str:
    return (record.get("Owner") or {}).get("Email") or ""


def _account_of(record: dict) -> str:
    account = record.get("AccountId") or ""
    what = record.get("WhatId") or ""
    return account or (what if what.startswith("001") else "")  # 001 is the key prefix of Account ids


def _resolve_parents(org, connection, stream: str, records: list[dict]) -> tuple[dict[str, int], list[dict]]:
    """{Salesforce account id: account id} of the records' accounts, and the records whose account is unknown."""
    parents = sorted({_account_of(r) for r in records} - {""})
    accounts = resolve_accounts(
        org=org, provider=PROVIDER, object_type="account", candidates=[Candidate(p) for p in parents]
    )
    orphans = [r for r in records if _account_of(r) not in accounts]
    # Listed on the connection page (never silently dropped): a record under no account, or under one
    # that has not come through (yet).
    record_unmatched(
        org=org,
        connection=connection,
        stream=stream,
        candidates=[Candidate(r["Id"], name=_describe(stream, r)) for r in orphans],
    )
    lost = {r["Id"] for r in orphans}
    forget_unmatched(
        org=org, connection=connection, stream=stream, external_ids=[r["Id"] for r in records if r["Id"] not in lost]
    )
    return accounts, orphans


def _describe(stream: str, record: dict) -> str:
    label = (
        record.get("Name")
        or record.get("Subject")
        or " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
    )
    parent = _account_of(record)
    where = f"account {parent} not synced" if parent else "no account"
    return f"{stream} {label or record['Id']} ({where})"


class AccountStream(SoqlStream):
    object_name = "Account"
    fields = ("Name", "Website", "OwnerId", "Owner.Email")

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        latest = {r["Id"]: r for r in records}
        candidates = [Candidate(i, r.get("Website") or "", r.get("Name") or i) for i, r in latest.items()]
        matched = resolve_accounts(org=org, provider=PROVIDER, object_type="account", candidates=candidates)
        owners = members_by_email(org, {_owner_email(r) for r in latest.values()})

        def csm(record):
            return owners.get(_owner_email(record).lower())

        # Accounts that match nothing are created: Salesforce is the CRM, its accounts are the customers.
        now = timezone.now()
        new = [
            Account(
                org=org,
                external_id=f"sf-{i}",
                name=(r.get("Name") or i)[:200],
                domain=normalize_domain(r.get("Website"))[:200],
                csm_id=csm(r),
                created_at=now,
            )
            for i, r in latest.items()
            if i not in matched
        ]
        created, _ = _upsert(Account, org=org, rows=new, update_fields=["name", "domain", "csm"])
        made = dict(
            Account.objects.filter(org=org, external_id__in=[a.external_id for a in new]).values_list(
                "external_id", "pk"
            )
        )
        links = {i: made[f"sf-{i}"] for i in latest if i not in matched and f"sf-{i}" in made}
        remember_sources(org=org, provider=PROVIDER, object_type="account", pairs=links)
        # Matched accounts follow their Salesforce owner; names stay as the admin imported them.
        updated = 0
        owned: dict[int, list[int]] = {}
        for i, pk in matched.items():
            user = csm(latest[i])
            if user:
                owned.setdefault(user, []).append(pk)
        for user, pks in owned.items():  # one UPDATE per owner, not per account
            updated += Account.objects.filter(org=org, pk__in=pks).exclude(csm_id=user).update(csm_id=user)
        forget_unmatched(org=org, connection=connection, stream="Account", external_ids=list(latest))
        return Applied(created=created, updated=updated)


class ContactStream(SoqlStream):
    object_name = "Contact"
    fields = ("AccountId", "FirstName", "LastName", "Email", "Phone", "Title")

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        latest = {r["Id"]: r for r in records}
        accounts, orphans = _resolve_parents(org, connection, self.name, list(latest.values()))
        rows = [
            Contact(
                org=org,
                account_id=accounts[_account_of(r)],
                external_id=f"sf-{i}",
                name=" ".join(p for p in (r.get("FirstName"), r.get("LastName")) if p)[:200],
                email=(r.get("Email") or "")[:254],
                phone=(r.get("Phone") or "")[:50],
                title=(r.get("Title") or "")[:200],
            )
            for i, r in latest.items()
            if _account_of(r) in accounts
        ]
        created, updated = _upsert(
            Contact, org=org, rows=rows, update_fields=["account", "name", "email", "phone", "title"]
        )
        return Applied(created=created, updated=updated, unmatched=len(orphans))


class OpportunityStream(SoqlStream):
    object_name = "Opportunity"

    def query_fields(self) -> list[str]:
        settings = self.connector.field_map()
        fields = ["Id", "SystemModstamp", "AccountId", "StageName", "Owner.Email"]
        return list(dict.fromkeys([*fields, settings["arr_field"], settings["renewal_field"]]))

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        settings = self.connector.field_map()
        won = [r for r in records if r.get("StageName") == settings["stage_value"]]
        accounts, orphans = _resolve_parents(org, connection, self.name, won)
        # The won opportunity with the latest renewal date speaks for its account.
        best: dict[int, dict] = {}
        for record in won:
            account_id = accounts.get(_account_of(record))
            renewal = parse_date(record.get(settings["renewal_field"]))
            if account_id is None or renewal is None:
                continue
            if account_id not in best or renewal >= parse_date(best[account_id].get(settings["renewal_field"])):
                best[account_id] = record
        changed = []
        current = {
            a.pk: a for a in Account.objects.filter(org=org, pk__in=list(best)).only("arr", "renewal_date", "am")
        }
        # The owner of that opportunity, when a member, is the account's Account Manager.
        owners = members_by_email(org, {_owner_email(r) for r in best.values()})
        for account_id, record in best.items():
            try:
                arr = Decimal(str(record.get(settings["arr_field"]) or 0)).quantize(Decimal("0.01"))
            except InvalidOperation:
                continue
            account = current.get(account_id)
            renewal = parse_date(record.get(settings["renewal_field"]))
            am_id = owners.get(_owner_email(record).lower()) or (account.am_id if account else None)
            if account is not None and (account.arr, account.renewal_date, account.am_id) != (arr, renewal, am_id):
                account.arr, account.renewal_date, account.am_id = arr, renewal, am_id
                changed.append(account)
        Account.objects.bulk_update(changed, ["arr", "renewal_date", "am"])  # one UPDATE for the page
        updated = len(changed)
        return Applied(updated=updated, unmatched=len(orphans))


class TaskStream(SoqlStream):
    object_name = "Task"
    fields = ("AccountId", "WhatId", "Subject", "TaskSubtype", "ActivityDate", "CreatedDate")

    def occurred(self, record: dict) -> datetime | None:
        day = parse_date(record.get("ActivityDate"))
        if day:
            return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        return parse_datetime(record.get("CreatedDate"))

    def kind(self, record: dict) -> str:
        return {"Email": ActivityKind.EMAIL, "Call": ActivityKind.CALL}.get(
            record.get("TaskSubtype"), ActivityKind.NOTE
        )

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        latest = {r["Id"]: r for r in records}
        accounts, orphans = _resolve_parents(org, connection, self.name, list(latest.values()))
        rows = [
            Activity(
                org=org,
                account_id=accounts[_account_of(r)],
                external_id=f"sf-{i}",
                occurred_at=self.occurred(r) or timezone.now(),
                kind=self.kind(r),
                actor_side=Side.VENDOR,
                summary=r.get("Subject") or "",
            )
            for i, r in latest.items()
            if _account_of(r) in accounts
        ]
        created, updated = _upsert(
            Activity, org=org, rows=rows, update_fields=["account", "occurred_at", "kind", "summary"]
        )
        return Applied(created=created, updated=updated, unmatched=len(orphans))


class EventStream(TaskStream):
    object_name = "Event"
    fields = ("AccountId", "WhatId", "Subject", "StartDateTime", "CreatedDate")

    def occurred(self, record: dict) -> datetime | None:
        return parse_datetime(record.get("StartDateTime")) or parse_datetime(record.get("CreatedDate"))

    def kind(self, record: dict) -> str:
        return ActivityKind.MEETING


# --- the connector ------------------------------------------------------------------------------


@register
class SalesforceConnector(Connector):
    provider = PROVIDER
    purpose = (
        "CRM: accounts with their owner as CSM, contacts, won opportunities for ARR and renewal, "
        "tasks and events as activity."
    )
    credential_fields = [
        ConnectorField("instance_url", "Instance URL", secret=False, help="https://yourcompany.my.salesforce.com"),
        ConnectorField("client_id", "Consumer key", secret=False, help="From your connected app."),
        ConnectorField("client_secret", "Consumer secret", required=False, help="For the browser (web-server) flow."),
        ConnectorField(
            "username", "Integration user", secret=False, required=False, help="For the JWT bearer flow only."
        ),
        ConnectorField(
            "private_key",
            "Private key (PEM)",
            required=False,
            help="JWT bearer flow: the key whose certificate is uploaded to the connected app.",
        ),
        ConnectorField("access_token", "Access token", required=False, help="Filled in by Connect with Salesforce."),
        ConnectorField("refresh_token", "Refresh token", required=False, help="Filled in by Connect with Salesforce."),
    ]
    setting_fields = [
        ConnectorField("login_url", "Login URL", secret=False, required=False, help=f"Empty for {DEFAULT_LOGIN_URL}."),
        ConnectorField(
            "arr_field",
            "ARR field",
            secret=False,
            required=False,
            help=f"Opportunity field (empty: {DEFAULT_ARR_FIELD}).",
        ),
        ConnectorField(
            "renewal_field",
            "Renewal date field",
            secret=False,
            required=False,
            help=f"Opportunity date field (empty: {DEFAULT_RENEWAL_FIELD}).",
        ),
        ConnectorField("won_stage", "Won stage", secret=False, required=False, help=f"Empty for {DEFAULT_WON_STAGE}."),
    ]
    backoff_base = 0.5
    sleep = staticmethod(time.sleep)

    @classmethod
    def can_sync(cls, secrets: dict) -> bool:
        # A token, or what gets one without a person: a refresh token or the JWT bearer key.
        return bool(
            secrets.get("access_token")
            or secrets.get("refresh_token")
            or (secrets.get("private_key") and secrets.get("username"))
        )

    def login_url(self) -> str:
        return ((self.connection.settings or {}).get("login_url") or DEFAULT_LOGIN_URL).rstrip("/")

    def field_map(self) -> dict:
        settings = self.connection.settings or {}
        return {
            "arr_field": settings.get("arr_field") or DEFAULT_ARR_FIELD,
            "renewal_field": settings.get("renewal_field") or DEFAULT_RENEWAL_FIELD,
            "stage_value": settings.get("won_stage") or DEFAULT_WON_STAGE,
        }

    def client(self, budget: RequestBudget) -> ProviderClient:
        token = self.secrets.get("access_token")
        return SalesforceClient(
            connector=self,
            provider="Salesforce",
            base_url=(self.secrets.get("instance_url") or "").rstrip("/"),
            # No token yet (JWT bearer flow, or before Connect with Salesforce): no header, so Salesforce
            # answers 401 and the client gets a token. "Bearer " alone is an illegal header value that
            # httpx refuses to send, which read as "could not be reached" after five tries.
            headers={"Authorization": f"Bearer {token}"} if token else {},
            budget=budget,
            explain=explain,
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        )

    def refresh(self) -> dict:
        """A new access token (refresh token, else JWT bearer), saved with the connection's secrets."""
        secrets = self.secrets
        if secrets.get("refresh_token") and secrets.get("client_id"):
            data = {
                "grant_type": "refresh_token",
                "client_id": secrets["client_id"],
                "refresh_token": secrets["refresh_token"],
            }
            if secrets.get("client_secret"):
                data["client_secret"] = secrets["client_secret"]
        elif secrets.get("private_key") and secrets.get("username") and secrets.get("client_id"):
            data = {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": jwt_assertion(
                    client_id=secrets["client_id"],
                    username=secrets["username"],
                    audience=self.login_url(),
                    private_key_pem=secrets["private_key"],
                    now=time.time(),
                ),
            }
        else:
            raise ProviderError(RECONNECT, status=401)
        token = token_request(login_url=self.login_url(), data=data)
        new = {"access_token": token["access_token"]}
        if token.get("instance_url"):
            new["instance_url"] = token["instance_url"]
        if token.get("refresh_token"):
            new["refresh_token"] = token["refresh_token"]
        from integrations.services import connection_save

        org = self.connection.org
        with tenant(org):
            connection_save(org=org, provider=PROVIDER, secrets=new)
        self.secrets = {**self.secrets, **new}
        return token

    def streams(self) -> list[Stream]:
        return [AccountStream(self), ContactStream(self), OpportunityStream(self), TaskStream(self), EventStream(self)]

    def test(self, client: ProviderClient) -> str:
        accounts = object_count(client, "Account")
        host = urlsplit(str(client.http.base_url)).hostname or "Salesforce"
        return f"Connected to Salesforce at {host}: {accounts:,} accounts"
