"""Sign-in, the organization switcher, invitations, and the account pages."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.generic import TemplateView

from accounts.models import Organization
from accounts.services import invitation_accept, invitation_find
from csm.tenancy import OrgViewMixin, enter_org, memberships_for_user


@login_required
def home(request):
    """Send the user to the organization they last used, or their first one."""
    memberships = memberships_for_user(request.user)
    if not memberships:
        return render(request, "accounts/no_organization.html", status=403)
    wanted = request.session.get("org_slug")
    chosen = next((m for m in memberships if m.org.slug == wanted), memberships[0])
    return redirect("morning", org_slug=chosen.org.slug)


@login_required
def switch_org(request):
    slug = request.GET.get("org", "")
    if not any(m.org.slug == slug for m in memberships_for_user(request.user)):
        raise Http404("No such organization")
    request.session["org_slug"] = slug
    return redirect("morning", org_slug=slug)


def invitation(request, org_slug: str, token: str):
    """The invitee sets a password and joins; the token is the only credential."""
    org = Organization.objects.filter(slug=org_slug).first()
    if org is None:
        raise Http404("This invitation link is not valid.")
    # Entering the organization here only lets this request find the invitation by its secret token.
    enter_org(org)
    pending = invitation_find(org=org, token=token)
    if pending is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    from django.contrib.auth import get_user_model

    user = get_user_model()(username=pending.email, email=pending.email)
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            membership = invitation_accept(org=org, invitation=pending, password=form.cleaned_data["new_password1"])
        login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        request.session["org_slug"] = org.slug
        messages.success(request, f"Welcome to {org.name}.")
        return redirect(reverse("morning", args=[org.slug]))
    return render(request, "accounts/invitation.html", {"invited": pending, "invited_org": org, "form": form})


class PlaceholderPage(OrgViewMixin, TemplateView):
    template_name = "accounts/placeholder.html"
    title = ""

    def get_context_data(self, **kwargs):
        return super().get_context_data(title=self.title, **kwargs)
