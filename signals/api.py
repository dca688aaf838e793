"""/api/v1/ triage, signals and runs of the caller's organization."""

from datetime import date, timedelta

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role
from csm.tenancy import OrgAPIMixin
from health.models import HealthScore
from signals.models import NightlyRun, RunStatus, Signal, TriageItem
from signals.services import signal_done, signal_snooze


class AccountRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    name = serializers.CharField()
    tier = serializers.CharField()
    arr = serializers.DecimalField(max_digits=14, decimal_places=2)


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Signal
        fields = [
            "id",
            "type",
            "cause",
            "action",
            "evidence",
            "is_new",
            "severity",
            "status",
            "first_seen",
            "last_seen",
            "deadline",
            "snoozed_until",
        ]


class SignalDetailSerializer(SignalSerializer):
    account = AccountRefSerializer()

    class Meta(SignalSerializer.Meta):
        fields = [*SignalSerializer.Meta.fields, "account"]


class HealthRefSerializer(serializers.Serializer):
    date = serializers.DateField()
    score = serializers.DecimalField(max_digits=5, decimal_places=1)
    band = serializers.CharField()
    delta = serializers.DecimalField(max_digits=5, decimal_places=1, allow_null=True)


class TriageItemSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    group = serializers.CharField()
    priority = serializers.FloatField()
    reasons = serializers.ListField(child=serializers.CharField())
    account = AccountRefSerializer()
    health = HealthRefSerializer(allow_null=True)
    signals = SignalSerializer(many=True)


class TriageSerializer(serializers.Serializer):
    date = serializers.DateField()
    items = TriageItemSerializer(many=True)


def latest_run_date(*, org) -> date | None:
    run = NightlyRun.objects.filter(org=org, status=RunStatus.SUCCEEDED).order_by("-run_date").first()
    return run.run_date if run else None


class TriageView(OrgAPIMixin, APIView):
    """The ranked list of a day: accounts with at least one open signal, best first."""

    @extend_schema(
        parameters=[OpenApiParameter("date", date, description="YYYY-MM-DD; default: the latest nightly run")],
        responses=TriageSerializer,
    )
    def get(self, request):
        day = self._day(request)
        items = list(TriageItem.objects.filter(org=self.org, date=day).select_related("account").order_by("rank"))
        signal_ids = [signal_id for item in items for signal_id in item.signal_ids]
        signals = {s.pk: s for s in Signal.objects.filter(org=self.org, pk__in=signal_ids)}
        scores = {
            s.account_id: s
            for s in HealthScore.objects.filter(org=self.org, date=day, account_id__in=[i.account_id for i in items])
        }
        payload = {
            "date": day,
            "items": [
                {
                    "rank": item.rank,
                    "group": item.group,
                    "priority": item.priority,
                    "reasons": item.reasons,
                    "account": item.account,
                    "health": scores.get(item.account_id),
                    "signals": [signals[i] for i in item.signal_ids if i in signals],
                }
                for item in items
            ],
        }
        return Response(TriageSerializer(payload).data)

    def _day(self, request) -> date:
        raw = request.query_params.get("date")
        if raw:
            try:
                return date.fromisoformat(raw)
            except ValueError as error:
                raise ValidationError({"date": f"{raw!r} is not a date (expected YYYY-MM-DD)."}) from error
        return latest_run_date(org=self.org) or timezone.now().astimezone(self.org.tz).date()


def signal_for_member(*, org, membership, signal_id: int, acting: bool = False) -> Signal:
    """The signal if it is this organization's (404 otherwise); acting on it needs ownership or a lead role."""
    signal = get_object_or_404(Signal.objects.select_related("account"), org=org, pk=signal_id)
    if acting and membership.role not in (Role.ADMIN, Role.LEADER):
        if membership.user_id not in (signal.account.csm_id, signal.account.am_id):
            raise PermissionDenied("Only the account's CSM or AM, a leader or an admin can change this signal.")
    return signal


class SignalDetailView(OrgAPIMixin, RetrieveAPIView):
    serializer_class = SignalDetailSerializer

    def get_object(self):
        return signal_for_member(org=self.org, membership=self.membership, signal_id=self.kwargs["pk"])


class SignalDoneView(OrgAPIMixin, APIView):
    @extend_schema(request=None, responses=SignalDetailSerializer)
    def post(self, request, pk: int):
        signal = signal_for_member(org=self.org, membership=self.membership, signal_id=pk, acting=True)
        signal = signal_done(org=self.org, signal=signal, user=request.user)
        return Response(SignalDetailSerializer(signal).data)


class SnoozeInputSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=90, required=False)
    until = serializers.DateField(required=False)

    def validate(self, attrs):
        if ("days" in attrs) == ("until" in attrs):
            raise serializers.ValidationError("Give either `days` or `until`.")
        return attrs


class SignalSnoozeView(OrgAPIMixin, APIView):
    @extend_schema(request=SnoozeInputSerializer, responses=SignalDetailSerializer)
    def post(self, request, pk: int):
        signal = signal_for_member(org=self.org, membership=self.membership, signal_id=pk, acting=True)
        data = SnoozeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        today = timezone.now().astimezone(self.org.tz).date()
        until = data.validated_data.get("until") or today + timedelta(days=data.validated_data["days"])
        if until <= today:
            raise ValidationError({"until": "Snooze until a future date."})
        signal = signal_snooze(org=self.org, signal=signal, until=until, user=request.user)
        return Response(SignalDetailSerializer(signal).data)


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = NightlyRun
        fields = [
            "id",
            "run_date",
            "status",
            "started_at",
            "finished_at",
            "attempts",
            "stage_timings",
            "counts",
            "error",
        ]


class RunListView(OrgAPIMixin, ListAPIView):
    serializer_class = RunSerializer

    def get_queryset(self):
        return NightlyRun.objects.filter(org=self.org).order_by("-run_date")
