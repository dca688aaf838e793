"""Signal thresholds are edited here; signals and nightly runs are shown read-only."""

from django.contrib import admin

from csm.admin import OrgScopedAdmin
from signals.models import NightlyRun, Signal, SignalThresholds


@admin.register(SignalThresholds)
class SignalThresholdsAdmin(OrgScopedAdmin):
    list_display = ("__str__", "silent_days", "health_drop_points", "go_live_days", "renewal_days")

    def has_add_permission(self, request):
        # One row per organization, created with it.
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(OrgScopedAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ("account", "type", "status", "severity", "first_seen", "last_seen", "cleared_on", "cause")
    list_filter = ("type", "status")
    search_fields = ("cause", "entity_key", "account__name")


@admin.register(NightlyRun)
class NightlyRunAdmin(ReadOnlyAdmin):
    list_display = ("run_date", "status", "attempts", "started_at", "finished_at", "error")
    list_filter = ("status",)
    ordering = ("-run_date",)
