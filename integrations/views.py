"""The Integrations page (admins): connect, test, sync now, history, unmatched records, disconnect."""

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from accounts.models import Account, Role
from csm.tenancy import OrgViewMixin
from integrations import credentials
from integrations.http import ProviderError, RequestBudget
from integrations.intake import PARK_DAYS
from integrations.models import Connection, ConnectionStatus, Provider, SyncRun, SyncStatus, UnmatchedRecord
from integrations.services import connection_disconnect, connection_save, mapping_rereads, mapping_save
from integrations.sync import connector_for, connectors


def connect_form_class(provider: str) -> type[forms.Form]:
    """A form with the fields this provider needs; secrets render empty and are never shown again."""
    connector = connectors()[provider]
    fields = {}
    for spec in connector.credential_fields:
        widget = forms.PasswordInput(render_value=False) if spec.secret else forms.TextInput()
        fields[f"secret__{spec.name}"] = forms.CharField(
            label=spec.label, help_text=spec.help, required=False, widget=widget
        )
    for spec in connector.setting_fields:
        fields[f"setting__{spec.name}"] = forms.CharField(label=spec.label, help_text=spec.help, required=False)
    return type(f"{provider.title()}ConnectForm", (forms.Form,), fields)


class IntegrationsView(OrgViewMixin, TemplateView):
    template_name = "integrations/integrations.html"
    allowed_roles = (Role.ADMIN,)

    def get_context_data(self, **kwargs):
        connections = {c.provider: c for c in Connection.objects.filter(org=self.org)}
        runs = {}
        for run in SyncRun.objects.filter(org=self.org).order_by("-started_at")[:100]:
            runs.setdefault(run.connection_id, []).append(run)
        unmatched_counts = {}
        for record in UnmatchedRecord.objects.filter(org=self.org).values("connection_id"):
            unmatched_counts[record["connection_id"]] = unmatched_counts.get(record["connection_id"], 0) + 1
        cards = []
        for provider, connector in connectors().items():
            connection = connections.get(provider)
            initial = {}
            if connection:
                initial = {f"setting__{k}": v for k, v in connection.settings.items()}
            cards.append(
                {
                    "provider": provider,
                    "label": Provider(provider).label,
                    "purpose": connector.purpose,
                    "connector": connector,
                    "connection": connection,
                    "form": kwargs.get("forms", {}).get(provider) or connect_form_class(provider)(initial=initial),
                    "runs": runs.get(connection.pk, [])[:8] if connection else [],
                    "unmatched": unmatched_counts.get(connection.pk, 0) if connection else 0,
                }
            )
        return super().get_context_data(cards=cards, **kwargs)


class ConnectView(OrgViewMixin, View):
    allowed_roles = (Role.ADMIN,)

    def post(self, request, org_slug: str, provider: str):
        if provider not in connectors():
            raise Http404("Unknown provider")
        form = connect_form_class(provider)(request.POST)
        connector = connectors()[provider]
        existing = Connection.objects.filter(org=self.org, provider=provider).first()
        if form.is_valid():
            secrets = {
                k.removeprefix("secret__"): v.strip() for k, v in form.cleaned_data.items() if k.startswith("secret__")
            }
            settings = {
                k.removeprefix("setting__"): v.strip()
                for k, v in form.cleaned_data.items()
                if k.startswith("setting__")
            }
            has_secrets = existing is not None and existing.status != ConnectionStatus.DISCONNECTED
            for spec in connector.credential_fields:
                if spec.required and not secrets.get(spec.name) and not has_secrets:
                    form.add_error(f"secret__{spec.name}", "Required to connect.")
        if not form.is_valid():
            view = IntegrationsView()
            view.setup(request, org_slug=org_slug)
            view.org, view.membership = self.org, self.membership
            return render(request, view.template_name, view.get_context_data(forms={provider: form}), status=400)
        first = existing is None or existing.status == ConnectionStatus.DISCONNECTED
        connection = connection_save(org=self.org, provider=provider, secrets=secrets, settings=settings)
        messages.success(request, f"{Provider(provider).label} connection saved.")
        if first and connector.syncs and connector.can_sync(secrets):
            _start_sync(request, org=self.org, connection=connection, trigger="first")
            messages.info(request, "The first sync started; health and signals follow as soon as it ends.")
        elif first and connector.syncs:
            messages.info(request, f"Now sign in to {connection}: the first sync starts once it has let Vigil in.")
        return redirect("integrations", org_slug=self.org.slug)


# Connection id → the newest run id when a sync was queued from this session: until a newer run exists
# (the worker creates it when it starts), the progress area says the sync is queued and keeps polling.
QUEUED_SYNCS = "integrations_queued_syncs"


def start_first_sync(request, *, org, connection) -> None:
    """After a sign-in that completed a connection: the first sync, with same-day health and signals."""
    if not SyncRun.objects.filter(org=org, connection=connection, status=SyncStatus.SUCCEEDED).exists():
        _start_sync(request, org=org, connection=connection, trigger="first")
        messages.info(request, "The first sync started; health and signals follow as soon as it ends.")


def _start_sync(request, *, org, connection, trigger: str) -> None:
    from integrations.tasks import sync_connection_task

    latest = SyncRun.objects.filter(org=org, connection=connection).order_by("-pk").values_list("pk", flat=True)
    request.session[QUEUED_SYNCS] = {**request.session.get(QUEUED_SYNCS, {}), str(connection.pk): latest.first() or 0}
    # Only once this request's transaction has committed can the worker see the connection.
    transaction.on_commit(lambda: sync_connection_task.delay(org.pk, connection.pk, trigger))


class ConnectionActionView(OrgViewMixin, View):
    """Test, sync now, disconnect; answered in place through htmx."""

    allowed_roles = (Role.ADMIN,)

    def post(self, request, org_slug: str, connection_id: int, action: str):
        connection = get_object_or_404(Connection, org=self.org, pk=connection_id)
        if action == "test":
            verdict, ok = self._test(connection)
            return render(request, "integrations/_verdict.html", {"verdict": verdict, "ok": ok})
        if action == "sync":
            if SyncRun.objects.filter(org=self.org, connection=connection, status=SyncStatus.RUNNING).exists():
                messages.info(request, "A sync is already running.")
            else:
                _start_sync(request, org=self.org, connection=connection, trigger="manual")
                messages.success(request, f"{connection} sync started in the background.")
        elif action == "disconnect":
            connection_disconnect(org=self.org, connection=connection)
            messages.success(request, f"{connection} disconnected; its credentials were deleted.")
        else:
            raise Http404("Unknown action")
        return redirect("integrations", org_slug=self.org.slug)

    def _test(self, connection) -> tuple[str, bool]:
        try:
            connector = connector_for(connection)
            client = connector.client(RequestBudget(limit=20))
            try:
                return connector.test(client), True
            finally:
                if client is not None:
                    client.close()
        except ProviderError as error:
            return str(error), False
        except credentials.CredentialError as error:
            return f"The saved credentials cannot be read ({error}); reconnect.", False


class SyncProgressView(OrgViewMixin, View):
    """The latest run of a connection, polled by htmx while it is queued or runs."""

    allowed_roles = (Role.ADMIN,)

    def get(self, request, org_slug: str, connection_id: int):
        connection = get_object_or_404(Connection, org=self.org, pk=connection_id)
        run = SyncRun.objects.filter(org=self.org, connection=connection).order_by("-started_at").first()
        queued = request.session.get(QUEUED_SYNCS, {})
        before = queued.get(str(connection.pk))
        waiting = before is not None and not SyncRun.objects.filter(connection=connection, pk__gt=before).exists()
        if before is not None and not waiting:
            request.session[QUEUED_SYNCS] = {k: v for k, v in queued.items() if k != str(connection.pk)}
        return render(
            request,
            "integrations/_progress.html",
            {"run": run, "queued": waiting, "connection": connection, "now": timezone.now()},
        )


class MappingForm(forms.Form):
    external_id = forms.CharField()
    account_external_id = forms.CharField(label="Account id")


class UnmatchedView(OrgViewMixin, TemplateView):
    """Records that matched no account, with a form to map each one explicitly."""

    template_name = "integrations/unmatched.html"
    allowed_roles = (Role.ADMIN,)

    def get_context_data(self, **kwargs):
        connection = get_object_or_404(Connection, org=self.org, pk=self.kwargs["connection_id"])
        records = UnmatchedRecord.objects.filter(org=self.org, connection=connection).order_by("-last_seen_at")[:500]
        return super().get_context_data(connection=connection, records=records, park_days=PARK_DAYS, **kwargs)

    def post(self, request, org_slug: str, connection_id: int):
        connection = get_object_or_404(Connection, org=self.org, pk=connection_id)
        form = MappingForm(request.POST)
        if form.is_valid():
            account = Account.objects.filter(org=self.org, external_id=form.cleaned_data["account_external_id"]).first()
            if account is None:
                messages.error(request, f"No account with id {form.cleaned_data['account_external_id']!r}.")
            else:
                mapping_save(
                    org=self.org,
                    provider=connection.provider,
                    external_id=form.cleaned_data["external_id"],
                    account=account,
                )
                if mapping_rereads(connection.provider):
                    messages.success(
                        request,
                        f"Mapped to {account.name}. The next sync reads {connection} again from the start, "
                        "so what it sent before lands on the account.",
                    )
                elif connection.provider == Provider.SEGMENT:
                    messages.success(
                        request,
                        f"Mapped to {account.name}: its events of the last {PARK_DAYS} days now count for it, "
                        "and so will the next ones.",
                    )
                else:
                    messages.success(request, f"Mapped to {account.name}; the next sync brings in its records.")
        return redirect("integration-unmatched", org_slug=self.org.slug, connection_id=connection.pk)
