"""Reading an organization's frames: what SQL pre-computes equals what pandas computes from rows."""

from datetime import date, timedelta

import pandas as pd
import pytest

from accounts.models import UsageDay
from csm.tenancy import tenant
from health.scoring import summarize_usage
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


def test_activity_windows_follow_local_midnight_and_stop_at_the_end_of_d():
    org = make_org(timezone_name="America/Los_Angeles")
    account = make_account(org)
    make_activity(org, account, external_id="LAST-OF-D", occurred_at=local_dt(org, D, 23))
    make_activity(org, account, external_id="FIRST-AFTER-D", occurred_at=local_dt(org, D + timedelta(days=1), 0))
    make_activity(org, account, external_id="LONG-AGO", occurred_at=local_dt(org, D - timedelta(days=200)))

    with tenant(org):
        activities = org_frames(org=org, day=D).activities

    # The window, plus the latest activity before it (the silent rule counts from it).
    assert set(activities["external_id"]) == {"LAST-OF-D", "LONG-AGO"}
