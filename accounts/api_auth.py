"""`Authorization: Token <org_id>.<secret>`: a key belongs to one member of one organization."""

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from accounts.services import api_token_find
from csm.tenancy import enter_org


class OrganizationTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Invalid token header: use `Authorization: Token <key>`.")
        org_id, _, secret = parts[1].decode(errors="replace").partition(".")
        if not org_id.isdigit() or not secret:
            raise AuthenticationFailed("Invalid token.")
        # The key names its organization; entering it lets this transaction find the key (RLS).
        enter_org(int(org_id))
        token = api_token_find(org_id=int(org_id), secret=secret)
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("Invalid token.")
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
