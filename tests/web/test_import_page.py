"""The CSV import page: admins upload a file and see the summary or every bad row; others are kept out."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import UsageDay
from csm.tenancy import tenant
from tests.factories import make_account, make_member, make_org

pytestmark = pytest.mark.django_db

USAGE_HEADER = "account_external_id,date,active_users,seats_used,events\n"


def upload(client, org, kind: str, text: str):
    csv_file = SimpleUploadedFile("usage.csv", text.encode(), content_type="text/csv")
    return client.post(reverse("csv-import", args=[org.slug]), {"kind": kind, "file": csv_file})


def test_admin_sees_the_form_with_the_expected_columns(client):
    org = make_org()
    client.force_login(make_member(org, role="admin"))

    page = client.get(reverse("csv-import", args=[org.slug])).content.decode()

    assert 'type="file"' in page
    assert "account_external_id, date, active_users, seats_used, events" in page


def test_admin_uploads_a_valid_file_and_sees_the_counts(client):
    org = make_org()
    client.force_login(make_member(org, role="admin"))
    make_account(org, external_id="A-1")

    response = upload(client, org, "usage", USAGE_HEADER + "A-1,2026-01-01,3,4,5\nA-1,2026-01-02,3,4,5\n")

    assert response.status_code == 200
    assert "<strong>2</strong> created, <strong>0</strong> updated, <strong>0</strong> unchanged" in (
        response.content.decode()
    )
    with tenant(org):
        assert UsageDay.objects.count() == 2


def test_admin_uploads_a_bad_file_and_sees_each_row_error_with_nothing_written(client):
    org = make_org()
    client.force_login(make_member(org, role="admin"))
    make_account(org, external_id="A-1")

    response = upload(
        client, org, "usage", USAGE_HEADER + "A-1,2026-01-01,3,4,5\nA-1,2026-02-30,3,4,5\nA-7,2026-01-03,3,-4,5\n"
    )

    page = response.content.decode()
    assert response.status_code == 400
    assert "nothing was imported" in page
    assert "row 3, column date: &quot;2026-02-30&quot; is not a date (expected YYYY-MM-DD)" in page
    assert "row 4, column account_external_id: &quot;A-7&quot; is not an account of this organization" in page
    assert "row 4, column seats_used: &quot;-4&quot; is not a whole number of 0 or more" in page
    with tenant(org):
        assert UsageDay.objects.count() == 0


def test_csm_gets_403(client):
    org = make_org()
    client.force_login(make_member(org, role="csm"))

    assert client.get(reverse("csv-import", args=[org.slug])).status_code == 403
    assert upload(client, org, "usage", USAGE_HEADER).status_code == 403


def test_member_of_another_organization_gets_404(client):
    org, other = make_org(), make_org()
    client.force_login(make_member(other, role="admin"))
    make_account(org, external_id="A-1")

    assert client.get(reverse("csv-import", args=[org.slug])).status_code == 404
    assert upload(client, org, "usage", USAGE_HEADER + "A-1,2026-01-01,3,4,5\n").status_code == 404
    with tenant(org):
        assert UsageDay.objects.count() == 0
