"""Settings (admins only): the team, roles and invitations."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.generic import TemplateView

from accounts.models import Invitation, Membership, Role
from accounts.services import invitation_create
from csm.tenancy import OrgViewMixin


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CSM)


class RoleForm(forms.Form):
    membership = forms.IntegerField()
    role = forms.ChoiceField(choices=Role.choices)


class SettingsView(OrgViewMixin, TemplateView):
    template_name = "accounts/settings.html"
    allowed_roles = (Role.ADMIN,)

    def get_context_data(self, **kwargs):
        members = Membership.objects.filter(org=self.org).select_related("user").order_by("role", "user__email")
        pending = Invitation.objects.filter(
            org=self.org, accepted_at__isnull=True, expires_at__gt=timezone.now()
        ).order_by("-created_at")
        return super().get_context_data(
            members=members,
            pending=pending,
            invite_form=kwargs.get("invite_form") or InviteForm(),
            roles=Role.choices,
            **kwargs,
        )

    def post(self, request, *args, **kwargs):
        if request.POST.get("action") == "role":
            return self._change_role(request)
        form = InviteForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(invite_form=form))
        email = form.cleaned_data["email"].lower()
        if Membership.objects.filter(org=self.org, user__email__iexact=email).exists():
            form.add_error("email", f"{email} is already a member.")
            return self.render_to_response(self.get_context_data(invite_form=form))
        invitation_create(
            org=self.org,
            email=email,
            role=form.cleaned_data["role"],
            invited_by=request.user,
            accept_url_for=lambda token: request.build_absolute_uri(reverse("invitation", args=[self.org.slug, token])),
        )
        messages.success(request, f"Invitation sent to {email}.")
        return redirect("settings", org_slug=self.org.slug)

    def _change_role(self, request):
        form = RoleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose a valid role.")
            return redirect("settings", org_slug=self.org.slug)
        membership = Membership.objects.filter(org=self.org, pk=form.cleaned_data["membership"]).first()
        if membership is None:
            messages.error(request, "That member is not in this organization.")
        elif membership.user_id == request.user.pk and form.cleaned_data["role"] != Role.ADMIN:
            messages.error(request, "You cannot remove your own admin role; ask another admin.")
        else:
            try:
                membership.role = form.cleaned_data["role"]
                membership.full_clean(exclude=["org", "user"])
                membership.save(update_fields=["role"])
                messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
            except ValidationError as error:
                messages.error(request, "; ".join(error.messages))
        return redirect("settings", org_slug=self.org.slug)
