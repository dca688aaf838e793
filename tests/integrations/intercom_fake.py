"""A local Intercom (API version 2.14): companies by scroll, conversations by search, /me, errors.

Shapes follow provider-specs/intercom/api.intercom.io.2.14.yaml: `company_scroll`
({type: "list", data, pages, total_count, scroll_param}), `conversation_list`
({type: "conversation.list", conversations, total_count, pages: cursor_pages with
next.starting_after}), `admin_with_app` for /me and `error` ({type: "error.list", request_id,
errors: [{code, message}]}). The scroll keeps Intercom's rules: one open scroll per workspace, a
scroll idle for `scroll_idle` seconds expires, and the empty page at its end closes it.
"""

import base64
import itertools
import json
import time
import uuid

from tests.integrations.fake_server import FakeProvider, FakeRequest, Reply

TOKEN = "dG9rOmZha2VfaW50ZXJjb21fYWNjZXNzX3Rva2Vu"
APP_NAME = "Globo Support"


def error_body(code: str, message: str) -> dict:
    return {"type": "error.list", "request_id": str(uuid.uuid4()), "errors": [{"code": code, "message": message}]}


class IntercomFake(FakeProvider):
    def __init__(self, *, scroll_page: int = 50, scroll_idle: float = 60.0):
        super().__init__()
        self.companies: list[dict] = []
        self.conversations: dict[str, dict] = {}
        self.scroll_page = scroll_page
        self.scroll_idle = scroll_idle
        self.scroll: dict | None = None  # {param, position, used}
        self._ids = itertools.count(1000)
        self._clock = itertools.count(int(time.time()) - 30 * 86400)
        self.route("GET", "/me")(self._guarded(self._me))
        self.route("GET", "/companies/scroll")(self._guarded(self._scroll))
        self.route("POST", "/conversations/search")(self._guarded(self._search))

    # --- data -------------------------------------------------------------------------------------

    def add_company(self, *, name: str, website: str = "", company_id: str | None = None) -> dict:
        created = next(self._clock)
        company = {
            "type": "company",
            "id": f"{next(self._ids):024x}",
            "name": name,
            "app_id": "this_is_an_id_that_should_be_at_least_40",
            "plan": {},
            "company_id": company_id if company_id is not None else f"remote_{name.lower().replace(' ', '_')}",
            "remote_created_at": created,
            "created_at": created,
            "updated_at": created,
            "last_request_at": created,
            "size": 0,
            "website": website,
            "industry": "",
            "monthly_spend": 0,
            "session_count": 0,
            "user_count": 1,
            "custom_attributes": {},
            "tags": {"type": "tag.list", "tags": []},
            "segments": {"type": "segment.list", "segments": []},
        }
        self.companies.append(company)
        return company

    def add_conversation(
        self,
        *,
        author_type: str = "user",
        email: str = "",
        name: str = "Jane",
        subject: str = "",
        title: str | None = None,
        state: str = "open",
        priority: str = "not_priority",
        at: int | None = None,
        last_contact_reply_at: int | None = None,
        author_company_id: str | None = None,
        contact_ids: tuple[str, ...] = (),
    ) -> dict:
        created = at if at is not None else next(self._clock)
        conversation_id = str(next(self._ids))
        author = {"type": author_type, "id": f"{next(self._ids):024x}", "name": name, "email": email}
        if author_type in ("user", "lead") and not contact_ids:
            contact_ids = (author["id"],)  # the contact who wrote is the conversation's contact
        if author_company_id:
            author["company_id"] = author_company_id
        conversation = {
            "type": "conversation",
            "id": conversation_id,
            "title": title,
            "created_at": created,
            "updated_at": created,
            "waiting_since": None,
            "snoozed_until": None,
            "open": state != "closed",
            "state": state,
            "read": False,
            "priority": priority,
            "admin_assignee_id": None,
            "team_assignee_id": None,
            "tags": {"type": "tag.list", "tags": []},
            "conversation_rating": None,
            "source": {
                "type": "conversation",
                "id": str(next(self._ids)),
                "delivered_as": "customer_initiated" if author_type in ("user", "lead") else "admin_initiated",
                "subject": subject,
                "body": "<p>Hello</p>",
                "author": author,
                "attachments": [],
                "url": None,
                "redacted": False,
            },
            "contacts": {
                "type": "contact.list",
                "contacts": [{"type": "contact", "id": c, "external_id": None} for c in contact_ids],
            },
            "teammates": {"type": "admin.list", "teammates": []},
            "custom_attributes": {},
            "first_contact_reply": None,
            "sla_applied": None,
            # Intercom leaves out the statistics that have not happened yet.
            "statistics": {
                key: value
                for key, value in {
                    "type": "conversation_statistics",
                    "first_contact_reply_at": last_contact_reply_at,
                    "last_contact_reply_at": last_contact_reply_at,
                    "last_close_at": created + 60 if state == "closed" else None,
                    "count_reopens": 0,
                    "count_assignments": 0,
                    "count_conversation_parts": 1,
                }.items()
                if value is not None
            },
            "linked_objects": {"type": "list", "data": [], "total_count": 0, "has_more": False},
            "ai_agent_participated": False,
        }
        self.conversations[conversation_id] = conversation
        return conversation

    def touch(self, conversation_id: str, *, at: int, **changes) -> dict:
        conversation = self.conversations[conversation_id]
        conversation.update(changes, updated_at=at)
        if "state" in changes:
            conversation["open"] = changes["state"] != "closed"
        return conversation

    def expire(self) -> bool:
        """The open scroll expires now (as after a minute idle); True so it can sit in a fault's `when`."""
        self.scroll = None
        return True

    # --- endpoints --------------------------------------------------------------------------------

    def _guarded(self, handler):
        def guarded(request: FakeRequest) -> Reply:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return Reply(401, error_body("unauthorized", "Access Token Invalid"))
            return handler(request)

        return guarded

    def _me(self, request: FakeRequest) -> Reply:
        return Reply(
            200,
            {
                "type": "admin",
                "id": "991267459",
                "email": "admin@globo.example",
                "name": "Ana Admin",
                "email_verified": True,
                "app": {
                    "type": "app",
                    "id_code": "abc123",
                    "name": APP_NAME,
                    "created_at": 1734537243,
                    "identity_verification": False,
                    "timezone": "Europe/London",
                    "region": "EU",
                },
                "avatar": {"type": "avatar", "image_url": None},
                "has_inbox_seat": True,
            },
        )

    def _scroll(self, request: FakeRequest) -> Reply:
        now = time.monotonic()
        if self.scroll and now - self.scroll["used"] > self.scroll_idle:
            self.scroll = None  # expired while idle
        param = request.query.get("scroll_param")
        if param:
            if not self.scroll or self.scroll["param"] != param:
                return Reply(404, error_body("scroll_param_not_found", "scroll expired: restart the scroll"))
        else:
            if self.scroll:
                return Reply(400, error_body("scroll_exists", "scroll already exists for this workspace"))
            self.scroll = {"param": str(uuid.uuid4()), "position": 0, "used": now}
        start = self.scroll["position"]
        data = self.companies[start : start + self.scroll_page]
        body = {
            "type": "list",
            "data": data,
            "pages": None,
            "total_count": None,
            "scroll_param": self.scroll["param"],
        }
        if data:
            self.scroll.update(position=start + len(data), used=now)
        else:
            self.scroll = None  # the end: the scroll is closed
        return Reply(200, body)

    def _search(self, request: FakeRequest) -> Reply:
        search = request.json()
        query = search["query"]
        assert (query["field"], query["operator"]) == ("updated_at", ">"), query
        paging = search.get("pagination") or {}
        per_page = min(int(paging.get("per_page") or 20), 150)
        matching = sorted(
            (c for c in self.conversations.values() if c["updated_at"] > int(query["value"])),
            key=lambda c: (c["updated_at"], int(c["id"])),
        )
        position = 0
        if paging.get("starting_after"):
            try:
                position = json.loads(base64.b64decode(paging["starting_after"]))["offset"]
            except ValueError:
                return Reply(400, error_body("parameter_invalid", "starting_after is invalid"))
        page = matching[position : position + per_page]
        total_pages = max(1, -(-len(matching) // per_page))
        pages = {"type": "pages", "page": position // per_page + 1, "per_page": per_page, "total_pages": total_pages}
        if position + per_page < len(matching):
            token = base64.b64encode(json.dumps({"offset": position + per_page}).encode()).decode()
            pages["next"] = {"per_page": per_page, "starting_after": token}
        return Reply(
            200,
            {"type": "conversation.list", "pages": pages, "total_count": len(matching), "conversations": page},
        )
