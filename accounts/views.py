"""Sign-in, the organization switcher, invitations, and the account pages."""

from datetime import date

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from accounts.models import Account, Organization, Stage, Task, TaskStatus
from accounts.selectors import account_list, account_page, scores_for
from accounts.services import invitation_accept, invitation_find, task_update
from csm.charts import trend_chart
from csm.tenancy import OrgViewMixin, enter_org, memberships_for_user
from health.services import health_model_ensure
from signals.morning import csm_choices


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


class AccountListView(OrgViewMixin, TemplateView):
    template_name = "accounts/account_list.html"
    page_size = 50

    def get_context_data(self, **kwargs):
        params = self.request.GET
        csm_raw = params.get("csm", "")
        accounts, day = account_list(
            org=self.org,
            csm_id=int(csm_raw) if csm_raw.isdigit() else None,
            tier=params.get("tier", ""),
            band=params.get("band", ""),
            stage=params.get("stage", ""),
            search=params.get("q", "").strip(),
        )
        page = Paginator(accounts, self.page_size).get_page(params.get("page"))
        scores = scores_for(org=self.org, day=day, account_ids=[a.pk for a in page])
        rows = [(account, scores.get(account.pk)) for account in page]
        query = params.copy()
        query.pop("page", None)
        return super().get_context_data(
            page=page,
            rows=rows,
            day=day,
            filters=params,
            query=query.urlencode(),
            csms=csm_choices(org=self.org),
            tiers=Account.objects.filter(org=self.org).exclude(tier="").values_list("tier", flat=True).distinct(),
            stages=Stage.choices,
            **kwargs,
        )


class AccountDetailView(OrgViewMixin, TemplateView):
    template_name = "accounts/account_detail.html"

    def get_context_data(self, **kwargs):
        try:
            data = account_page(org=self.org, account_id=self.kwargs["account_id"])
        except Account.DoesNotExist as missing:
            raise Http404("No such account") from missing
        model = health_model_ensure(org=self.org)
        chart = trend_chart(
            [(s.date, float(s.score)) for s in data["history"]],
            green=model.bands.get("green", 70),
            yellow=model.bands.get("yellow", 40),
        )
        return super().get_context_data(chart=chart, task_statuses=TaskStatus.choices, **data, **kwargs)


class TaskUpdateView(OrgViewMixin, View):
    """In-place edit of a MAP item (htmx swaps the row)."""

    def post(self, request, org_slug: str, task_id: int):
        task = get_object_or_404(Task.objects.select_related("account"), org=self.org, pk=task_id)
        error = ""
        due_raw = request.POST.get("due_date", "")
        try:
            due = date.fromisoformat(due_raw) if due_raw else None
            task_update(
                org=self.org,
                task=task,
                status=request.POST.get("status", task.status),
                blocked_reason=request.POST.get("blocked_reason", ""),
                due_date=due,
            )
        except (ValueError, ValidationError):
            error = "Choose a valid status and a date as YYYY-MM-DD."
            task.refresh_from_db()
        context = {
            "task": task,
            "org": self.org,
            "task_statuses": TaskStatus.choices,
            "error": error,
            "saved": not error,
        }
        if request.headers.get("HX-Request"):
            return render(request, "accounts/_task_row.html", context, status=400 if error else 200)
        if error:
            messages.error(request, error)
        return redirect(reverse("account-detail", args=[self.org.slug, task.account_id]) + "#tasks")
