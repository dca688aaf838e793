"""Sign-in, roles, the organization switcher, invitations, and isolation between organizations."""

import re

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse

from accounts.models import Account
from accounts.services import invitation_create
from csm.tenancy import tenant
from tests.factories import make_account, make_member, make_org

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-42"
ORG_PAGES = ["morning", "account-list", "portfolio", "revenue", "integrations", "settings", "csv-import"]


def test_login_lands_on_the_morning_page_of_the_users_organization(client):
    org = make_org("acme")
    user = make_member(org, role="csm")
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("morning", args=["acme"])
    assert "Morning" in response.content.decode()


def test_wrong_password_is_refused_with_a_message(client):
    org = make_org()
    user = make_member(org)
    response = client.post(reverse("login"), {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert "enter a correct" in response.content.decode().lower()


def test_anonymous_visitor_is_sent_to_login(client):
    org = make_org("acme")
    response = client.get(reverse("morning", args=[org.slug]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_member_of_a_asking_for_any_page_of_b_gets_404(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    client.force_login(make_member(org_a, role="admin"))
    make_member(org_b, role="admin")
    for name in ORG_PAGES:
        assert client.get(reverse(name, args=[org_b.slug])).status_code == 404, name
        assert client.get(reverse(name, args=["no-such-org"])).status_code == 404, name


def test_user_without_organization_gets_none(client):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("loner@example.com", "loner@example.com", PASSWORD)
    client.force_login(user)
    response = client.get(reverse("home"))
    assert response.status_code == 403
    assert "No organization yet" in response.content.decode()


@pytest.mark.parametrize("role, status", [("admin", 200), ("leader", 403), ("csm", 403), ("am", 403)])
def test_only_admins_open_settings(client, role, status):
    org = make_org()
    client.force_login(make_member(org, role=role))
    assert client.get(reverse("settings", args=[org.slug])).status_code == status


def test_switcher_lists_both_organizations_and_switches(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    make_member(org_a, role="leader", email="both@example.com")
    user = make_member(org_b, role="csm", email="both@example.com")
    client.force_login(user)
    page = client.get(reverse("morning", args=["alpha"])).content.decode()
    assert 'value="alpha"' in page and 'value="beta"' in page
    response = client.get(reverse("switch-org"), {"org": "beta"})
    assert response["Location"] == reverse("morning", args=["beta"])
    assert client.get(reverse("home"))["Location"] == reverse("morning", args=["beta"])
    assert client.get(reverse("switch-org"), {"org": "gamma"}).status_code == 404


def test_invitation_link_sets_a_password_and_joins_with_the_role(client):
    org = make_org("acme")
    admin = make_member(org, role="admin")
    client.force_login(admin)
    response = client.post(reverse("settings", args=["acme"]), {"email": "New.Person@Example.com", "role": "am"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.person@example.com"]
    link = re.search(r"http://testserver(/o/acme/invitation/[^/\s]+/)", mail.outbox[0].body).group(1)
    client.logout()
    response = client.post(link, {"new_password1": "A-long-pass-phrase-9", "new_password2": "A-long-pass-phrase-9"})
    assert response.status_code == 302 and response["Location"] == reverse("morning", args=["acme"])
    settings_page = client.get(reverse("settings", args=["acme"]))
    assert settings_page.status_code == 403  # an AM is not an admin
    client.logout()
    assert client.get(link).status_code == 404  # used once only
    assert client.login(username="new.person@example.com", password="A-long-pass-phrase-9")


def test_invitation_token_of_one_organization_does_not_open_another(client):
    org_a = make_org("alpha")
    make_org("beta")
    admin = make_member(org_a, role="admin")
    with tenant(org_a):
        invitation_create(
            org=org_a, email="x@example.com", role="csm", invited_by=admin, accept_url_for=lambda t: f"TOKEN:{t}"
        )
    token = mail.outbox[0].body.split("TOKEN:")[1].split()[0]
    assert client.get(reverse("invitation", args=["beta", token])).status_code == 404
    assert client.get(reverse("invitation", args=["alpha", token])).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_two_requests_on_one_reused_connection_never_share_a_tenant(client):
    org_a, org_b = make_org("alpha"), make_org("beta")
    make_account(org_a, name="Alpha Corp")
    make_account(org_b, name="Beta Corp")
    user_a = make_member(org_a, role="admin")
    client.force_login(user_a)
    assert client.get(reverse("morning", args=["alpha"])).status_code == 200
    # Same process, same persistent connection: the tenant ended with the request's transaction.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('vigil.org_id', true), current_setting('vigil.user_id', true)")
        assert cursor.fetchone() in (("", ""), (None, None))
    assert Account.objects.count() == 0
    client.force_login(make_member(org_b, role="admin"))
    assert client.get(reverse("morning", args=["beta"])).status_code == 200
    assert client.get(reverse("morning", args=["alpha"])).status_code == 404


@pytest.mark.parametrize(
    "role, shown",
    [
        ("csm", ["Morning", "Accounts"]),
        ("am", ["Morning", "Accounts", "Revenue"]),
        ("leader", ["Morning", "Accounts", "Portfolio", "Revenue"]),
        ("admin", ["Morning", "Accounts", "Portfolio", "Revenue", "Integrations", "Settings"]),
    ],
)
def test_the_navigation_shows_each_role_the_pages_it_may_open(client, role, shown):
    org = make_org("acme")
    client.force_login(make_member(org, role=role))
    html = client.get(reverse("morning", args=[org.slug])).content.decode()
    nav = html[html.index('<nav class="mainnav"') : html.index("</nav>")]
    assert re.findall(r"<a [^>]*>([^<]+)</a>", nav) == shown
    for label, name in (("Portfolio", "portfolio"), ("Revenue", "revenue"), ("Settings", "settings")):
        allowed = client.get(reverse(name, args=[org.slug])).status_code == 200
        assert allowed == (label in shown), (role, label)


def test_repeated_wrong_passwords_are_refused_for_a_while_even_with_the_right_one(client):
    from accounts.sign_in import MAX_FAILURES

    org = make_org()
    user = make_member(org)
    for _ in range(MAX_FAILURES):
        response = client.post(reverse("login"), {"username": user.username, "password": "guess"})
        assert "enter a correct" in response.content.decode().lower()

    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})

    assert response.status_code == 200 and "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    other = make_member(org)  # another person is not locked out
    response = client.post(reverse("login"), {"username": other.username, "password": PASSWORD})
    assert response.status_code == 302
