"""The account page and in-place MAP task editing."""

from datetime import date

import pytest
from django.urls import reverse

from csm.tenancy import tenant
from tests.factories import (
    make_account,
    make_activity,
    make_contact,
    make_invoice,
    make_member,
    make_org,
    make_task,
    make_ticket,
)

pytestmark = pytest.mark.django_db


def test_account_page_shows_tasks_contacts_tickets_invoices_and_timeline(client):
    org = make_org()
    csm = make_member(org, role="csm")
    account = make_account(org, name="Northwind", csm=csm, renewal_date=date(2027, 1, 15))
    make_task(org, account, title="Configure SSO", status="blocked", blocked_reason="Waiting for IT")
    make_contact(org, account, name="Jane Doe", is_champion=True)
    make_ticket(org, account, subject="Export times out", priority="urgent")
    make_invoice(org, account, status="past_due", amount=1200)
    make_activity(org, account, summary="Quarterly review booked")
    client.force_login(csm)
    page = client.get(reverse("account-detail", args=[org.slug, account.pk])).content.decode()
    for text in (
        "Northwind",
        "Configure SSO",
        "Waiting for IT",
        "Jane Doe",
        "Champion",
        "Export times out",
        "Past due",
        "Quarterly review booked",
        "15 Jan 2027",
    ):
        assert text in page, text


def test_task_status_edited_in_place(client):
    org = make_org()
    csm = make_member(org, role="csm")
    account = make_account(org, csm=csm)
    task = make_task(org, account, status="todo")
    client.force_login(csm)
    url = reverse("task-update", args=[org.slug, task.pk])
    response = client.post(
        url, {"status": "blocked", "blocked_reason": "Legal review", "due_date": "2026-12-01"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "Saved" in response.content.decode()
    with tenant(org):
        task.refresh_from_db()
    assert (task.status, task.blocked_reason, task.due_date) == ("blocked", "Legal review", date(2026, 12, 1))
    assert task.status_changed_at is not None
    bad = client.post(url, {"status": "exploded"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and "valid status" in bad.content.decode()


def test_another_organizations_account_and_task_are_404(client):
    org_a, org_b = make_org(), make_org()
    foreign = make_account(org_b)
    task = make_task(org_b, foreign)
    client.force_login(make_member(org_a, role="admin"))
    assert client.get(reverse("account-detail", args=[org_a.slug, foreign.pk])).status_code == 404
    assert client.post(reverse("task-update", args=[org_a.slug, task.pk]), {"status": "done"}).status_code == 404


def test_accounts_list_filters_and_paginates(client):
    org = make_org()
    client.force_login(make_member(org, role="leader"))
    for n in range(55):
        make_account(org, name=f"Acct {n:02d}", tier="smb" if n % 2 else "enterprise")
    first = client.get(reverse("account-list", args=[org.slug])).content.decode()
    assert "55 accounts" in first and "Page 1 of 2" in first
    enterprise = client.get(reverse("account-list", args=[org.slug]), {"tier": "enterprise"}).content.decode()
    assert "28 accounts" in enterprise and "Acct 01" not in enterprise


def test_the_account_page_shows_each_sources_age_and_names_a_failed_one(client):
    from django.utils import timezone

    from health.models import HealthScore
    from integrations.models import Connection
    from tests.factories import make_score

    org = make_org()
    account = make_account(org, name="Northwind")
    score = make_score(org, account, day=date(2026, 11, 20), score=64, components={"usage": 70, "support": 50})
    with tenant(org):
        HealthScore.objects.filter(pk=score.pk).update(
            component_dates={"usage": "2026-11-19", "support": "2026-11-20"},
            excluded={"billing": "stale since 2026-11-02"},
        )
        Connection.objects.create(
            org=org, provider="zendesk", status="failing", last_error="Zendesk refused the e-mail and API token (401)"
        )
        Connection.objects.create(org=org, provider="hubspot", status="connected", last_success_at=timezone.now())
    client.force_login(make_member(org, role="csm"))

    page = client.get(reverse("account-detail", args=[org.slug, account.pk])).content.decode()

    assert "HubSpot: 0" in page and "minutes ago" in page  # its last successful sync
    assert "Zendesk sync failed" in page and "refused the e-mail and API token (401)" in page
    assert '2026-11-19 <span class="muted">(1 day old)</span>' in page
    assert '2026-11-20 <span class="muted">(same day)</span>' in page
    assert "left out: stale since 2026-11-02" in page
