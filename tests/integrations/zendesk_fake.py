"""A local Zendesk Support: organizations and tickets served through the incremental exports.

Shapes follow Zendesk's OpenAPI description (provider-specs/zendesk/oas.yaml): the cursor-based
ticket export {tickets, after_cursor, after_url, before_cursor, before_url, end_of_stream}, the
time-based organization export {organizations, count, end_time, next_page, end_of_stream},
TicketObject / OrganizationObject records and {"errors": [{code, title}]} error bodies. Every
change moves a fake clock one second on, so each export sees changes in order; Basic auth is
`{email}/token:{api_token}`.
"""

import base64
import itertools
import time
from datetime import UTC, datetime

from tests.integrations.fake_server import FakeProvider, FakeRequest, Reply

EMAIL = "admin@globo.example"
TOKEN = "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv"


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def errors_body(code: str, title: str) -> dict:
    return {"errors": [{"code": code, "title": title}]}


def encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{seq}.0||{seq}|".encode()).decode()


def decode(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(".", 1)[0])


class ZendeskFake(FakeProvider):
    def __init__(self, *, email: str = EMAIL, token: str = TOKEN, role: str = "admin"):
        super().__init__()
        self.email, self.token, self.role = email, token, role
        self.page_size = 1000  # Zendesk's largest export page; tests make it small
        self.clock = int(time.time()) - 10 * 86400
        self.organizations: dict[int, dict] = {}
        self.tickets: dict[int, dict] = {}
        self.seq: dict[int, int] = {}  # ticket id → the order of its last change
        self._seq = itertools.count(1)
        self._ids = itertools.count(1000)
        self.route("GET", "/api/v2/incremental/tickets/cursor.json")(self._guarded(self._tickets))
        self.route("GET", "/api/v2/incremental/organizations.json")(self._guarded(self._organizations))
        self.route("GET", "/api/v2/users/me.json")(self._guarded(self._me))

    # --- data -------------------------------------------------------------------------------------

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def add_organization(self, name: str, domains: list[str] | None = None) -> dict:
        oid, now = next(self._ids), self._tick()
        self.organizations[oid] = {
            "id": oid,
            "url": f"https://globo.zendesk.com/api/v2/organizations/{oid}.json",
            "name": name,
            "shared_tickets": False,
            "shared_comments": False,
            "external_id": None,
            "created_at": iso(now),
            "updated_at": iso(now),
            "domain_names": list(domains or []),
            "details": "",
            "notes": "",
            "group_id": None,
            "tags": [],
            "organization_fields": {},
        }
        return self.organizations[oid]

    def add_ticket(self, organization: dict | None, *, subject: str = "Printer on fire", **fields) -> dict:
        tid, now = next(self._ids), self._tick()
        self.tickets[tid] = {
            "id": tid,
            "url": f"https://globo.zendesk.com/api/v2/tickets/{tid}.json",
            "external_id": None,
            "type": "incident",
            "subject": subject,
            "raw_subject": subject,
            "description": "The fire is very colorful.",
            "priority": None,
            "status": "new",
            "recipient": "support@globo.example",
            "requester_id": 20978392,
            "submitter_id": 20978392,
            "assignee_id": None,
            "organization_id": organization["id"] if organization else None,
            "group_id": None,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "has_incidents": False,
            "is_public": True,
            "due_at": None,
            "tags": [],
            "custom_fields": [],
            "satisfaction_rating": None,
            "sharing_agreement_ids": [],
            "followup_ids": [],
            "brand_id": 1,
            "allow_channelback": False,
            "allow_attachments": True,
            "from_messaging_channel": False,
            "generated_timestamp": now,
            "created_at": iso(now),
            "updated_at": iso(now),
            "via": {"channel": "email", "source": {"from": {}, "to": {}, "rel": None}},
        }
        self.update_ticket(tid, _at=now, **fields)
        return self.tickets[tid]

    def update_ticket(self, tid: int, *, _at: int | None = None, **fields) -> dict:
        now = _at or self._tick()
        ticket = self.tickets[tid]
        ticket.update(fields, updated_at=iso(now), generated_timestamp=now)
        self.seq[tid] = next(self._seq)
        return ticket

    # --- answers ----------------------------------------------------------------------------------

    def _guarded(self, handler):
        def answer(request: FakeRequest) -> Reply:
            expected = "Basic " + base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return Reply(401, errors_body("InvalidCredentials", "Couldn't authenticate you"))
            if self.role != "admin" and "incremental" in request.path:
                return Reply(403, errors_body("Forbidden", "You do not have access to this page"))
            return handler(request)

        return answer

    def _size(self, request: FakeRequest) -> int:
        return min(int(request.query.get("per_page") or 1000), 1000, self.page_size)

    def _tickets(self, request: FakeRequest) -> Reply:
        if "cursor" in request.query:
            after = decode(request.query["cursor"])
            changed = [tid for tid, seq in self.seq.items() if seq > after]
        elif "start_time" in request.query:
            start = int(request.query["start_time"])
            changed = [tid for tid in self.seq if self.tickets[tid]["generated_timestamp"] >= start]
            after = 0
        else:
            return Reply(400, errors_body("InvalidValue", "start_time or cursor is required"))
        changed.sort(key=self.seq.get)
        page = changed[: self._size(request)]
        last = self.seq[page[-1]] if page else after
        base = "https://globo.zendesk.com/api/v2/incremental/tickets/cursor.json"
        return Reply(
            200,
            {
                "tickets": [self.tickets[tid] for tid in page],
                "after_cursor": encode(last),
                "after_url": f"{base}?cursor={encode(last)}",
                "before_cursor": None,
                "before_url": None,
                "end_of_stream": len(changed) <= len(page),
            },
        )

    def _organizations(self, request: FakeRequest) -> Reply:
        start = int(request.query.get("start_time", 0))
        changed = sorted(
            (o for o in self.organizations.values() if _ts(o["updated_at"]) >= start), key=lambda o: o["updated_at"]
        )
        page = changed[: self._size(request)]
        end = _ts(page[-1]["updated_at"]) if page else start
        # A time-based export's next page starts at the last one's time: that record comes again.
        return Reply(
            200,
            {
                "organizations": page,
                "count": len(page),
                "end_time": end,
                "next_page": f"https://globo.zendesk.com/api/v2/incremental/organizations.json?start_time={end}",
                "end_of_stream": len(changed) <= len(page),
            },
        )

    def _me(self, request: FakeRequest) -> Reply:
        return Reply(
            200,
            {
                "user": {
                    "id": 35436,
                    "name": "Ana Admin",
                    "email": self.email,
                    "role": self.role,
                    "active": True,
                    "created_at": iso(self.clock),
                    "updated_at": iso(self.clock),
                }
            },
        )


def _ts(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
