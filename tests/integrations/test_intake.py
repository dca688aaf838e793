"""Usage intake: signed Segment-style calls, counted once, on the right local day and account."""

import base64
import itertools
import json
from collections import defaultdict
from datetime import date, datetime, timedelta

import pytest

from accounts.models import UsageDay
from csm.tenancy import tenant
from integrations.intake import signature_for
from integrations.models import IntakeMessage, ParkedEvent, UnmatchedRecord, UserAccount
from integrations.services import connection_save, mapping_save
from tests.factories import make_account, make_org

pytestmark = pytest.mark.django_db

SECRET = "acme-usage-secret-0123456789abcdef0123"
_messages = itertools.count(1)


@pytest.fixture(autouse=True)
def credential_key(settings):
    settings.VIGIL_CREDENTIAL_KEYS = base64.urlsafe_b64encode(b"k" * 32).decode()


def connect(org, secret: str = SECRET):
    with tenant(org):
        return connection_save(org=org, provider="segment", secrets={"shared_secret": secret})


def post(client, slug: str, call: str, payload=None, *, secret: str = SECRET, body: bytes | None = None):
    body = json.dumps(payload).encode() if body is None else body
    return client.post(
        f"/intake/{slug}/v1/{call}",
        data=body,
        content_type="application/json",
        HTTP_X_VIGIL_SIGNATURE=signature_for(secret=secret, body=body),
    )


def track(user: str, at: str, *, group: str | None = None, message: str | None = None) -> dict:
    call = {
        "type": "track",
        "event": "Report Viewed",
        "userId": user,
        "timestamp": at,
        "messageId": message or f"msg-{next(_messages)}",
    }
    if group:
        call["context"] = {"groupId": group}
    return call


def usage(org) -> dict:
    """{(account external id, date): (events, active users, seats used)}"""
    with tenant(org):
        rows = UsageDay.objects.filter(org=org).values_list(
            "account__external_id", "date", "events", "active_users", "seats_used"
        )
        return {(account, day): (events, active, seats) for account, day, events, active, seats in rows}


def counted_messages(org) -> int:
    with tenant(org):
        return IntakeMessage.objects.filter(org=org).count()


def test_signed_calls_are_counted_on_the_organizations_local_day(client):
    # UTC+14: 09:30Z is 23:30 on the 10th there, 10:30Z is already 00:30 on the 11th.
    org = make_org("kiri", timezone_name="Pacific/Kiritimati")
    make_account(org, external_id="acme")
    connect(org)
    batch = [
        track("u1", "2026-03-10T09:30:00Z", group="acme"),
        track("u1", "2026-03-10T10:30:00Z", group="acme"),
        track("u2", "2026-03-10T10:45:00.250Z", group="acme"),
        # Without an offset the time is already local: 23:59 on the 11th.
        track("u3", "2026-03-11T23:59:00", group="acme"),
    ]
    response = post(client, "kiri", "batch", {"batch": batch})
    assert response.status_code == 200
    assert response.json() == {"success": True, "received": 4, "accepted": 4, "duplicates": 0, "unmatched": 0}
    assert usage(org) == {
        ("acme", date(2026, 3, 10)): (1, 1, 1),
        ("acme", date(2026, 3, 11)): (3, 3, 3),
    }


def test_a_single_track_call_is_accepted_at_its_own_path(client):
    org = make_org("solo", timezone_name="Pacific/Pago_Pago")  # UTC-11
    make_account(org, external_id="acme")
    connect(org)
    call = track("u1", "2026-03-10T05:00:00Z", group="acme")
    del call["type"]  # the path says what the call is
    response = post(client, "solo", "track", call)
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert usage(org) == {("acme", date(2026, 3, 9)): (1, 1, 1)}


def test_a_bad_signature_is_refused_and_nothing_is_written(client):
    org = make_org("acme")
    make_account(org, external_id="acme")
    connect(org)
    payload = {"batch": [track("u1", "2026-03-10T12:00:00Z", group="acme")]}
    wrong = post(client, "acme", "batch", payload, secret="not-the-shared-secret-at-all-0123456789")
    body = json.dumps(payload).encode()
    unsigned = client.post("/intake/acme/v1/batch", data=body, content_type="application/json")
    tampered = client.post(
        "/intake/acme/v1/batch",
        data=body.replace(b"u1", b"u2"),
        content_type="application/json",
        HTTP_X_VIGIL_SIGNATURE=signature_for(secret=SECRET, body=body),
    )
    assert [r.status_code for r in (wrong, unsigned, tampered)] == [401, 401, 401]
    assert "X-Vigil-Signature" in wrong.json()["error"]
    assert usage(org) == {}
    assert counted_messages(org) == 0


def test_an_unknown_organization_gets_the_same_answer_as_a_bad_signature(client):
    org = make_org("acme")
    connect(org)
    make_org("quiet")  # exists, but never connected usage
    payload = {"batch": [track("u1", "2026-03-10T12:00:00Z")]}
    bad_signature = post(client, "acme", "batch", payload, secret="wrong-secret-wrong-secret-wrong-secret")
    unknown = post(client, "no-such-org", "batch", payload)
    unconnected = post(client, "quiet", "batch", payload)
    assert bad_signature.status_code == unknown.status_code == unconnected.status_code == 401
    assert bad_signature.content == unknown.content == unconnected.content


def test_another_organizations_secret_does_not_work_here(client):
    ours, theirs = make_org("ours"), make_org("theirs")
    make_account(ours, external_id="acme")
    make_account(theirs, external_id="acme")
    connect(ours, secret=SECRET)
    their_secret = "theirs-usage-secret-abcdef0123456789abcd"
    connect(theirs, secret=their_secret)
    payload = {"batch": [track("u1", "2026-03-10T12:00:00Z", group="acme")]}
    assert post(client, "ours", "batch", payload, secret=their_secret).status_code == 401
    assert usage(ours) == {}
    assert post(client, "theirs", "batch", payload, secret=their_secret).status_code == 200
    assert usage(theirs) == {("acme", date(2026, 3, 10)): (1, 1, 1)}
    assert usage(ours) == {}


def test_a_duplicate_message_is_acknowledged_but_not_counted(client):
    org = make_org("acme", timezone_name="UTC")
    make_account(org, external_id="acme")
    connect(org)
    first = track("u1", "2026-03-10T12:00:00Z", group="acme", message="m-1")
    again = post(client, "acme", "batch", {"batch": [first, first]})
    assert again.json() == {"success": True, "received": 2, "accepted": 1, "duplicates": 1, "unmatched": 0}
    before = usage(org)
    resent = post(client, "acme", "batch", {"batch": [first, track("u2", "2026-03-10T13:00:00Z", group="acme")]})
    assert resent.json() == {"success": True, "received": 2, "accepted": 1, "duplicates": 1, "unmatched": 0}
    assert before == {("acme", date(2026, 3, 10)): (1, 1, 1)}
    assert usage(org) == {("acme", date(2026, 3, 10)): (2, 2, 2)}
    assert counted_messages(org) == 2


def test_identify_and_group_then_track_without_a_group_lands_on_the_account(client):
    org = make_org("acme", timezone_name="UTC")
    make_account(org, external_id="crm-1", domain="acme.example")
    make_account(org, external_id="crm-2", domain="globex.example")
    connect(org)
    who = [
        {"type": "identify", "userId": "u1", "messageId": "i-1", "traits": {"email": "jo@acme.example"}},
        # The product's own workspace id, matched to the account through the website's domain.
        {
            "type": "group",
            "userId": "u1",
            "groupId": "ws-77",
            "messageId": "g-1",
            "timestamp": "2026-03-09T08:00:00Z",
            "traits": {"name": "Acme", "website": "https://www.acme.example/home"},
        },
    ]
    assert post(client, "acme", "batch", {"batch": who}).json()["unmatched"] == 0
    assert post(client, "acme", "track", track("u1", "2026-03-10T12:00:00Z")).json()["unmatched"] == 0
    assert usage(org) == {("crm-1", date(2026, 3, 10)): (1, 1, 1)}

    # A later group call moves the user; their next events follow.
    moved = {"type": "group", "userId": "u1", "groupId": "crm-2", "messageId": "g-2"}
    assert post(client, "acme", "group", moved).status_code == 200
    post(client, "acme", "track", track("u1", "2026-03-11T12:00:00Z"))
    assert usage(org)[("crm-2", date(2026, 3, 11))] == (1, 1, 1)
    with tenant(org):
        assert UserAccount.objects.get(org=org, user_id="u1").account.external_id == "crm-2"


def test_a_batch_of_1000_events_is_aggregated_in_a_bounded_number_of_queries(client, django_assert_max_num_queries):
    org = make_org("bulk", timezone_name="America/Los_Angeles")
    accounts = [make_account(org, external_id=f"acct-{n}").external_id for n in range(10)]
    connect(org)
    start = datetime(2026, 3, 1, 16, 0)  # UTC; 08:00 or 09:00 in Los Angeles
    batches = []
    for batch_number in range(2):
        calls = []
        for n in range(1000):
            user = f"user-{(n * 7 + batch_number) % 100}"
            account = accounts[int(user.split("-")[1]) % 10]
            at = start + timedelta(days=batch_number * 3 + n % 6, minutes=n)
            calls.append(track(user, at.isoformat() + "Z", group=account))
        batches.append(calls)
    for calls in batches:
        with django_assert_max_num_queries(20):
            response = post(client, "bulk", "batch", {"batch": calls})
        assert response.json()["accepted"] == 1000

    # The same figures computed by hand from the calls sent.
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("America/Los_Angeles")
    events, users = defaultdict(int), defaultdict(set)
    for call in itertools.chain(*batches):
        day = datetime.fromisoformat(call["timestamp"]).astimezone(tz).date()
        key = (call["context"]["groupId"], day)
        events[key] += 1
        users[key].add(call["userId"])

    def seats(account, day):
        window = [day - timedelta(days=k) for k in range(30)]
        return len(set().union(*(users.get((account, d), set()) for d in window)))

    expected = {key: (events[key], len(users[key]), seats(*key)) for key in events}
    assert sum(events.values()) == 2000
    assert usage(org) == expected


def test_a_late_event_raises_the_seats_of_the_days_after_it(client):
    org = make_org("late", timezone_name="UTC")
    make_account(org, external_id="acme")
    connect(org)
    post(client, "late", "batch", {"batch": [track("u1", "2026-03-10T12:00:00Z", group="acme")]})
    post(client, "late", "batch", {"batch": [track("u1", "2026-04-10T12:00:00Z", group="acme")]})
    # u2 used the product on 12 March, reported late: in the 30-day windows up to 10 April.
    post(client, "late", "batch", {"batch": [track("u2", "2026-03-12T12:00:00Z", group="acme")]})
    assert usage(org) == {
        ("acme", date(2026, 3, 10)): (1, 1, 1),
        ("acme", date(2026, 3, 12)): (1, 1, 2),
        ("acme", date(2026, 4, 10)): (1, 1, 2),
    }
    post(client, "late", "batch", {"batch": [track("u3", "2026-03-01T12:00:00Z", group="acme")]})
    # 1 March is out of 10 April's window (11 March – 10 April) but inside the others.
    assert usage(org)[("acme", date(2026, 3, 10))] == (1, 1, 2)
    assert usage(org)[("acme", date(2026, 3, 12))] == (1, 1, 3)
    assert usage(org)[("acme", date(2026, 4, 10))] == (1, 1, 2)


def test_events_matching_no_account_are_counted_and_listed(client):
    org = make_org("acme", timezone_name="UTC")
    account = make_account(org, external_id="crm-1")
    connection = connect(org)
    batch = [
        track("u1", "2026-03-10T12:00:00Z", group="ws-unknown"),
        track("u1", "2026-03-10T13:00:00Z", group="ws-unknown"),
        track("u9", "2026-03-10T12:00:00Z"),  # never named in a group call
        track("u2", "2026-03-10T12:00:00Z", group="crm-1"),
    ]
    response = post(client, "acme", "batch", {"batch": batch})
    assert response.json() == {"success": True, "received": 4, "accepted": 4, "duplicates": 0, "unmatched": 3}
    assert usage(org) == {("crm-1", date(2026, 3, 10)): (1, 1, 1)}
    with tenant(org):
        listed = set(
            UnmatchedRecord.objects.filter(org=org, connection=connection, stream="events").values_list(
                "external_id", flat=True
            )
        )
    assert listed == {"ws-unknown", "user:u9"}

    # The admin maps the workspace: it leaves the list, its earlier events count, and so do its next.
    with tenant(org):
        mapping_save(org=org, provider="segment", external_id="ws-unknown", account=account)
    assert usage(org) == {("crm-1", date(2026, 3, 10)): (3, 2, 2)}
    post(client, "acme", "batch", {"batch": [track("u1", "2026-03-10T14:00:00Z", group="ws-unknown")]})
    assert usage(org) == {("crm-1", date(2026, 3, 10)): (4, 2, 2)}
    with tenant(org):
        assert list(UnmatchedRecord.objects.filter(org=org).values_list("external_id", flat=True)) == ["user:u9"]
        assert list(ParkedEvent.objects.values_list("key", flat=True)) == ["user:u9"]  # the rest was counted


def test_mapping_a_group_through_the_page_counts_its_members_earlier_events_once(client):
    from django.urls import reverse

    from tests.factories import make_member

    org = make_org("acme", timezone_name="UTC")
    make_account(org, external_id="crm-1")
    connection = connect(org)
    joined = {
        "type": "group",
        "userId": "u1",
        "groupId": "ws-9",
        "messageId": "g-1",
        "timestamp": "2026-03-09T08:00:00Z",
    }
    batch = [
        joined,
        track("u1", "2026-03-09T09:00:00Z"),  # names no group: the user's group call links it
        track("u1", "2026-03-10T09:00:00Z", group="ws-9"),
        track("u2", "2026-03-10T10:00:00Z", group="ws-9"),
    ]
    assert post(client, "acme", "batch", {"batch": batch}).json()["unmatched"] == 4
    assert usage(org) == {}
    client.force_login(make_member(org, role="admin"))

    page = client.post(
        reverse("integration-unmatched", args=["acme", connection.pk]),
        {"external_id": "ws-9", "account_external_id": "crm-1"},
        follow=True,
    ).content.decode()

    assert "events of the last 90 days now count for it" in page
    assert usage(org) == {("crm-1", date(2026, 3, 9)): (1, 1, 1), ("crm-1", date(2026, 3, 10)): (2, 2, 2)}
    with tenant(org):
        assert UserAccount.objects.get(org=org, user_id="u1").account.external_id == "crm-1"
        assert not ParkedEvent.objects.exists() and not UnmatchedRecord.objects.exists()
    # Sent again, the same messages are duplicates: nothing is counted twice.
    again = post(client, "acme", "batch", {"batch": batch}).json()
    assert again["duplicates"] == 4 and usage(org)[("crm-1", date(2026, 3, 10))] == (2, 2, 2)


def test_mapping_a_user_who_names_no_group_counts_their_events_and_links_them(client):
    org = make_org("acme", timezone_name="UTC")
    account = make_account(org, external_id="crm-1")
    connect(org)
    post(client, "acme", "track", track("u9", "2026-03-10T12:00:00Z"))
    assert usage(org) == {}

    with tenant(org):
        mapping_save(org=org, provider="segment", external_id="user:u9", account=account)

    assert usage(org) == {("crm-1", date(2026, 3, 10)): (1, 1, 1)}
    post(client, "acme", "track", track("u9", "2026-03-11T12:00:00Z"))  # later calls find the link
    assert usage(org)[("crm-1", date(2026, 3, 11))] == (1, 1, 1)


def test_oversize_bodies_and_batches_are_refused_with_413(client):
    org = make_org("acme")
    connect(org)
    huge = b'{"batch": [' + b" " * (2 * 1024 * 1024) + b"]}"
    too_big = post(client, "acme", "batch", body=huge)
    assert too_big.status_code == 413 and "larger than 2 MB" in too_big.json()["error"]
    many = {"batch": [track(f"u{n}", "2026-03-10T12:00:00Z") for n in range(1001)]}
    too_many = post(client, "acme", "batch", many)
    assert too_many.status_code == 413 and "1,001 calls" in too_many.json()["error"]
    assert counted_messages(org) == 0


def test_malformed_json_and_invalid_calls_are_refused_with_400(client):
    org = make_org("acme")
    make_account(org, external_id="acme")
    connect(org)
    broken = post(client, "acme", "batch", body=b'{"batch": [{"type": "track",')
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    assert post(client, "acme", "batch", body=b"[]").json()["error"] == "The body must be a JSON object."

    good = track("u1", "2026-03-10T12:00:00Z", group="acme")
    batch = [
        good,
        {**good, "messageId": "m-2", "type": "page"},
        {**good, "messageId": None},
        {k: v for k, v in good.items() if k != "userId"} | {"messageId": "m-4"},
        {**good, "messageId": "m-5", "timestamp": "yesterday"},
        {"type": "group", "userId": "u1", "messageId": "m-6"},
    ]
    response = post(client, "acme", "batch", {"batch": batch})
    assert response.status_code == 400
    assert response.json()["error"] == "5 of 6 calls are invalid; nothing was accepted."
    assert response.json()["invalid"] == [
        {"index": 1, "reason": "type must be one of track, identify, group (got 'page')"},
        {"index": 2, "reason": "messageId is missing"},
        {"index": 3, "reason": "userId or anonymousId is missing"},
        {"index": 4, "reason": "timestamp 'yesterday' is not an ISO 8601 date-time"},
        {"index": 5, "reason": "a group call needs a groupId"},
    ]
    assert usage(org) == {} and counted_messages(org) == 0
