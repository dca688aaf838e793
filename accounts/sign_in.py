"""Sign-in that slows down password guessing: after too many failures for one e-mail from one
address, that pair is refused for a while, without telling whether the password was right."""

from hashlib import sha256

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

MAX_FAILURES = 10
LOCK_SECONDS = 15 * 60


def _key(username: str, address: str) -> str:
    return "sign-in-failures:" + sha256(f"{username.strip().lower()}|{address}".encode()).hexdigest()


class ThrottledAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": "Too many failed sign-ins for this e-mail from your network. Try again in 15 minutes.",
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        key = _key(username, self.request.META.get("REMOTE_ADDR", "") if self.request else "")
        if cache.get(key, 0) >= MAX_FAILURES:
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            try:
                cache.incr(key)
            except ValueError:  # first failure: the key does not exist yet
                cache.set(key, 1, LOCK_SECONDS)
            raise
        cache.delete(key)
        return cleaned


class SignInView(auth_views.LoginView):
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True
