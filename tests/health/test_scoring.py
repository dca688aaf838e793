"""The health formula: components, missing and stale inputs, gates, bands and deltas."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from health.scoring import Frames, HealthConfig, localize, score_accounts

TZ = ZoneInfo("Asia/Tokyo")
D = date(2026, 3, 16)


def days(n: int) -> date:
    return D + timedelta(days=n)


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def account(account_id: int = 1, **fields) -> dict:
    return {
        "account_id": account_id,
        "external_id": f"A-{account_id}",
        "name": f"Customer {account_id}",
        "arr": 50_000.0,
        "stage": "steady",
        "seat_limit": 10,
        "created_at": at(date(2025, 1, 1)),
        **fields,
    }


def usage_days(account_id: int, last: date, count: int, users: int = 10, events: int = 100) -> list[dict]:
    return [
        {
            "account_id": account_id,
            "date": last - timedelta(days=i),
            "active_users": users,
            "seats_used": users,
            "events": events,
        }
        for i in range(count)
    ]


def score(config: HealthConfig | None = None, previous: pd.DataFrame | None = None, **sources) -> dict:
    frames = localize(Frames.build(**sources), tz=TZ, day=D)
    scores = score_accounts(frames, day=D, config=config or HealthConfig(), previous=previous)
    return {row["account_id"]: row for row in scores.to_dict("records")}


def test_full_usage_alone_scores_the_usage_component_and_says_the_rest_is_missing():
    result = score(accounts=[account()], usage=usage_days(1, D, 14))[1]
    # full adoption (10 of 10 seats) and half depth (100 events a day): 0.7 x 100 + 0.3 x 50
    assert result["components"] == {"usage": 85.0}
    assert result["score"] == result["components"]["usage"]
    assert result["band"] == "green"
    assert result["component_dates"]["usage"] == "2026-03-16"
    assert result["excluded"] == {
        "engagement": "no data",
        "support": "no data",
        "billing": "no data",
        "onboarding": "no data",
    }
    assert result["gate"] == ""


def test_stale_component_is_left_out_and_its_weight_spread_over_the_others():
    sources = dict(
        accounts=[account(1), account(2)],
        usage=usage_days(1, days(-7), 14) + usage_days(2, days(-8), 14),
        activities=[
            {
                "account_id": a,
                "external_id": f"E{a}",
                "occurred_at": at(days(-1)),
                "kind": "email",
                "actor_side": "client",
            }
            for a in (1, 2)
        ],
    )
    result = score(**sources)
    # Seven days old is still fresh; eight is stale.
    assert set(result[1]["components"]) == {"usage", "engagement"}
    assert set(result[2]["components"]) == {"engagement"}
    assert result[2]["excluded"]["usage"] == "stale since 2026-03-08"
    assert result[2]["score"] == result[2]["components"]["engagement"]
    usage, engagement = result[1]["components"]["usage"], result[1]["components"]["engagement"]
    assert result[1]["score"] == pytest.approx((30 * usage + 25 * engagement) / 55, abs=0.06)


def test_stale_limit_is_per_model():
    sources = dict(accounts=[account()], usage=usage_days(1, days(-8), 14))
    assert score(**sources) == {}  # nothing fresh: no score rather than a made-up one
    assert score(HealthConfig(stale_after_days=8), **sources)[1]["components"].keys() == {"usage"}


def test_data_dated_after_d_never_counts():
    result = score(
        accounts=[account()],
        usage=usage_days(1, days(-10), 5) + usage_days(1, days(3), 3),
        tickets=[
            {
                "account_id": 1,
                "external_id": "K",
                "opened_at": at(days(1), 0, 5),
                "status": "open",
                "priority": "urgent",
            }
        ],
    )
    assert result == {}


def test_an_invoice_more_than_thirty_days_past_due_caps_the_score_in_red():
    sources = dict(
        accounts=[account(1), account(2)],
        usage=usage_days(1, D, 14) + usage_days(2, D, 14),
        invoices=[
            {
                "account_id": 1,
                "external_id": "INV-1",
                "issued_at": days(-60),
                "status": "past_due",
                "due_date": days(-31),
                "amount": 100,
            },
            {
                "account_id": 2,
                "external_id": "INV-2",
                "issued_at": days(-60),
                "status": "past_due",
                "due_date": days(-30),
                "amount": 100,
            },
        ],
    )
    result = score(**sources)
    assert result[1]["gate"] == "invoice INV-1 is 31 days past due"
    assert result[1]["score"] == 39.0 and result[1]["band"] == "red"
    assert result[2]["gate"] == "" and result[2]["band"] != "red"
    assert result[2]["components"]["billing"] < 100


def test_the_champion_gone_gate_needs_no_other_active_champion():
    def contact(account_id, external_id, left_on=None):
        return {
            "account_id": account_id,
            "external_id": external_id,
            "name": f"Pat {external_id}",
            "is_champion": True,
            "left_on": left_on,
        }

    result = score(
        accounts=[account(1), account(2), account(3)],
        usage=usage_days(1, D, 14) + usage_days(2, D, 14) + usage_days(3, D, 14),
        contacts=[
            contact(1, "C1", left_on=days(0)),
            contact(2, "C2", left_on=days(-5)),
            contact(2, "C3"),  # another champion remains
            contact(3, "C4", left_on=days(1)),  # leaves after D
        ],
    )
    assert result[1]["gate"] == "champion Pat C1 left on 2026-03-16" and result[1]["score"] == 39.0
    assert result[2]["gate"] == "" and result[3]["gate"] == ""


def test_delta_is_against_the_previous_days_stored_score_and_bands_follow_the_model():
    previous = pd.DataFrame([{"account_id": 1, "score": 90.0}])
    config = HealthConfig(bands={"green": 95, "yellow": 50})
    result = score(
        config, previous, accounts=[account(), account(2)], usage=usage_days(1, D, 14) + usage_days(2, D, 14)
    )
    assert result[1]["delta"] == pytest.approx(result[1]["score"] - 90.0)
    assert result[1]["band"] == "yellow"
    assert pd.isna(result[2]["delta"])


def test_open_tickets_and_outstanding_invoices_keep_their_components_current():
    result = score(
        accounts=[account()],
        tickets=[
            {"account_id": 1, "external_id": "K", "opened_at": at(days(-40)), "status": "open", "priority": "urgent"}
        ],
        invoices=[{"account_id": 1, "external_id": "I", "issued_at": days(-40), "status": "open", "due_date": days(5)}],
    )[1]
    assert result["components"] == {"support": 70.0, "billing": 100.0}
    assert result["component_dates"]["support"] == "2026-03-16"
