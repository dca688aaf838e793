"""The Morning page: who sees what, Done / Snooze in place, freshness, bounded queries."""

from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from csm.tenancy import tenant
from signals.models import NightlyRun, Signal, SignalStatus, TriageItem
from tests.factories import make_account, make_member, make_org

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 20)


def publish(org, account, *, rank, group="proactive", type="renewal_soon", cause="Renews in 30 days", day=DAY):
    """A signal and its triage item, as a finished nightly run leaves them."""
    with tenant(org):
        signal = Signal.objects.create(
            org=org,
            account=account,
            type=type,
            severity=50,
            first_seen=day,
            last_seen=day,
            is_new=True,
            cause=cause,
            action="prepare the executive summary",
            evidence={"renewal_date": "2026-12-20"},
        )
        TriageItem.objects.create(
            org=org,
            date=day,
            account=account,
            rank=rank,
            priority=100 - rank,
            group=group,
            reasons=["renewal in 30 days"],
            signal_ids=[signal.pk],
        )
        NightlyRun.objects.update_or_create(
            org=org,
            run_date=day,
            defaults={"status": "succeeded", "started_at": timezone.now(), "finished_at": timezone.now()},
        )
    return signal


def test_csm_sees_only_their_accounts_in_rank_order(client):
    org = make_org()
    csm, other = make_member(org, role="csm"), make_member(org, role="csm")
    mine_2 = make_account(org, name="Second Co", csm=csm)
    mine_1 = make_account(org, name="First Co", csm=csm)
    theirs = make_account(org, name="Elsewhere Ltd", csm=other)
    publish(org, mine_2, rank=2)
    publish(org, mine_1, rank=1, group="blocked", type="blocked_task", cause="SSO setup blocked since 19 Nov")
    publish(org, theirs, rank=3)
    client.force_login(csm)
    page = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert page.index("First Co") < page.index("Second Co")
    assert "Elsewhere Ltd" not in page
    assert "New blocked tasks" in page and "SSO setup blocked since 19 Nov" in page


def test_leader_sees_all_or_one_csm(client):
    org = make_org()
    csm = make_member(org, role="csm")
    publish(org, make_account(org, name="Mine Co", csm=csm), rank=1)
    publish(org, make_account(org, name="Unowned Co"), rank=2)
    client.force_login(make_member(org, role="leader"))
    everything = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert "Mine Co" in everything and "Unowned Co" in everything
    one = client.get(reverse("morning", args=[org.slug]), {"csm": csm.pk}).content.decode()
    assert "Mine Co" in one and "Unowned Co" not in one


def test_done_through_htmx_removes_the_item(client):
    org = make_org()
    csm = make_member(org, role="csm")
    account = make_account(org, name="Done Co", csm=csm)
    signal = publish(org, account, rank=1)
    client.force_login(csm)
    url = reverse("triage-action", args=[org.slug, account.pk, "done"])
    response = client.post(url, {"signal": [signal.pk]}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "marked done" in response.content.decode()
    with tenant(org):
        assert Signal.objects.get(pk=signal.pk).status == SignalStatus.DONE
    assert "Done Co" not in client.get(reverse("morning", args=[org.slug])).content.decode()


def test_snooze_sets_the_return_date(client):
    org = make_org()
    csm = make_member(org, role="csm")
    account = make_account(org, name="Later Co", csm=csm)
    signal = publish(org, account, rank=1)
    client.force_login(csm)
    url = reverse("triage-action", args=[org.slug, account.pk, "snooze"])
    assert client.post(url, {"signal": [signal.pk], "days": "3"}, HTTP_HX_REQUEST="true").status_code == 200
    with tenant(org):
        snoozed = Signal.objects.get(pk=signal.pk)
    assert snoozed.status == SignalStatus.SNOOZED
    assert snoozed.snoozed_until == timezone.now().astimezone(org.tz).date() + timedelta(days=3)
    assert client.post(url, {"signal": [signal.pk], "days": "30"}).status_code == 400


def test_csm_cannot_act_on_another_csms_account(client):
    org = make_org()
    owner, intruder = make_member(org, role="csm"), make_member(org, role="csm")
    account = make_account(org, csm=owner)
    signal = publish(org, account, rank=1)
    client.force_login(intruder)
    url = reverse("triage-action", args=[org.slug, account.pk, "done"])
    assert client.post(url, {"signal": [signal.pk]}).status_code == 403
    with tenant(org):
        assert Signal.objects.get(pk=signal.pk).status == SignalStatus.OPEN


def test_actions_on_another_organizations_account_are_404(client):
    org_a, org_b = make_org(), make_org()
    foreign = make_account(org_b)
    signal = publish(org_b, foreign, rank=1)
    client.force_login(make_member(org_a, role="admin"))
    url = reverse("triage-action", args=[org_a.slug, foreign.pk, "done"])
    assert client.post(url, {"signal": [signal.pk]}).status_code == 404


def test_empty_state_and_freshness_banner(client):
    org = make_org()
    client.force_login(make_member(org, role="csm"))
    page = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert "No nightly run has finished yet" in page and "Nothing needs you this morning" in page
    with tenant(org):
        NightlyRun.objects.create(
            org=org, run_date=DAY, status="failed", started_at=timezone.now(), error="boom: disk full"
        )
    page = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert "Last night's run failed" in page and "disk full" in page


@pytest.mark.parametrize("accounts", [5, 40])
def test_morning_runs_a_bounded_number_of_queries(client, django_assert_max_num_queries, accounts):
    org = make_org()
    csm = make_member(org, role="csm")
    for rank in range(1, accounts + 1):
        publish(org, make_account(org, csm=csm), rank=rank)
    client.force_login(csm)
    with django_assert_max_num_queries(17):
        assert client.get(reverse("morning", args=[org.slug])).status_code == 200


def test_a_failed_source_is_named_with_its_reason(client):
    from integrations.models import Connection

    org = make_org()
    publish(org, make_account(org), rank=1)
    with tenant(org):
        Connection.objects.create(
            org=org, provider="zendesk", status="failing", last_error="Zendesk refused the e-mail and API token (401)"
        )
        Connection.objects.create(org=org, provider="hubspot", status="connected", last_success_at=timezone.now())
    client.force_login(make_member(org, role="leader"))
    page = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert "Zendesk sync failed" in page and "refused the e-mail and API token (401)" in page
    assert "HubSpot: 0" in page  # its age, "0 minutes ago"


def test_a_long_list_shows_its_best_items_first_with_a_way_to_see_more(client, monkeypatch):
    from signals import views

    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    org = make_org()
    csm = make_member(org, role="csm")
    for rank in range(1, 6):
        publish(org, make_account(org, name=f"Rank {rank} Co", csm=csm), rank=rank)
    client.force_login(csm)
    first = client.get(reverse("morning", args=[org.slug])).content.decode()
    assert "Rank 3 Co" in first and "Rank 4 Co" not in first
    assert "Showing the first 3 of 5" in first and "pages=2" in first
    more = client.get(reverse("morning", args=[org.slug]), {"pages": "2"}).content.decode()
    assert "Rank 5 Co" in more and "Show more" not in more
