"""Product-usage intake: Segment-style `track`, `identify` and `group` calls pushed to us.

A request is verified (HMAC-SHA256 of the raw body with the organization's shared secret), parsed
and validated whole, then ingested in the request's transaction with a constant number of
set-based statements whatever the batch size: deduplicate by messageId, link users to accounts
from `group` calls, resolve group ids to accounts, then aggregate `track` calls into
UsageUserDay (who was active where, when) and UsageDay (events, active users, seats used).

Only `track` calls are activity: `identify` and `group` say who a user is and where they belong,
and client libraries send them on every page load, so counting them would inflate usage.
"""

import hashlib
import hmac
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import connection as db
from django.utils import timezone

from accounts.models import UsageDay
from integrations import credentials
from integrations.matching import Candidate, forget_unmatched, record_unmatched, resolve_accounts
from integrations.models import (
    Connection,
    ConnectionStatus,
    IntakeMessage,
    ParkedEvent,
    Provider,
    UsageUserDay,
    UserAccount,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BATCH_EVENTS = 1_000
CALLS = ("track", "identify", "group")
SIGNATURE_HEADER = "X-Vigil-Signature"
# The id columns (IntakeMessage.message_id, UsageUserDay.user_id, SourceRecord.external_id).
MAX_ID_LENGTH = 120
# Seats used on a day: distinct users active in the account over the 30 days ending that day.
SEAT_WINDOW_DAYS = 30
# A rejected batch lists this many invalid events; the count says how many there were in all.
MAX_LISTED_ERRORS = 100
STREAM = "events"
# Events that matched no account are kept this long, so that mapping their group counts them.
PARK_DAYS = 90
USER_KEY_PREFIX = "user:"  # an unmatched key naming a user, not a group
OBJECT_TYPE = "group"
# The organization as a sub-select, which the planner cannot see through. Given the literal, it
# estimates a new organization's rows from statistics that have not seen it yet (next to none) and
# walks the whole organization through its org_id index for every (account, day) or user looked
# up: 16 s for one batch of a fresh organization instead of ~50 ms. As a parameter it picks the
# (org, …) unique keys.
ORG_PARAMETER = "(SELECT %(org)s::bigint)"


class IntakeRejected(Exception):
    """The request cannot be accepted; `str()` and `invalid` are what the sender is told."""

    def __init__(self, message: str, *, status: int = 400, invalid: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.invalid = invalid or []

    def as_json(self) -> dict:
        body = {"success": False, "error": str(self)}
        if self.invalid:
            body["invalid"] = self.invalid[:MAX_LISTED_ERRORS]
            body["invalid_count"] = len(self.invalid)
        return body


@dataclass(slots=True)
class Event:
    type: str
    message_id: str
    user_id: str
    group_id: str  # '' when the call names no group
    day: date  # the event's date in the organization's time zone
    at: datetime
    domain: str = ""
    name: str = ""


@dataclass
class IntakeResult:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    unmatched: int = 0
    touched_days: int = 0

    def as_json(self) -> dict:
        return {
            "success": True,
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "unmatched": self.unmatched,
        }


# --- verification -------------------------------------------------------------------------------


def signature_for(*, secret: str, body: bytes) -> str:
    """The header value a sender puts in X-Vigil-Signature for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# Compared against when there is no secret (unknown organization, nothing connected), so those
# refusals run the same digest and comparison as a wrong signature.
_NO_SECRET = "no-secret-" + hashlib.sha256(b"vigil-intake").hexdigest()


def signature_valid(*, secret: str | None, body: bytes, header: str) -> bool:
    expected = signature_for(secret=secret or _NO_SECRET, body=body).encode()
    provided = header.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected, provided) and bool(secret)


def intake_connection(*, org) -> tuple[Connection | None, str | None]:
    """The organization's usage connection and its shared secret (the caller has entered the tenant)."""
    connection = (
        Connection.objects.filter(org=org, provider=Provider.SEGMENT)
        .exclude(status=ConnectionStatus.DISCONNECTED)
        .first()
    )
    if connection is None:
        return None, None
    try:
        secrets = credentials.decrypt(org_id=org.pk, provider=Provider.SEGMENT, blob=connection.credentials)
    except credentials.CredentialError:
        # Refused like a bad signature; the log says why so the operator can ask for a reconnect.
        log.warning("usage intake of org %s: the shared secret cannot be decrypted", org.pk)
        return connection, None
    return connection, secrets.get("shared_secret") or None


# --- parsing ------------------------------------------------------------------------------------


def payload_parse(*, call: str, body: bytes, tz: ZoneInfo, received_at: datetime) -> list[Event]:
    """Every event of the body, validated; any invalid event rejects the whole request."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise IntakeRejected(f"The body is not valid JSON ({error}).") from error
    if not isinstance(payload, dict):
        raise IntakeRejected("The body must be a JSON object.")
    if call == "batch":
        calls = payload.get("batch")
        if not isinstance(calls, list):
            raise IntakeRejected('A batch must be a JSON object with a "batch" list of calls.')
        if len(calls) > MAX_BATCH_EVENTS:
            raise IntakeRejected(
                f"The batch holds {len(calls):,} calls; send at most {MAX_BATCH_EVENTS:,} per request.", status=413
            )
        shared_context = payload.get("context") if isinstance(payload.get("context"), dict) else {}
    else:
        calls = [{**payload, "type": payload.get("type", call)}]
        shared_context = {}
    events, invalid = [], []
    for index, raw in enumerate(calls):
        try:
            events.append(_event(raw, call=call, shared_context=shared_context, tz=tz, received_at=received_at))
        except ValueError as error:
            invalid.append({"index": index, "reason": str(error)})
    if invalid:
        raise IntakeRejected(
            f"{len(invalid):,} of {len(calls):,} calls are invalid; nothing was accepted.", invalid=invalid
        )
    return events


def _identifier(raw: dict, key: str) -> str:
    value = raw.get(key)
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{key} must be a string")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"{key} is longer than {MAX_ID_LENGTH} characters")
    return text


def _timestamp(raw: dict, tz: ZoneInfo) -> datetime | None:
    for key in ("timestamp", "receivedAt"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{key} must be an ISO 8601 string")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{key} {value[:40]!r} is not an ISO 8601 date-time") from None
        # Like the CSV import: a time without an offset is in the organization's time zone.
        return moment if moment.tzinfo else moment.replace(tzinfo=tz)
    return None


def _event(raw, *, call: str, shared_context: dict, tz: ZoneInfo, received_at: datetime) -> Event:
    if not isinstance(raw, dict):
        raise ValueError("a call must be a JSON object")
    kind = raw.get("type")
    if kind is None:
        raise ValueError("type is missing")
    if kind not in CALLS:
        raise ValueError(f"type must be one of track, identify, group (got {str(kind)[:40]!r})")
    if call != "batch" and kind != call:
        raise ValueError(f"type {kind!r} was sent to /{call}")
    message_id = _identifier(raw, "messageId")
    if not message_id:
        raise ValueError("messageId is missing")
    user_id = _identifier(raw, "userId") or _identifier(raw, "anonymousId")
    if not user_id:
        raise ValueError("userId or anonymousId is missing")
    if kind == "track" and not (isinstance(raw.get("event"), str) and raw["event"]):
        raise ValueError("a track call needs an event name")
    context = raw.get("context")
    context = context if isinstance(context, dict) else {}
    group_id = _identifier(raw, "groupId") or _identifier(context, "groupId") or _identifier(shared_context, "groupId")
    if kind == "group" and not group_id:
        raise ValueError("a group call needs a groupId")
    moment = _timestamp(raw, tz) or received_at
    try:
        day = moment.astimezone(tz).date()
    except OverflowError:
        raise ValueError("timestamp is out of range") from None
    traits = raw.get("traits") if kind == "group" and isinstance(raw.get("traits"), dict) else {}
    domain = traits.get("website") or traits.get("domain") or ""
    name = traits.get("name") or ""
    return Event(
        type=kind,
        message_id=message_id,
        user_id=user_id,
        group_id=group_id,
        day=day,
        at=moment,
        domain=domain if isinstance(domain, str) else "",
        name=name if isinstance(name, str) else "",
    )


# --- ingestion ----------------------------------------------------------------------------------


@dataclass
class _Links:
    """Where each new event lands, and what matched nothing."""

    by_group: dict[str, int] = field(default_factory=dict)
    by_user: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, Candidate] = field(default_factory=dict)
    unmatched_events: int = 0
    parked: list[tuple[str, Event]] = field(default_factory=list)  # (unmatched key, event)


def events_ingest(*, org, connection: Connection, events: list[Event], received_at: datetime) -> IntakeResult:
    """Count new events into daily usage; duplicates (by messageId) are acknowledged, not counted.

    Runs in the caller's transaction with the tenant entered.
    """
    result = IntakeResult(received=len(events))
    _lock_ingestion(org)
    fresh = _claim_messages(org=org, events=events, received_at=received_at)
    result.accepted = len(fresh)
    result.duplicates = len(events) - len(fresh)
    if fresh:
        links = _link_accounts(org=org, connection=connection, events=fresh)
        result.unmatched = links.unmatched_events
        result.touched_days = _aggregate(org=org, events=fresh, links=links)
        _park(org=org, parked=links.parked, received_at=received_at)
    Connection.objects.filter(pk=connection.pk).update(last_success_at=received_at, last_error="")
    return result


def _lock_ingestion(org) -> None:
    """One ingestion per organization at a time, until the transaction ends: two batches counting
    distinct users of the same account and day concurrently would each miss the other's uncommitted
    users, and upserting overlapping days in different orders could deadlock."""
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended('vigil:intake', %s))", [org.pk])


def _claim_messages(*, org, events: list[Event], received_at: datetime) -> list[Event]:
    """The events not seen before: the first of each messageId here, and none stored already."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.message_id, event)
    with db.cursor() as cursor:
        # Sorted so concurrent inserts of overlapping ids take the index locks in one order.
        cursor.execute(
            f"""
            INSERT INTO {IntakeMessage._meta.db_table} (org_id, message_id, received_at)
            SELECT %s, m, %s FROM unnest(%s::text[]) AS m ORDER BY m
            ON CONFLICT (org_id, message_id) DO NOTHING
            RETURNING message_id
            """,
            [org.pk, received_at, list(first)],
        )
        claimed = {row[0] for row in cursor.fetchall()}
    return [event for message_id, event in first.items() if message_id in claimed]


def _link_accounts(*, org, connection: Connection, events: list[Event]) -> _Links:
    links = _Links()
    candidates: dict[str, Candidate] = {}
    for event in events:
        if event.group_id:
            known = candidates.get(event.group_id)
            if known is None or (event.domain and not known.domain):
                candidates[event.group_id] = Candidate(event.group_id, domain=event.domain, name=event.name)
    if candidates:
        links.by_group = resolve_accounts(
            org=org, provider=Provider.SEGMENT, object_type=OBJECT_TYPE, candidates=list(candidates.values())
        )

    # A user belongs to the account of their latest group call (by the call's own timestamp).
    latest: dict[str, tuple[datetime, int]] = {}
    for event in events:
        if event.type != "group":
            continue
        account_id = links.by_group.get(event.group_id)
        if account_id is None:
            links.unmatched[event.group_id] = candidates[event.group_id]
            links.unmatched_events += 1
            links.parked.append((event.group_id, event))
        elif event.user_id not in latest or latest[event.user_id][0] <= event.at:
            latest[event.user_id] = (event.at, account_id)
    if latest:
        _user_accounts_save(org=org, pairs={user: account for user, (_, account) in latest.items()})

    ungrouped = {event.user_id for event in events if event.type == "track" and not event.group_id}
    if ungrouped:
        with db.cursor() as cursor:
            # Through the (org, user) key: see ORG_PARAMETER.
            cursor.execute(
                f"SELECT user_id, account_id FROM {UserAccount._meta.db_table}"
                f" WHERE org_id = {ORG_PARAMETER} AND user_id = ANY(%(users)s::text[])",
                {"org": org.pk, "users": sorted(ungrouped)},
            )
            links.by_user = dict(cursor.fetchall())
    for event in events:
        if event.type != "track":
            continue
        if event.group_id:
            if event.group_id in links.by_group:
                continue
            key = event.group_id
            links.unmatched[key] = candidates[key]
        elif event.user_id in links.by_user:
            continue
        else:
            key = user_key(event.user_id)
            links.unmatched[key] = Candidate(key, name=f"User {event.user_id} (no group call names their account)")
        links.unmatched_events += 1
        links.parked.append((key, event))

    record_unmatched(org=org, connection=connection, stream=STREAM, candidates=list(links.unmatched.values()))
    # Users found through an earlier link left the list when that link was made.
    now_matching = list(links.by_group) + [user_key(user) for user in latest]
    forget_unmatched(org=org, connection=connection, stream=STREAM, external_ids=now_matching)
    return links


def user_key(user_id: str) -> str:
    """How a user whose calls name no group is listed among the unmatched records."""
    return f"{USER_KEY_PREFIX}{user_id}"[:MAX_ID_LENGTH]


def _park(*, org, parked: list[tuple[str, Event]], received_at: datetime) -> None:
    """Keep the events that matched nothing, and forget those kept longer than PARK_DAYS."""
    if not parked:
        return
    ParkedEvent.objects.bulk_create(
        [
            ParkedEvent(
                org=org,
                key=key,
                received_at=received_at,
                **asdict(replace(e, domain=e.domain[:200], name=e.name[:200])),  # the columns' widths
            )
            for key, e in parked
        ]
    )
    ParkedEvent.objects.filter(org=org, received_at__lt=received_at - timedelta(days=PARK_DAYS)).delete()


def parked_replay(*, org, key: str, account_id: int) -> None:
    """Count the events kept under `key` now that the admin has mapped it to an account. A group's
    users who sent calls naming no group come along. Runs in the caller's transaction with the tenant
    entered, after the mapping is saved."""
    connection, _ = intake_connection(org=org)
    if connection is None:
        return
    _lock_ingestion(org)
    if key.startswith(USER_KEY_PREFIX):
        _user_accounts_save(org=org, pairs={key.removeprefix(USER_KEY_PREFIX): account_id})
    taken = _take_parked(org=org, keys=[key])
    members = {event.user_id for event in taken if event.type == "group"}
    if members:
        taken += _take_parked(org=org, keys=[user_key(user) for user in members])
    if not taken:
        return
    taken.sort(key=lambda event: event.at)
    links = _link_accounts(org=org, connection=connection, events=taken)
    _aggregate(org=org, events=taken, links=links)
    _park(org=org, parked=links.parked, received_at=timezone.now())


def _take_parked(*, org, keys: list[str]) -> list[Event]:
    rows = ParkedEvent.objects.filter(org=org, key__in=keys)
    events = [Event(**{f.name: getattr(row, f.name) for f in fields(Event)}) for row in rows]
    rows.delete()
    return events


def _user_accounts_save(*, org, pairs: dict[str, int]) -> None:
    users = sorted(pairs)
    with db.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {UserAccount._meta.db_table} AS link (org_id, user_id, account_id)
            SELECT %s, u, a FROM unnest(%s::text[], %s::bigint[]) AS l(u, a)
            ON CONFLICT (org_id, user_id) DO UPDATE SET account_id = EXCLUDED.account_id
            WHERE link.account_id <> EXCLUDED.account_id
            """,
            [org.pk, users, [pairs[user] for user in users]],
        )


# Who was active where and when; only a user new to an (account, day) changes that day's counts.
_USER_DAYS_SQL = """
WITH added AS (
    INSERT INTO {user_days} (org_id, account_id, date, user_id)
    SELECT DISTINCT %(org)s, a, d, u
    FROM unnest(%(accounts)s::bigint[], %(days)s::date[], %(users)s::text[]) AS e(a, d, u)
    ORDER BY 2, 3, 4
    ON CONFLICT (org_id, account_id, date, user_id) DO NOTHING
    RETURNING account_id, date
)
SELECT DISTINCT account_id, date FROM added
"""

# Each touched (account, day): events add up. Its active users and seats are recounted from the
# user-days by a LATERAL index walk over the window only when a user was new to it; otherwise they
# are the stored figures, read through the unique key (a busy day's later events cost no recount).
_USAGE_SQL = """
INSERT INTO {usage_days} AS ud (org_id, account_id, date, events, active_users, seats_used)
SELECT %(org)s, c.account_id, c.date, c.events,
    coalesce(kept.active_users, window_users.active_users), coalesce(kept.seats_used, window_users.seats_used)
FROM unnest(%(accounts)s::bigint[], %(days)s::date[], %(events)s::int[], %(changed)s::bool[])
    AS c(account_id, date, events, changed)
LEFT JOIN LATERAL (
    SELECT x.active_users, x.seats_used FROM {usage_days} x
    WHERE NOT c.changed AND x.org_id = {org} AND x.account_id = c.account_id AND x.date = c.date
    OFFSET 0
) kept ON true
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE u.date = c.date) AS active_users, count(DISTINCT u.user_id) AS seats_used
    FROM {user_days} u
    WHERE kept.seats_used IS NULL
      AND u.org_id = {org} AND u.account_id = c.account_id AND u.date BETWEEN c.date - %(window)s AND c.date
) window_users
ORDER BY c.account_id, c.date
ON CONFLICT (org_id, account_id, date) DO UPDATE SET
    events = ud.events + EXCLUDED.events,
    active_users = EXCLUDED.active_users,
    seats_used = EXCLUDED.seats_used
"""

# A user new on day D also counts in the seats of the 29 days after D, for those that already exist
# (events arriving late or out of order; in-order streams find none). Written as an upsert of rows
# just found, so each row is reached through the unique key, never through a plan over the
# organization's history; OFFSET 0 keeps the walk from being flattened into such a join. Rows
# whose seats did not change are not rewritten.
_LATER_SEATS_SQL = """
INSERT INTO {usage_days} AS ud (org_id, account_id, date, events, active_users, seats_used)
SELECT %(org)s, later.account_id, later.date, 0, 0, window_users.seats_used
FROM (
    SELECT DISTINCT after.account_id, after.date
    FROM unnest(%(accounts)s::bigint[], %(days)s::date[]) AS c(a, d)
    CROSS JOIN LATERAL (
        SELECT x.account_id, x.date FROM {usage_days} x
        WHERE x.org_id = {org} AND x.account_id = c.a AND x.date BETWEEN c.d + 1 AND c.d + %(window)s
        OFFSET 0
    ) after
) later
CROSS JOIN LATERAL (
    SELECT count(DISTINCT u.user_id) AS seats_used
    FROM {user_days} u
    WHERE u.org_id = {org} AND u.account_id = later.account_id
      AND u.date BETWEEN later.date - %(window)s AND later.date
) window_users
ORDER BY later.account_id, later.date
ON CONFLICT (org_id, account_id, date) DO UPDATE SET seats_used = EXCLUDED.seats_used
WHERE ud.seats_used <> EXCLUDED.seats_used
"""


def _aggregate(*, org, events: list[Event], links: _Links) -> int:
    """Fold the matched track calls into UsageUserDay and UsageDay; returns the (account, day) pairs touched."""
    accounts, days, users = [], [], []
    for event in events:
        if event.type != "track":
            continue
        account_id = links.by_group.get(event.group_id) if event.group_id else links.by_user.get(event.user_id)
        if account_id is not None:
            accounts.append(account_id)
            days.append(event.day)
            users.append(event.user_id)
    if not accounts:
        return 0
    tables = {
        "user_days": UsageUserDay._meta.db_table,
        "usage_days": UsageDay._meta.db_table,
        "org": ORG_PARAMETER,
    }
    window = SEAT_WINDOW_DAYS - 1
    params = {"org": org.pk, "accounts": accounts, "days": days, "users": users, "window": window}
    with db.cursor() as cursor:
        cursor.execute(_USER_DAYS_SQL.format(**tables), params)
        changed = sorted(cursor.fetchall())
        new_users = set(changed)
        counts = Counter(zip(accounts, days, strict=True))
        pairs = sorted(counts)
        cursor.execute(
            _USAGE_SQL.format(**tables),
            {
                "org": org.pk,
                "accounts": [account_id for account_id, _ in pairs],
                "days": [day for _, day in pairs],
                "events": [counts[pair] for pair in pairs],
                "changed": [pair in new_users for pair in pairs],
                "window": window,
            },
        )
        if changed:
            cursor.execute(
                _LATER_SEATS_SQL.format(**tables),
                {
                    "org": org.pk,
                    "accounts": [account_id for account_id, _ in changed],
                    "days": [day for _, day in changed],
                    "window": window,
                },
            )
    return len(pairs)
