"""Zendesk Support (agent e-mail + API token): organizations matched to accounts, tickets.

Two streams, both through Zendesk's incremental exports, which list what changed since a point:
- `organizations`: the time-based export (/api/v2/incremental/organizations), cursor = the
  `end_time` of the last committed page, the next page's `start_time`. Organizations are matched to
  accounts (Zendesk id, then the first domain name, then the admin's mapping) and never created.
- `tickets`: the cursor-based export (/api/v2/incremental/tickets/cursor), `start_time=0` on the
  first sync, then `cursor=<after_cursor>` until `end_of_stream`. Each page's `after_cursor` is
  committed with its tickets, so a later sync (or a resume after a kill) reads only what is new.
  Tickets land on the account of their organization.

The exports allow 10 requests a minute: requests are spaced `min_interval_seconds` (6 s) apart,
and a 429 waits for its Retry-After in the shared client.
"""

import json
import time
from datetime import datetime
from typing import Any

from django.db import connection as db

from accounts.models import Ticket, TicketPriority, TicketStatus
from integrations.http import ProviderClient, ProviderError, RequestBudget
from integrations.matching import Candidate, forget_unmatched, record_unmatched, resolve_accounts
from integrations.models import SourceRecord
from integrations.sync import Applied, Connector, ConnectorField, Page, Stream, register

PROVIDER = "zendesk"
ORG_OBJECT = "organization"
PAGE_SIZE = 1000  # the largest page of both exports
DEFAULT_MIN_INTERVAL = 6.0  # 10 requests a minute on the incremental exports

STATUSES = {s.value for s in TicketStatus}
PRIORITIES = {p.value for p in TicketPriority}
CSAT_SCORES = {"good": 5, "bad": 1}  # "offered" / "unoffered" are no rating yet

ZENDESK_401 = (
    "Zendesk refused the e-mail and API token (401): check the agent e-mail and create a new API token under "
    "Admin Center → Apps and integrations → Zendesk API"
)


# --- pure rules ---------------------------------------------------------------------------------


def base_url(subdomain: str) -> str:
    return f"https://{subdomain}.zendesk.com"


def explain_for(subdomain: str):
    def explain(status: int, body: str) -> str:
        """Zendesk's errors ({"errors": [{code, title}]} or {"error", "description"}) in plain words."""
        try:
            payload = json.loads(body) or {}
        except ValueError:
            payload = {}
        details = ""
        if isinstance(payload, dict):
            errors = payload.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                details = str(errors[0].get("detail") or errors[0].get("title") or "")
            elif payload.get("description") or payload.get("error"):
                details = str(payload.get("description") or payload.get("error"))
        if status == 401:
            return ZENDESK_401
        if status == 403:
            return (
                "Zendesk refused the request (403): the incremental exports need an admin; connect with the e-mail "
                "and API token of a Zendesk admin"
            )
        if status == 404:
            return f"No Zendesk account at {subdomain}.zendesk.com: check the subdomain (the part before .zendesk.com)"
        return f"Zendesk rejected the request ({status}): {details or 'no details'}"

    return explain


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def csat(rating: Any) -> int | None:
    score = rating.get("score") if isinstance(rating, dict) else None
    return CSAT_SCORES.get(score)


def ticket_row(ticket: dict) -> dict:
    """A Zendesk ticket as a row of accounts.Ticket (plus the organization it belongs to)."""
    status = ticket.get("status") or "new"
    solved = status in (TicketStatus.SOLVED, TicketStatus.CLOSED)
    priority = ticket.get("priority")
    return {
        "id": str(ticket["id"]),
        "organization": str(ticket["organization_id"]) if ticket.get("organization_id") is not None else "",
        "deleted": status == "deleted",
        "opened_at": parse_time(ticket.get("created_at")),
        "status": status if status in STATUSES else TicketStatus.OPEN,
        "priority": priority if priority in PRIORITIES else TicketPriority.NORMAL,
        # The export carries no solved time: its last update while solved is the closest we have;
        # the upsert keeps the first one seen, so a later close does not move it.
        "solved_at": parse_time(ticket.get("updated_at")) if solved else None,
        "csat": csat(ticket.get("satisfaction_rating")),
        "subject": (ticket.get("subject") or ticket.get("raw_subject") or "")[:300],
    }


# --- streams ------------------------------------------------------------------------------------


class _Paced:
    """Spaces requests of the exports (10 a minute) without waiting before the first."""

    def __init__(self, connector: "ZendeskConnector"):
        self.connector = connector
        self.interval = connector.min_interval
        self._last: float | None = None

    def get(self, client: ProviderClient, path: str, params: dict) -> dict:
        if self._last is not None and self.interval > 0:
            wait = self.interval - (time.monotonic() - self._last)
            if wait > 0:
                self.connector.sleep(wait)
        try:
            return client.json("GET", path, params=params)
        finally:
            self._last = time.monotonic()


def _malformed(what: str) -> ProviderError:
    return ProviderError(
        f"Zendesk answered the {what} export with a page that is not an export page; nothing from it was saved, "
        "and the next run reads it again"
    )


class OrganizationsStream(Stream):
    name = "organizations"

    def __init__(self, connector: "ZendeskConnector", paced: _Paced):
        self.connector = connector
        self.paced = paced

    def read(self, client: ProviderClient, cursor: Any):
        start = int(cursor or 0)
        while True:
            body = self.paced.get(
                client, "/api/v2/incremental/organizations.json", {"start_time": start, "per_page": PAGE_SIZE}
            )
            if not (
                isinstance(body, dict)
                and isinstance(body.get("organizations"), list)
                and isinstance(body.get("end_of_stream"), bool)
            ):
                raise _malformed("organizations")
            end = int(body.get("end_time") or start)
            # An export whose end does not move would list the same page forever: stop there.
            done = body["end_of_stream"] or end <= start
            yield Page(body["organizations"], max(end, start), done=done)
            if done:
                return
            start = end

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        latest = {str(o["id"]): o for o in records}
        gone = sorted(i for i, o in latest.items() if o.get("deleted_at"))
        candidates = [
            Candidate(external_id=i, domain=((o.get("domain_names") or [""])[0] or ""), name=o.get("name") or i)
            for i, o in latest.items()
            if not o.get("deleted_at")
        ]
        linked_before = dict(
            SourceRecord.objects.filter(
                org=org, provider=PROVIDER, object_type=ORG_OBJECT, external_id__in=list(latest)
            ).values_list("external_id", "account_id")
        )
        matched = resolve_accounts(org=org, provider=PROVIDER, object_type=ORG_OBJECT, candidates=candidates)
        unmatched = [c for c in candidates if c.external_id not in matched]
        record_unmatched(org=org, connection=connection, stream=self.name, candidates=unmatched)
        forget_unmatched(
            org=org, connection=connection, stream=self.name, external_ids=sorted(set(matched) | set(gone))
        )
        return Applied(
            created=sum(1 for i in matched if i not in linked_before),
            updated=sum(1 for i, pk in matched.items() if i in linked_before and linked_before[i] != pk),
            unmatched=len(unmatched),
        )


class TicketsStream(Stream):
    name = "tickets"

    def __init__(self, connector: "ZendeskConnector", paced: _Paced):
        self.connector = connector
        self.paced = paced

    def read(self, client: ProviderClient, cursor: Any):
        after = (cursor or {}).get("after")
        while True:
            params: dict = {"per_page": PAGE_SIZE}
            if after:
                params["cursor"] = after
            else:
                params["start_time"] = 0
            body = self.paced.get(client, "/api/v2/incremental/tickets/cursor.json", params)
            if not (
                isinstance(body, dict)
                and isinstance(body.get("tickets"), list)
                and isinstance(body.get("end_of_stream"), bool)
                and all(isinstance(t, dict) and "id" in t for t in body["tickets"])
            ):
                raise _malformed("tickets")
            following = body.get("after_cursor") or after
            # The last cursor is kept even at the end of the stream: the next sync starts there.
            done = body["end_of_stream"] or following == after
            yield Page(body["tickets"], {"after": following}, done=done)
            if done:
                return
            after = following

    def apply(self, *, org, connection, records: list[dict]) -> Applied:
        rows = {r["id"]: r for r in map(ticket_row, records)}  # one row per id, or ON CONFLICT hits it twice
        gone = [i for i, r in rows.items() if r["deleted"]]
        live = [r for r in rows.values() if not r["deleted"] and r["opened_at"] is not None]
        accounts = resolve_accounts(
            org=org,
            provider=PROVIDER,
            object_type=ORG_OBJECT,
            candidates=[Candidate(o) for o in sorted({r["organization"] for r in live} - {""})],
        )
        kept = [r for r in live if r["organization"] in accounts]
        lost = [
            Candidate(external_id=r["id"], name=r["subject"] or f"Ticket {r['id']}")
            for r in live
            if r["organization"] not in accounts
        ]
        record_unmatched(org=org, connection=connection, stream=self.name, candidates=lost)
        forget_unmatched(org=org, connection=connection, stream=self.name, external_ids=[r["id"] for r in kept] + gone)
        removed = Ticket.objects.filter(org=org, external_id__in=gone).delete()[0] if gone else 0
        created, updated = _upsert_tickets(org_id=org.pk, rows=kept, accounts=accounts) if kept else (0, 0)
        return Applied(created=created, updated=updated + removed, unmatched=len(lost))


def _upsert_tickets(*, org_id: int, rows: list[dict], accounts: dict[str, int]) -> tuple[int, int]:
    """INSERT ... ON CONFLICT by (org, external_id); rows equal to the stored ones are not written."""
    with db.cursor() as cursor:
        cursor.execute(
            """
            WITH i AS (
                SELECT * FROM unnest(%(ids)s::text[], %(accounts)s::bigint[], %(opened)s::timestamptz[],
                                     %(status)s::text[], %(priority)s::text[], %(solved)s::timestamptz[],
                                     %(csat)s::numeric[], %(subject)s::text[])
                    AS i(external_id, account_id, opened_at, status, priority, solved_at, csat, subject)
            ), upserted AS (
                INSERT INTO accounts_ticket AS cur
                    (org_id, external_id, account_id, opened_at, status, priority, solved_at, csat, subject)
                SELECT %(org)s, i.* FROM i
                ON CONFLICT (org_id, external_id) DO UPDATE SET
                    account_id = EXCLUDED.account_id, opened_at = EXCLUDED.opened_at, status = EXCLUDED.status,
                    priority = EXCLUDED.priority, csat = EXCLUDED.csat, subject = EXCLUDED.subject,
                    -- solved first at its first solved update; reopened clears it
                    solved_at = CASE WHEN EXCLUDED.solved_at IS NULL THEN NULL
                                     ELSE COALESCE(cur.solved_at, EXCLUDED.solved_at) END
                WHERE (cur.account_id, cur.opened_at, cur.status, cur.priority, cur.csat, cur.subject,
                       cur.solved_at IS NULL)
                      IS DISTINCT FROM (EXCLUDED.account_id, EXCLUDED.opened_at, EXCLUDED.status, EXCLUDED.priority,
                                        EXCLUDED.csat, EXCLUDED.subject, EXCLUDED.solved_at IS NULL)
                RETURNING cur.xmax = 0 AS created
            )
            SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
            """,
            {
                "org": org_id,
                "ids": [r["id"] for r in rows],
                "accounts": [accounts[r["organization"]] for r in rows],
                "opened": [r["opened_at"] for r in rows],
                "status": [r["status"] for r in rows],
                "priority": [r["priority"] for r in rows],
                "solved": [r["solved_at"] for r in rows],
                "csat": [r["csat"] for r in rows],
                "subject": [r["subject"] for r in rows],
            },
        )
        return cursor.fetchone()


# --- the connector ------------------------------------------------------------------------------


@register
class ZendeskConnector(Connector):
    provider = PROVIDER
    purpose = "Support: organizations matched to accounts, tickets with priority and satisfaction."
    credential_fields = [
        ConnectorField("email", "Agent e-mail", secret=False, help="The e-mail of a Zendesk admin."),
        ConnectorField(
            "api_token",
            "API token",
            help="Admin Center → Apps and integrations → Zendesk API → Add API token.",
        ),
    ]
    setting_fields = [
        ConnectorField("subdomain", "Subdomain", secret=False, help="acme for acme.zendesk.com.", required=True),
        ConnectorField(
            "min_interval_seconds",
            "Seconds between export requests",
            secret=False,
            required=False,
            help=f"Empty for {DEFAULT_MIN_INTERVAL:g} (Zendesk allows 10 export requests a minute).",
        ),
        ConnectorField("api_base", "API address", secret=False, required=False, help="Empty for Zendesk itself."),
    ]
    sleep = staticmethod(time.sleep)
    backoff_base = 0.5

    @property
    def subdomain(self) -> str:
        value = str((self.connection.settings or {}).get("subdomain") or "").strip().lower()
        return value.removeprefix("https://").split(".zendesk.com", 1)[0]

    @property
    def min_interval(self) -> float:
        value = (self.connection.settings or {}).get("min_interval_seconds")
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):  # empty or not a number: Zendesk's own limit
            return DEFAULT_MIN_INTERVAL

    def client(self, budget: RequestBudget) -> ProviderClient:
        base = (self.connection.settings or {}).get("api_base") or base_url(self.subdomain)
        return ProviderClient(
            provider="Zendesk",
            base_url=base.rstrip("/"),
            auth=(f"{self.secrets.get('email', '')}/token", self.secrets.get("api_token", "")),
            budget=budget,
            explain=explain_for(self.subdomain),
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        )

    def streams(self) -> list[Stream]:
        paced = _Paced(self)  # one pace for both exports: the limit is per account
        return [OrganizationsStream(self, paced), TicketsStream(self, paced)]

    def test(self, client: ProviderClient) -> str:
        body = client.json("GET", "/api/v2/users/me.json")
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, dict) or user.get("id") is None:
            raise ProviderError(ZENDESK_401, status=401)
        who = f"{user.get('name') or user.get('email')} ({user.get('email')}, {user.get('role')})"
        if user.get("role") != "admin":
            raise ProviderError(
                f"Connected to {self.subdomain}.zendesk.com as {who}, but the ticket export needs an admin: "
                "connect with the e-mail and API token of a Zendesk admin"
            )
        return f"Connected to Zendesk at {self.subdomain}.zendesk.com as {who}."
