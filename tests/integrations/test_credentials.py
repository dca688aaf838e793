"""Credentials at rest: encrypted, bound to their organization, rotatable, never shown again."""

import base64
import secrets

import pytest
from django.core.management import call_command
from django.urls import reverse

from csm.tenancy import tenant
from integrations import credentials
from integrations.models import Connection
from integrations.services import connection_save
from tests.factories import make_member, make_org

pytestmark = pytest.mark.django_db


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def keys(settings):
    settings.VIGIL_CREDENTIAL_KEYS = new_key()
    return settings


def test_ciphertext_copied_to_another_organization_does_not_decrypt(keys):
    org_a, org_b = make_org(), make_org()
    with tenant(org_a):
        stolen = connection_save(org=org_a, provider="zendesk", secrets={"api_token": "tok-123"}).credentials
    assert b"tok-123" not in bytes(stolen)
    assert credentials.decrypt(org_id=org_a.pk, provider="zendesk", blob=stolen) == {"api_token": "tok-123"}
    with pytest.raises(credentials.CredentialError, match="do not belong"):
        credentials.decrypt(org_id=org_b.pk, provider="zendesk", blob=stolen)
    with pytest.raises(credentials.CredentialError):
        credentials.decrypt(org_id=org_a.pk, provider="hubspot", blob=stolen)


def test_rotation_re_encrypts_everything_with_the_newest_key(keys):
    old = keys.VIGIL_CREDENTIAL_KEYS
    org_a, org_b = make_org(), make_org()
    for org in (org_a, org_b):
        with tenant(org):
            connection_save(org=org, provider="stripe", secrets={"api_key": f"rk_{org.slug}"})
    newest = new_key()
    keys.VIGIL_CREDENTIAL_KEYS = f"{newest},{old}"
    call_command("rotate_credentials")
    keys.VIGIL_CREDENTIAL_KEYS = newest  # the old key is gone: everything must still decrypt
    for org in (org_a, org_b):
        with tenant(org):
            blob = Connection.objects.get(org=org).credentials
        assert credentials.decrypt(org_id=org.pk, provider="stripe", blob=blob) == {"api_key": f"rk_{org.slug}"}


def test_a_key_no_longer_configured_gives_a_clear_error(keys):
    org = make_org()
    with tenant(org):
        blob = connection_save(org=org, provider="stripe", secrets={"api_key": "rk_1"}).credentials
    keys.VIGIL_CREDENTIAL_KEYS = new_key()
    with pytest.raises(credentials.CredentialError, match="no longer configured"):
        credentials.decrypt(org_id=org.pk, provider="stripe", blob=blob)


def test_integrations_page_saves_secrets_without_ever_showing_them(client, keys):
    org = make_org()
    client.force_login(make_member(org, role="admin"))
    page = client.get(reverse("integrations", args=[org.slug]))
    for name in ("HubSpot", "Stripe", "Zendesk", "Intercom", "Salesforce"):
        assert name in page.content.decode()
    response = client.post(
        reverse("integration-connect", args=[org.slug, "zendesk"]),
        {
            "secret__email": "agent@acme.example",
            "secret__api_token": "super-secret-token",
            "setting__subdomain": "acme",
        },
    )
    assert response.status_code == 302
    html = client.get(reverse("integrations", args=[org.slug])).content.decode()
    assert "super-secret-token" not in html
    assert "saved — leave empty to keep" in html
    with tenant(org):
        connection = Connection.objects.get(org=org, provider="zendesk")
    secrets_now = credentials.decrypt(org_id=org.pk, provider="zendesk", blob=connection.credentials)
    assert secrets_now["api_token"] == "super-secret-token"


def test_only_admins_reach_integrations(client):
    org = make_org()
    client.force_login(make_member(org, role="leader"))
    assert client.get(reverse("integrations", args=[org.slug])).status_code == 403
