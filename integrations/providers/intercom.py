"""Intercom (access token): companies matched to accounts, conversations → tickets and activities.

Requests are pinned to `Intercom-Version: 2.14`, the version whose published description the tests
check the fake server against (Intercom's own SDKs are generated from it).

Companies come from the scroll API, which allows one open scroll per workspace and forgets a scroll
left idle for a minute. Pages are therefore read back to back and no scroll_param is ever stored:
a run that stops restarts the scroll next time, which is safe because matching is an upsert.

Conversations come from the search API on `updated_at`, sorted ascending. The cursor
{"since", "starting_after", "last"} is committed with every page: `since` anchors the query being
paged (it must stay fixed while its `starting_after` token is followed), `last` is the newest
`updated_at` applied so far and becomes the next query's `since` once the query is read to its end
(each query reaches back OVERLAP seconds before `since`).
"""

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from django.db import connection as db

from integrations.http import ProviderClient, ProviderError, RequestBudget
from integrations.matching import (
    Candidate,
    forget_unmatched,
    record_unmatched,
    remember_sources,
    resolve_accounts,
)
from integrations.models import SourceRecord
from integrations.sync import Applied, Connector, ConnectorField, Page, Stream, register

PROVIDER = "intercom"
INTERCOM_VERSION = "2.14"
DEFAULT_API_BASE = "https://api.intercom.io"
PER_PAGE = 150  # the search API's largest page
SCROLL_WAIT = 65.0  # an abandoned scroll expires after one minute idle
SCROLL_TRIES = 3
# Search is fed by an index that lags writes by a few seconds, and `>` skips updates in the same
# second as the cursor: each query starts this far before it. Re-read conversations upsert unchanged.
OVERLAP = 60

CLIENT_AUTHORS = {"user", "lead", "contact"}  # a conversation one of the customer's people started
STATUSES = {"open": "open", "snoozed": "pending", "closed": "closed"}

INTERCOM_401 = (
    "Intercom refused the access token (401): create an access token in the Developer Hub with read access to "
    "companies and conversations and reconnect"
)


class ScrollUnavailable(ProviderError):
    """The workspace already has an open scroll, or ours expired: wait and start the scroll again."""


# --- pure rules ---------------------------------------------------------------------------------


def error_parts(body: str) -> tuple[str, str]:
    """(codes, messages) of Intercom's {"type": "error.list", "errors": [{code, message}]}."""
    try:
        errors = (json.loads(body) or {}).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    errors = [e for e in errors if isinstance(e, dict)]
    codes = ", ".join(str(e.get("code")) for e in errors if e.get("code"))
    messages = "; ".join(str(e.get("message")).strip() for e in errors if e.get("message"))
    return codes, messages


def explain(status: int, body: str) -> str:
    codes, message = error_parts(body)
    if status == 401:
        return INTERCOM_401
    if status == 403:
        return (
            f"Intercom refused the request (403{', ' + codes if codes else ''}): the access token may not read "
            "this data; give the app read access to companies and conversations in the Developer Hub and reconnect"
        )
    return f"Intercom rejected the request ({status}{', ' + codes if codes else ''}): {message or 'no details'}"


def _scroll_trouble(error: ProviderError) -> bool:
    """Intercom's answer names the scroll (scroll_exists, scroll_param_not_found, "scroll expired")."""
    text = str(error).lower()
    return "scroll" in text and ("exist" in text or "expired" in text or "invalid" in text or "not found" in text)


def company_record(company: dict) -> dict:
    return {
        "kind": "company",
        "id": str(company["id"]),
        "company_id": str(company.get("company_id") or ""),
        "name": company.get("name") or "",
        "website": company.get("website") or "",
    }


def conversation_record(conversation: dict) -> dict:
    source = conversation.get("source") or {}
    author = source.get("author") or {}
    statistics = conversation.get("statistics") or {}
    state = conversation.get("state") or ("open" if conversation.get("open") else "closed")
    return {
        "kind": "conversation",
        "id": str(conversation["id"]),
        "created_at": conversation.get("created_at"),
        "updated_at": conversation.get("updated_at"),
        "status": STATUSES.get(state, "open"),
        "priority": "high" if conversation.get("priority") == "priority" else "normal",
        "subject": _plain(source.get("subject") or conversation.get("title") or "")[:300],
        "client": author.get("type") in CLIENT_AUTHORS,
        "author_id": str(author.get("id") or ""),
        "author_name": author.get("name") or "",
        "email": author.get("email") or "",
        "company": str(author.get("company_id") or ""),
        "contacts": [str(c["id"]) for c in (conversation.get("contacts") or {}).get("contacts") or [] if c.get("id")],
        "last_client_at": statistics.get("last_contact_reply_at"),
        "closed_at": statistics.get("last_close_at") if state == "closed" else None,
    }


def _plain(text: str) -> str:
    # Subjects arrive as HTML ("<p>Invoice</p>"); the ticket list shows text.
    return re.sub(r"<[^>]+>", "", text).strip()


def _utc(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


# --- streams ------------------------------------------------------------------------------------


class CompaniesStream(Stream):
    name = "companies"

    def __init__(self, connector: "IntercomConnector"):
        self.connector = connector

    def read(self, client: ProviderClient, cursor: Any):
        for attempt in range(1, SCROLL_TRIES + 1):
            try:
                yield from self._scroll(client)
                return
            except ScrollUnavailable as trouble:
                if attempt == SCROLL_TRIES:
                    raise ProviderError(
                        "Intercom kept refusing to list companies because another company scroll is open in this "
                        f"workspace or ours expired ({trouble}); stop other tools scrolling companies, and the next "
                        "run tries again",
                        status=trouble.status,
                    ) from trouble
                self.connector.sleep(SCROLL_WAIT)

    def _scroll(self, client: ProviderClient):
        scroll_param = None
        while True:
            params = {"scroll_param": scroll_param} if scroll_param else {}
            try:
                body = client.json("GET", "/companies/scroll", params=params)
            except ProviderError as error:
                if error.status in (400, 404, 409, 410) and _scroll_trouble(error):
                    raise ScrollUnavailable(str(error), status=error.status) from error
                if error.status and error.status >= 500 and scroll_param:
                    # Intercom's advice for a scroll hit by an internal error: start it again.
                    raise ScrollUnavailable(str(error), status=error.status) from error
                raise
            if not (isinstance(body, dict) and isinstance(body.get("data"), list)):
                raise ProviderError(
                    "Intercom answered /companies/scroll with something that is not a company list; nothing from "
                    "it was saved, and the next run reads it again"
                )
            data = body["data"]
            if not data:  # the end of the scroll: Intercom expires the scroll_param itself
                yield Page([], None, done=True)
                return
            # No scroll_param in the cursor: a scroll cannot be resumed in a later run.
            yield Page([company_record(c) for c in data], None)
            scroll_param = body.get("scroll_param")
            if not scroll_param:
                yield Page([], None, done=True)
                return

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        if not records:
            return Applied()
        latest = {r["id"]: r for r in records}.values()
        candidates = [
            Candidate(external_id=r["company_id"] or r["id"], domain=r["website"], name=r["name"] or r["website"])
            for r in latest
        ]
        linked_before = set(
            SourceRecord.objects.filter(
                org=org, provider=PROVIDER, object_type="company", external_id__in=[c.external_id for c in candidates]
            ).values_list("external_id", flat=True)
        )
        matched = resolve_accounts(org=org, provider=PROVIDER, object_type="company", candidates=candidates)
        # Conversations name a company by Intercom's id: remember it too when the app's own id matched.
        remember_sources(
            org=org,
            provider=PROVIDER,
            object_type="company",
            pairs={
                r["id"]: matched[r["company_id"]]
                for r in latest
                if r["company_id"] and r["company_id"] != r["id"] and r["company_id"] in matched
            },
        )
        unmatched = [c for c in candidates if c.external_id not in matched]
        # Unmatched companies are listed for the admin to map; they never become accounts.
        record_unmatched(org=org, connection=connection, stream="companies", candidates=unmatched)
        forget_unmatched(org=org, connection=connection, stream="companies", external_ids=sorted(matched))
        return Applied(
            created=sum(1 for external_id in matched if external_id not in linked_before), unmatched=len(unmatched)
        )


class ConversationsStream(Stream):
    name = "conversations"

    def read(self, client: ProviderClient, cursor: Any):
        state = dict(cursor or {"since": 0, "starting_after": None})
        state.setdefault("last", state["since"])
        while True:
            query: dict = {
                "query": {"field": "updated_at", "operator": ">", "value": max(0, state["since"] - OVERLAP)},
                "pagination": {"per_page": PER_PAGE},
                "sort": {"field": "updated_at", "order": "ascending"},
            }
            if state["starting_after"]:
                query["pagination"]["starting_after"] = state["starting_after"]
            try:
                body = client.json("POST", "/conversations/search", json=query)
            except ProviderError as error:
                if error.status == 400 and state["starting_after"]:
                    # The page token outlived its query: search again from the last update applied.
                    state = {"since": state["last"], "starting_after": None, "last": state["last"]}
                    continue
                raise
            if not (isinstance(body, dict) and isinstance(body.get("conversations"), list)):
                raise ProviderError(
                    "Intercom answered /conversations/search with something that is not a conversation list; "
                    "nothing from it was saved, and the next run reads it again"
                )
            records = [conversation_record(c) for c in body["conversations"]]
            last = max([state["last"], *(r["updated_at"] or 0 for r in records)])
            following = ((body.get("pages") or {}).get("next") or {}).get("starting_after")
            if following and records:
                state = {"since": state["since"], "starting_after": following, "last": last}
                yield Page(records, state)
            else:
                yield Page(records, {"since": last, "starting_after": None, "last": last}, done=True)
                return

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        if not records:
            return Applied()
        latest = list({r["id"]: r for r in records}.values())
        companies = sorted({r["company"] for r in latest if r["company"]})
        by_company = resolve_accounts(
            org=org, provider=PROVIDER, object_type="company", candidates=[Candidate(c) for c in companies]
        )
        rest = [r for r in latest if r["company"] not in by_company]
        people = {
            r["author_id"] or r["email"]: r["email"] for r in rest if r["client"] and (r["author_id"] or r["email"])
        }
        # A conversation a teammate started names its customer only through its contacts: a contact
        # matched before (as the author of an earlier conversation) or mapped by the admin.
        people.update({c: "" for r in rest for c in r["contacts"] if c not in people})
        by_person = resolve_accounts(
            org=org,
            provider=PROVIDER,
            object_type="contact",
            candidates=[Candidate(external_id=key, domain=email) for key, email in people.items()],
        )
        account = {}
        for r in latest:
            found = (
                by_company.get(r["company"])
                or (by_person.get(r["author_id"] or r["email"]) if r["client"] else None)
                or next((by_person[c] for c in r["contacts"] if c in by_person), None)
            )
            if found:
                account[r["id"]] = found
        unmatched = [
            Candidate(
                external_id=r["id"],
                domain=r["email"] if r["client"] else "",
                name=r["subject"] or r["email"] or r["id"],
            )
            for r in latest
            if r["id"] not in account
        ]
        record_unmatched(org=org, connection=connection, stream="conversations", candidates=unmatched)
        forget_unmatched(org=org, connection=connection, stream="conversations", external_ids=sorted(account))
        rows = [r for r in latest if r["id"] in account]
        if not rows:
            return Applied(unmatched=len(unmatched))
        accounts = [account[r["id"]] for r in rows]
        created, updated = _upsert(
            table="accounts_ticket",
            org_id=org.pk,
            columns={
                "external_id": ("text", [f"intercom-{r['id']}" for r in rows]),
                "account_id": ("bigint", accounts),
                "opened_at": ("timestamptz", [_utc(r["created_at"]) for r in rows]),
                "status": ("text", [r["status"] for r in rows]),
                "priority": ("text", [r["priority"] for r in rows]),
                "solved_at": ("timestamptz", [_utc(r["closed_at"]) for r in rows]),
                "subject": ("text", [r["subject"] for r in rows]),
            },
        )
        # The activity counts for the silence rule: a client's message is the client reaching out.
        _upsert(
            table="accounts_activity",
            org_id=org.pk,
            columns={
                "external_id": ("text", [f"intercom-conv-{r['id']}" for r in rows]),
                "account_id": ("bigint", accounts),
                "occurred_at": ("timestamptz", [_utc(r["last_client_at"] or r["created_at"]) for r in rows]),
                "kind": ("text", ["message"] * len(rows)),
                "direction": ("text", ["inbound" if r["client"] else "outbound" for r in rows]),
                "actor_side": ("text", ["client" if r["client"] else "vendor" for r in rows]),
                "actor_name": ("text", [r["author_name"][:200] for r in rows]),
                "summary": ("text", [r["subject"] for r in rows]),
            },
        )
        return Applied(created=created, updated=updated, unmatched=len(unmatched))  # one ticket + activity each


def _upsert(*, table: str, org_id: int, columns: dict[str, tuple[str, list]]) -> tuple[int, int]:
    """INSERT ... ON CONFLICT (org, external_id), writing only rows that differ; returns (created, updated)."""
    names = list(columns)
    values = [name for name in names if name != "external_id"]
    unnest = ", ".join(f"%({name})s::{kind}[]" for name, (kind, _) in columns.items())
    with db.cursor() as cursor:
        cursor.execute(
            f"""
            WITH i AS (SELECT * FROM unnest({unnest}) AS i({", ".join(names)})),
            upserted AS (
                INSERT INTO {table} AS cur (org_id, {", ".join(names)})
                SELECT %(org)s, {", ".join(f"i.{name}" for name in names)} FROM i
                ON CONFLICT (org_id, external_id) DO UPDATE SET {", ".join(f"{n} = EXCLUDED.{n}" for n in values)}
                WHERE ({", ".join(f"cur.{n}" for n in values)}) IS DISTINCT FROM
                      ({", ".join(f"EXCLUDED.{n}" for n in values)})
                RETURNING cur.xmax = 0 AS created
            )
            SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
            """,
            {"org": org_id, **{name: data for name, (_, data) in columns.items()}},
        )
        return cursor.fetchone()


# --- the connector ------------------------------------------------------------------------------


@register
class IntercomConnector(Connector):
    provider = PROVIDER
    purpose = "Support and conversations: companies matched to accounts, conversations as tickets and client activity."
    credential_fields = [
        ConnectorField(
            "access_token",
            "Access token",
            help="Intercom Developer Hub → your app → Authentication: the access token, with read access to "
            "companies and conversations.",
        )
    ]
    setting_fields = [
        ConnectorField("api_base", "API address", secret=False, required=False, help=f"Empty for {DEFAULT_API_BASE}."),
    ]
    backoff_base = 0.5
    sleep = staticmethod(time.sleep)

    def client(self, budget: RequestBudget) -> ProviderClient:
        base = (self.connection.settings or {}).get("api_base") or DEFAULT_API_BASE
        return ProviderClient(
            provider="Intercom",
            base_url=base.rstrip("/"),
            headers={
                "Authorization": f"Bearer {self.secrets.get('access_token', '')}",
                "Intercom-Version": INTERCOM_VERSION,
                "Accept": "application/json",
            },
            budget=budget,
            explain=explain,
            reset_header="X-RateLimit-Reset",
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        )

    def streams(self) -> list[Stream]:
        return [CompaniesStream(self), ConversationsStream()]

    def test(self, client: ProviderClient) -> str:
        me = client.json("GET", "/me")
        if not isinstance(me, dict):
            raise ProviderError("Intercom answered /me with something unexpected; check the API address")
        app = me.get("app") or {}
        workspace = app.get("name") or app.get("id_code") or "your workspace"
        who = me.get("name") or me.get("email") or "the token's admin"
        return f"Connected to Intercom workspace {workspace} as {who}."
