"""Reading an organization's frames: what SQL pre-computes equals what pandas computes from rows."""

from datetime import date, timedelta

import pandas as pd
import pytest

from accounts.models import Activity, UsageDay
from csm.tenancy import tenant
from health.scoring import summarize_activities, summarize_usage
from health.selectors import org_frames
from tests.factories import local_dt, make_account, make_activity, make_org, make_usage

pytestmark = pytest.mark.django_db

D = date(2026, 3, 16)


def test_the_usage_summary_read_in_sql_matches_the_pure_one():
    org = make_org(timezone_name="Asia/Tokyo")
    window_edges = make_account(org, name="Edges")
    for offset in (-14, -13, -5, 0, 1):  # D-14 is outside the 14-day window, D+1 after D
        make_usage(org, window_edges, day=D + timedelta(days=offset), active_users=20 + offset, seats_used=20 - offset)
    old_only = make_account(org, name="Old")
    make_usage(org, old_only, day=D - timedelta(days=40), active_users=3, seats_used=4)
    make_account(org, name="Never used")

    with tenant(org):
        frames = org_frames(org=org, day=D)
        rows = pd.DataFrame(
            list(UsageDay.objects.filter(org=org).values("account_id", "date", "active_users", "seats_used", "events"))
        )
    rows["date"] = pd.to_datetime(rows["date"])
    expected = summarize_usage(rows, day=D).sort_values("account_id").reset_index(drop=True)
    from_sql = frames.usage_summary.sort_values("account_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(from_sql, expected, check_dtype=False)
    edges = from_sql.set_index("account_id").loc[window_edges.pk]
    assert (edges["window_active_users"], edges["last_seats_used"]) == (7 + 15 + 20, 20)
    assert edges["last_date"] == pd.Timestamp(D)


def test_the_activity_summary_read_in_sql_matches_the_pure_one_at_local_midnight():
    org = make_org(timezone_name="America/Los_Angeles")
    busy = make_account(org, name="Busy")
    # D-29 at 00:30 local opens the 30-day window (08:30 UTC); D-30 at 23:30 local is outside it.
    make_activity(org, busy, external_id="IN-1", occurred_at=local_dt(org, D - timedelta(days=29), 0))
    make_activity(org, busy, external_id="OUT-1", occurred_at=local_dt(org, D - timedelta(days=30), 23))
    make_activity(org, busy, external_id="LAST-OF-D", occurred_at=local_dt(org, D, 23), actor_name="Jane Doe")
    make_activity(org, busy, external_id="AFTER-D", occurred_at=local_dt(org, D + timedelta(days=1), 0))
    make_activity(org, busy, external_id="VENDOR", occurred_at=local_dt(org, D, 23), actor_side="vendor")
    quiet = make_account(org, name="Quiet")
    make_activity(org, quiet, external_id="LONG-AGO", occurred_at=local_dt(org, D - timedelta(days=200)))
    make_activity(org, quiet, external_id="OURS", occurred_at=local_dt(org, D - timedelta(days=3)), actor_side="vendor")
    make_account(org, name="Silent")

    with tenant(org):
        frames = org_frames(org=org, day=D)
        rows = pd.DataFrame(
            list(
                Activity.objects.filter(org=org).values(
                    "account_id", "external_id", "occurred_at", "kind", "actor_side", "actor_name"
                )
            )
        )
    rows["occurred_at"] = pd.to_datetime(rows["occurred_at"], utc=True)
    expected = summarize_activities(rows, tz=org.tz, day=D).sort_values("account_id").reset_index(drop=True)
    from_sql = frames.activity_summary.sort_values("account_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(from_sql, expected, check_dtype=False)
    summary = from_sql.set_index("account_id")
    assert summary.loc[busy.pk, "client_touches"] == 2  # IN-1 and LAST-OF-D
    assert (summary.loc[busy.pk, "last_client_ref"], summary.loc[busy.pk, "last_client_actor"]) == (
        "LAST-OF-D",
        "Jane Doe",
    )
    assert summary.loc[quiet.pk, "last_client_ref"] == "LONG-AGO"
