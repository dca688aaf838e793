"""The REST API: token auth bound to one organization, tenant scoping, schema."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.services import api_token_create
from tests.factories import make_account, make_member, make_org

pytestmark = pytest.mark.django_db


def auth(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {key}"}


def test_token_sees_its_organization_only(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    mine = make_account(org_a, name="Alpha Corp")
    theirs = make_account(org_b, name="Beta Corp")
    key = api_token_create(org=org_a, user=make_member(org_a, role="csm"))
    listing = client.get(reverse("api-account-list"), **auth(key)).json()
    assert [a["name"] for a in listing["results"]] == ["Alpha Corp"]
    assert client.get(reverse("api-account-detail", args=[mine.pk]), **auth(key)).status_code == 200
    assert client.get(reverse("api-account-detail", args=[theirs.pk]), **auth(key)).status_code == 404


def test_bad_or_foreign_tokens_are_refused(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    key = api_token_create(org=org_a, user=make_member(org_a))
    org_id, secret = key.split(".", 1)
    assert client.get(reverse("api-triage")).status_code in (401, 403)
    assert client.get(reverse("api-triage"), **auth(f"{org_id}.wrong")).status_code == 401
    # The same secret presented for another organization matches nothing there.
    assert client.get(reverse("api-triage"), **auth(f"{org_b.pk}.{secret}")).status_code == 401
    assert client.get(reverse("api-triage"), **auth("garbage")).status_code == 401


def test_api_token_command_prints_a_working_key(client, capsys):
    org = make_org("acme")
    user = make_member(org, role="leader")
    call_command("api_token", "acme", user.email)
    key = capsys.readouterr().out.strip()
    response = client.get(reverse("api-triage"), {"date": "2026-03-01"}, **auth(key))
    assert response.status_code == 200
    assert response.json() == {"date": "2026-03-01", "items": []}


def test_triage_rejects_a_bad_date(client):
    org = make_org()
    key = api_token_create(org=org, user=make_member(org))
    response = client.get(reverse("api-triage"), {"date": "2026-02-30"}, **auth(key))
    assert response.status_code == 400 and "not a date" in response.json()["date"]


def test_session_auth_uses_the_org_parameter_and_checks_membership(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    make_account(org_b, name="Beta Corp")
    client.force_login(make_member(org_a))
    assert client.get(reverse("api-account-list"), {"org": "alpha"}).status_code == 200
    assert client.get(reverse("api-account-list"), {"org": "beta"}).status_code == 404


def test_openapi_schema_generates(client):
    response = client.get(reverse("api-schema"), {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/triage/", "/api/v1/accounts/", "/api/v1/signals/{id}/", "/api/v1/runs/"} <= set(paths)


def test_accounts_filter_by_stage_and_tier(client):
    org = make_org()
    make_account(org, name="Onb", stage="onboarding", tier="smb")
    make_account(org, name="Steady", stage="steady", tier="enterprise")
    key = api_token_create(org=org, user=make_member(org))
    names = lambda **q: [a["name"] for a in client.get(reverse("api-account-list"), q, **auth(key)).json()["results"]]  # noqa: E731
    assert names(stage="onboarding") == ["Onb"]
    assert names(tier="enterprise") == ["Steady"]


def test_an_unknown_stage_or_band_is_refused_with_the_values_allowed(client):
    org = make_org()
    key = api_token_create(org=org, user=make_member(org))
    response = client.get(reverse("api-account-list"), {"band": "purple"}, **auth(key))
    assert response.status_code == 400
    assert response.json() == {"band": "'purple' is not one of green, yellow, red."}
    response = client.get(reverse("api-account-list"), {"stage": "gone"}, **auth(key))
    assert response.status_code == 400 and "onboarding, adopting, steady, churned" in response.json()["stage"]
