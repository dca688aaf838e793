"""/api/v1/accounts/: the organization's accounts with their health."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView

from accounts.models import Account, Stage
from csm.tenancy import OrgAPIMixin
from health.models import Band, HealthScore


class HealthPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = HealthScore
        fields = [
            "date",
            "score",
            "band",
            "delta",
            "components",
            "component_dates",
            "excluded",
            "gate",
            "model_version",
        ]


class AccountSerializer(serializers.ModelSerializer):
    csm = serializers.EmailField(source="csm.email", default=None, read_only=True)
    am = serializers.EmailField(source="am.email", default=None, read_only=True)
    health = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = [
            "id",
            "external_id",
            "name",
            "domain",
            "tier",
            "arr",
            "currency",
            "plan",
            "seat_limit",
            "stage",
            "csm",
            "am",
            "go_live_date",
            "renewal_date",
            "contract_start",
            "health",
        ]

    def get_health(self, account) -> dict | None:
        score = self.context.get("latest_scores", {}).get(account.pk)
        return HealthPointSerializer(score).data if score else None


class AccountDetailSerializer(AccountSerializer):
    health_history = serializers.SerializerMethodField()

    class Meta(AccountSerializer.Meta):
        fields = [*AccountSerializer.Meta.fields, "health_history"]

    def get_health_history(self, account) -> list[dict]:
        return HealthPointSerializer(self.context.get("history", []), many=True).data


def latest_score_date(*, org):
    return HealthScore.objects.filter(org=org).order_by("-date").values_list("date", flat=True).first()


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("csm", str, description="CSM e-mail"),
            OpenApiParameter("tier", str),
            OpenApiParameter("band", str, enum=Band.values, description="band of the latest score"),
            OpenApiParameter("stage", str, enum=Stage.values),
        ]
    )
)
class AccountListView(OrgAPIMixin, ListAPIView):
    serializer_class = AccountSerializer

    def get_queryset(self):
        accounts = Account.objects.filter(org=self.org).select_related("csm", "am").order_by("name", "pk")
        params = self.request.query_params
        for name, allowed in (("stage", Stage.values), ("band", Band.values)):
            if params.get(name) and params[name] not in allowed:
                raise ValidationError({name: f"{params[name]!r} is not one of {', '.join(allowed)}."})
        if params.get("csm"):
            accounts = accounts.filter(csm__email__iexact=params["csm"])
        if params.get("tier"):
            accounts = accounts.filter(tier__iexact=params["tier"])
        if params.get("stage"):
            accounts = accounts.filter(stage=params["stage"])
        if params.get("band"):
            day = latest_score_date(org=self.org)
            accounts = accounts.filter(
                pk__in=HealthScore.objects.filter(org=self.org, date=day, band=params["band"]).values("account_id")
            )
        return accounts

    def get_serializer_context(self):
        context = super().get_serializer_context()
        page = getattr(self, "_page_accounts", None)
        if page is not None:
            day = latest_score_date(org=self.org)
            scores = HealthScore.objects.filter(org=self.org, date=day, account_id__in=[a.pk for a in page])
            context["latest_scores"] = {s.account_id: s for s in scores}
        return context

    def paginate_queryset(self, queryset):
        self._page_accounts = super().paginate_queryset(queryset)
        return self._page_accounts


class AccountDetailView(OrgAPIMixin, RetrieveAPIView):
    serializer_class = AccountDetailSerializer

    def get_object(self):
        return get_object_or_404(Account.objects.select_related("csm", "am"), org=self.org, pk=self.kwargs["pk"])

    def get_serializer_context(self):
        context = super().get_serializer_context()
        history = list(HealthScore.objects.filter(org=self.org, account_id=self.kwargs["pk"]).order_by("-date")[:180])
        context["history"] = list(reversed(history))
        context["latest_scores"] = {history[0].account_id: history[0]} if history else {}
        return context
