"""The Morning page and its in-place Done / Snooze actions."""

from datetime import timedelta

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views import View
from django.views.generic import TemplateView

from accounts.models import Account, Role
from csm.tenancy import OrgViewMixin
from signals.models import Signal, SignalStatus
from signals.morning import PAGE_SIZE, csm_choices, freshness, grouped, morning_items, morning_scope
from signals.services import signal_done, signal_snooze

SNOOZE_CHOICES = ((1, "1 day"), (3, "3 days"), (7, "1 week"))


class MorningView(OrgViewMixin, TemplateView):
    template_name = "signals/morning.html"

    def get_context_data(self, **kwargs):
        csm_id = self._csm_filter()
        fresh = freshness(org=self.org)
        shown = PAGE_SIZE * self._pages()
        items, total = morning_items(
            org=self.org, day=fresh.day, scope=morning_scope(membership=self.membership, csm_id=csm_id), limit=shown
        )
        # Reverse each route once: the list repeats these links for every item.
        links = {
            name: reverse(name, args=[self.org.slug, 0, *extra]).replace("/0/", "/{}/")
            for name, extra in (("account-detail", ()), ("triage-action", ("done",)))
        }
        for item in items:
            item.account_url = links["account-detail"].format(item.account.pk)
            item.done_url = links["triage-action"].format(item.account.pk)
            item.snooze_url = item.done_url.removesuffix("done/") + "snooze/"
        can_pick_csm = self.membership.role in (Role.ADMIN, Role.LEADER)
        return super().get_context_data(
            fresh=fresh,
            groups=grouped(items),
            item_count=total,
            shown_count=len(items),
            more_pages=self._pages() + 1 if total > shown else None,
            new_count=sum(1 for item in items if item.has_new),
            csms=csm_choices(org=self.org) if can_pick_csm else [],
            csm_id=csm_id,
            snooze_choices=SNOOZE_CHOICES,
            **kwargs,
        )

    def _pages(self) -> int:
        raw = self.request.GET.get("pages", "1")
        return min(int(raw), 100) if raw.isdigit() and int(raw) > 0 else 1

    def _csm_filter(self) -> int | None:
        raw = self.request.GET.get("csm", "")
        return int(raw) if raw.isdigit() else None


class TriageActionView(OrgViewMixin, View):
    """Done or snooze the open signals of one account in today's list; htmx swaps the item away."""

    def post(self, request, org_slug: str, account_id: int, action: str):
        account = get_object_or_404(Account, org=self.org, pk=account_id)
        if self.membership.role not in (Role.ADMIN, Role.LEADER) and request.user.pk not in (
            account.csm_id,
            account.am_id,
        ):
            return HttpResponse("Only the account's CSM or AM, a leader or an admin can do this.", status=403)
        ids = [int(i) for i in request.POST.getlist("signal") if i.isdigit()]
        signals = Signal.objects.filter(
            org=self.org, account=account, pk__in=ids, status=SignalStatus.OPEN, cleared_on__isnull=True
        )
        if action == "done":
            for signal in signals:
                signal_done(org=self.org, signal=signal, user=request.user)
            message = f"{account.name}: marked done."
        elif action == "snooze":
            days = int(request.POST.get("days", "1"))
            if days not in dict(SNOOZE_CHOICES):
                return HttpResponse("Snooze for 1, 3 or 7 days.", status=400)
            until = timezone.now().astimezone(self.org.tz).date() + timedelta(days=days)
            for signal in signals:
                signal_snooze(org=self.org, signal=signal, until=until, user=request.user)
            message = f"{account.name}: snoozed until {until:%-d %b}."
        else:
            return HttpResponse(status=404)
        if request.headers.get("HX-Request"):
            # The item leaves the list; a live region tells screen readers what happened.
            return HttpResponse(format_html('<p class="visually-hidden" role="status">{}</p>', message))
        messages.success(request, message)
        return redirect("morning", org_slug=self.org.slug)
