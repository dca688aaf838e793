"""Connect with Salesforce in the browser: the OAuth 2.0 web-server flow with PKCE (S256).

The admin first saves the instance URL, consumer key and secret of the connected app on the
Integrations page; "Connect with Salesforce" then sends them to Salesforce's authorize page with a
random `state` and a PKCE code challenge kept in their session. The callback accepts only the state
it issued (a forged, replayed or missing state is refused) and exchanges the code together with the
code verifier, so a code intercepted on the way back is useless to anyone else.
"""

import base64
import hashlib
import secrets
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views import View

from accounts.models import Role
from csm.tenancy import OrgViewMixin
from integrations import credentials
from integrations.http import ProviderError
from integrations.models import Connection
from integrations.providers.salesforce import DEFAULT_LOGIN_URL, PROVIDER, token_request
from integrations.services import connection_save
from integrations.views import start_first_sync

SESSION_KEY = "salesforce_oauth"
SCOPES = "api refresh_token"


def code_challenge(verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _refused(message: str, status: int = 400) -> HttpResponse:
    return HttpResponse(
        format_html(
            "<!doctype html><title>Salesforce connection refused</title><h1>Salesforce connection refused</h1>"
            "<p>{}</p><p>Start again from the Integrations page.</p>",
            message,
        ),
        status=status,
    )


def _connection(org) -> tuple[Connection, dict]:
    connection = get_object_or_404(Connection, org=org, provider=PROVIDER)
    values = credentials.decrypt(org_id=org.pk, provider=PROVIDER, blob=connection.credentials)
    return connection, values


def _login_url(connection: Connection) -> str:
    return ((connection.settings or {}).get("login_url") or DEFAULT_LOGIN_URL).rstrip("/")


class SalesforceAuthorizeView(OrgViewMixin, View):
    allowed_roles = (Role.ADMIN,)

    def get(self, request, org_slug: str):
        connection, values = _connection(self.org)
        if not values.get("client_id"):
            return _refused("Save the consumer key and secret of your connected app first.")
        verifier = secrets.token_urlsafe(64)  # 86 characters: within PKCE's 43–128
        state = secrets.token_urlsafe(32)
        redirect_uri = request.build_absolute_uri(reverse("salesforce-callback", kwargs={"org_slug": self.org.slug}))
        request.session[SESSION_KEY] = {
            "state": state,
            "verifier": verifier,
            "org": self.org.pk,
            "redirect_uri": redirect_uri,
        }
        query = urlencode(
            {
                "response_type": "code",
                "client_id": values["client_id"],
                "redirect_uri": redirect_uri,
                "scope": SCOPES,
                "state": state,
                "code_challenge": code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return redirect(f"{_login_url(connection)}/services/oauth2/authorize?{query}")


class SalesforceCallbackView(OrgViewMixin, View):
    allowed_roles = (Role.ADMIN,)

    def get(self, request, org_slug: str):
        # Popped whatever happens: a state is good for one answer only.
        issued = request.session.pop(SESSION_KEY, None)
        state = request.GET.get("state", "")
        if (
            not issued
            or issued.get("org") != self.org.pk
            or not state
            or not secrets.compare_digest(state, issued["state"])
        ):
            return _refused(
                "This answer from Salesforce does not belong to a sign-in started here (its state does not "
                "match), so it was ignored and nothing was saved."
            )
        if request.GET.get("error"):
            return _refused(
                f"Salesforce did not grant access: {request.GET.get('error_description') or request.GET['error']}."
            )
        code = request.GET.get("code", "")
        if not code:
            return _refused("Salesforce sent no authorization code.")
        connection, values = _connection(self.org)
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": values.get("client_id", ""),
            "redirect_uri": issued["redirect_uri"],
            "code_verifier": issued["verifier"],
        }
        if values.get("client_secret"):
            data["client_secret"] = values["client_secret"]
        try:
            token = token_request(login_url=_login_url(connection), data=data)
        except ProviderError:
            return _refused(
                "Salesforce refused the authorization code (it may have expired or been used already).", status=502
            )
        saved = {k: token.get(k) for k in ("access_token", "refresh_token", "instance_url")}
        connection = connection_save(org=self.org, provider=PROVIDER, secrets=saved)
        messages.success(request, "Salesforce connected.")
        start_first_sync(request, org=self.org, connection=connection)
        return redirect("integrations", org_slug=self.org.slug)


# Included from csm/urls.py under "o/<slug:org_slug>/integrations/salesforce/".
urlpatterns = [
    path("authorize/", SalesforceAuthorizeView.as_view(), name="salesforce-authorize"),
    path("callback/", SalesforceCallbackView.as_view(), name="salesforce-callback"),
]
