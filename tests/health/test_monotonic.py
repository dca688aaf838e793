"""Properties: more usage, fewer open urgent tickets or a paid invoice never lower a score."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from health.scoring import Frames, HealthConfig, localize, score_accounts

TZ = ZoneInfo("America/Los_Angeles")
D = date(2026, 3, 16)
CONFIG = HealthConfig()


def at(offset: int, hour: int = 12) -> datetime:
    return datetime.combine(D - timedelta(days=offset), time(hour), tzinfo=TZ)


usage_rows = st.dictionaries(
    keys=st.integers(0, 20),  # days before D
    values=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 400)),
    max_size=12,
)
tickets = st.lists(
    st.tuples(
        st.integers(0, 60),  # opened, days before D
        st.sampled_from(["urgent", "high", "normal", "low"]),
        st.booleans(),  # still open
    ),
    max_size=6,
)
invoices = st.lists(
    st.tuples(
        st.integers(0, 90),  # issued, days before D
        st.sampled_from(["open", "past_due", "uncollectible", "paid"]),
        st.integers(-20, 45),  # due, days after issue
    ),
    max_size=5,
)
activities = st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["client", "vendor"])), max_size=5)
tasks = st.lists(
    st.tuples(st.sampled_from(["todo", "blocked", "done"]), st.integers(-10, 30)),  # status, due days before D
    max_size=5,
)


@st.composite
def scenarios(draw) -> dict:
    return {
        "seat_limit": draw(st.one_of(st.none(), st.integers(1, 50))),
        "usage": draw(usage_rows),
        "tickets": draw(tickets),
        "invoices": draw(invoices),
        "activities": draw(activities),
        "tasks": draw(tasks),
        "champion_left": draw(st.one_of(st.none(), st.integers(0, 10))),
    }


def build(scenario: dict) -> Frames:
    return Frames.build(
        accounts=[
            {
                "account_id": 1,
                "external_id": "A",
                "name": "Acme",
                "stage": "steady",
                "seat_limit": scenario["seat_limit"],
                "created_at": at(400),
            }
        ],
        usage=[
            {
                "account_id": 1,
                "date": D - timedelta(days=offset),
                "active_users": users,
                "seats_used": seats,
                "events": events,
            }
            for offset, (users, seats, events) in scenario["usage"].items()
        ],
        tickets=[
            {
                "account_id": 1,
                "external_id": f"K{i}",
                "opened_at": at(opened),
                "priority": priority,
                "status": "open" if state is True else "solved",
                "solved_at": _solved_at(state, opened),
            }
            for i, (opened, priority, state) in enumerate(scenario["tickets"])
        ],
        invoices=[
            {
                "account_id": 1,
                "external_id": f"I{i}",
                "issued_at": D - timedelta(days=issued),
                "status": "paid" if status == "paid_today" else status,
                "due_date": D - timedelta(days=issued - due),
                "amount": 100.0,
                "paid_at": _paid_at(status, issued),
            }
            for i, (issued, status, due) in enumerate(scenario["invoices"])
        ],
        activities=[
            {"account_id": 1, "external_id": f"E{i}", "occurred_at": at(offset), "kind": "email", "actor_side": side}
            for i, (offset, side) in enumerate(scenario["activities"])
        ],
        tasks=[
            {
                "account_id": 1,
                "external_id": f"T{i}",
                "title": "t",
                "owner_side": "client",
                "status": status,
                "due_date": D - timedelta(days=due),
                "created_at": at(60),
                "completed_at": at(max(due, 0)) if status == "done" else None,
            }
            for i, (status, due) in enumerate(scenario["tasks"])
        ],
        contacts=[]
        if scenario["champion_left"] is None
        else [
            {
                "account_id": 1,
                "external_id": "C",
                "name": "Pat",
                "is_champion": True,
                "left_on": D - timedelta(days=scenario["champion_left"]),
            }
        ],
    )


def _solved_at(state, opened: int):
    # True: still open; False: solved the evening it was opened; "solved_today": solved on D.
    return None if state is True else at(0, 18) if state == "solved_today" else at(opened, 18)


def _paid_at(status: str, issued: int):
    return at(0, 18) if status == "paid_today" else at(max(issued - 3, 0)) if status == "paid" else None


def score_of(scenario: dict) -> float | None:
    scores = score_accounts(localize(build(scenario), tz=TZ, day=D), day=D, config=CONFIG)
    return None if scores.empty else float(scores["score"].iloc[0])


def assert_not_lower(before: dict, after: dict) -> None:
    old, new = score_of(before), score_of(after)
    if old is None:
        return
    assert new is not None and new >= old, (old, new)


common = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(scenarios(), st.data())
def test_more_usage_never_lowers_the_score(scenario, data):
    more = dict(scenario, usage=dict(scenario["usage"]))
    for offset, (users, seats, events) in scenario["usage"].items():
        extra = data.draw(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 300)))
        more["usage"][offset] = (users + extra[0], seats + extra[1], events + extra[2])
    if scenario["usage"]:
        # A day of usage more, no later than the newest day already there.
        newest = min(scenario["usage"])
        extra_day = data.draw(st.integers(newest, 20))
        if extra_day not in more["usage"]:
            more["usage"][extra_day] = data.draw(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 400)))
    assert_not_lower(scenario, more)


@common
@given(scenarios(), st.data())
def test_fewer_open_urgent_tickets_never_lower_the_score(scenario, data):
    open_urgent = [i for i, (_, priority, state) in enumerate(scenario["tickets"]) if priority == "urgent" and state]
    if not open_urgent:
        scenario["tickets"].append((data.draw(st.integers(0, 60)), "urgent", True))
        open_urgent = [len(scenario["tickets"]) - 1]
    index = data.draw(st.sampled_from(open_urgent))
    opened = scenario["tickets"][index][0]
    fewer = dict(scenario, tickets=list(scenario["tickets"]))
    # Solved today, or downgraded: either way one open urgent ticket less on D.
    fewer["tickets"][index] = data.draw(st.sampled_from([(opened, "urgent", "solved_today"), (opened, "high", True)]))
    assert_not_lower(scenario, fewer)


@common
@given(scenarios(), st.data())
def test_paying_an_invoice_never_lowers_the_score(scenario, data):
    unpaid = [i for i, (_, status, _) in enumerate(scenario["invoices"]) if status != "paid"]
    if not unpaid:
        scenario["invoices"].append((data.draw(st.integers(0, 90)), "past_due", data.draw(st.integers(-20, 45))))
        unpaid = [len(scenario["invoices"]) - 1]
    index = data.draw(st.sampled_from(unpaid))
    issued, _, due = scenario["invoices"][index]
    paid = dict(scenario, invoices=list(scenario["invoices"]))
    paid["invoices"][index] = (issued, "paid_today", due)
    assert_not_lower(scenario, paid)
