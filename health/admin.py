"""Editing the health model in the Django admin: every save makes a new version."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from csm.admin import OrgScopedAdmin
from health.models import HealthModel
from health.services import health_model_update, health_model_validate


class HealthModelForm(forms.ModelForm):
    class Meta:
        model = HealthModel
        fields = ("weights", "bands", "gates", "stale_after_days")
        help_texts = {
            "weights": 'Per component, e.g. {"usage": 30, "engagement": 25, "support": 15, "billing": 15,'
            ' "onboarding": 15}; 0 leaves a component out.',
            "bands": 'Lowest score of each band: {"green": 70, "yellow": 40}; below yellow is red.',
            "gates": '{"invoice_past_due_days": 30, "champion_gone": true, "red_cap": 39}: a gate caps the'
            " score at red_cap.",
            "stale_after_days": "A component whose newest data is older than this is left out.",
        }

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            try:
                # As health_model_update will save it: the given keys over the current version's.
                current = self.instance
                health_model_validate(
                    weights={**(current.weights or {}), **(cleaned["weights"] or {})},
                    bands={**(current.bands or {}), **(cleaned["bands"] or {})},
                    gates={**(current.gates or {}), **(cleaned["gates"] or {})},
                    stale_after_days=cleaned["stale_after_days"],
                )
            except ValidationError as error:
                raise forms.ValidationError(error.messages) from error
        return cleaned


@admin.register(HealthModel)
class HealthModelAdmin(OrgScopedAdmin):
    form = HealthModelForm
    list_display = ("__str__", "created_at", "created_by", "stale_after_days")
    ordering = ("-version",)

    def save_model(self, request, obj, form, change):
        # Never edit a version in place: scores computed with it must keep meaning what they meant.
        new = health_model_update(
            org=request.org,
            weights=form.cleaned_data["weights"],
            bands=form.cleaned_data["bands"],
            gates=form.cleaned_data["gates"],
            stale_after_days=form.cleaned_data["stale_after_days"],
            user=request.user,
        )
        obj.pk, obj.version, obj.org = new.pk, new.version, new.org

    def has_delete_permission(self, request, obj=None):
        return False
