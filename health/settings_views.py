"""Health model and signal thresholds (admins only), with a preview of band changes before saving."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.generic import TemplateView

from accounts.models import Role
from csm.tenancy import OrgViewMixin
from health.models import COMPONENTS, DEFAULT_BANDS, DEFAULT_GATES, DEFAULT_WEIGHTS
from health.preview import health_model_preview
from health.selectors import health_model_current
from health.services import health_model_ensure, health_model_update
from signals.models import SignalThresholds
from signals.services import thresholds_ensure

COMPONENT_LABELS = {
    "usage": "Usage & adoption",
    "engagement": "Client engagement",
    "support": "Support",
    "billing": "Billing",
    "onboarding": "Onboarding progress",
}


def _whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class HealthModelForm(forms.Form):
    green_min = forms.IntegerField(label="Green from", min_value=1, max_value=100)
    yellow_min = forms.IntegerField(label="Yellow from", min_value=1, max_value=100)
    invoice_past_due_days = forms.IntegerField(
        label="Invoice past due (days)",
        min_value=0,
        max_value=365,
        required=False,
        help_text="An invoice overdue longer than this caps the score in the red band. Empty: off.",
    )
    champion_gone = forms.BooleanField(
        label="Champion gone caps the score", required=False, help_text="When every champion has left the customer."
    )
    stale_after_days = forms.IntegerField(
        label="Stale after (days)",
        min_value=0,
        max_value=365,
        help_text="A component whose newest data is older is left out and its weight spread over the others.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Weights first, in the order of the components.
        weight_fields = {
            f"weight_{name}": forms.FloatField(label=COMPONENT_LABELS[name], min_value=0, max_value=100)
            for name in COMPONENTS
        }
        self.fields = {**weight_fields, **self.fields}

    @classmethod
    def initial_from(cls, model) -> dict:
        weights = {**DEFAULT_WEIGHTS, **(model.weights or {})}
        bands = {**DEFAULT_BANDS, **(model.bands or {})}
        gates = {**DEFAULT_GATES, **(model.gates or {})}
        return {
            **{f"weight_{name}": _whole(weights[name]) for name in COMPONENTS},
            "green_min": bands["green"],
            "yellow_min": bands["yellow"],
            "invoice_past_due_days": gates.get("invoice_past_due_days"),
            "champion_gone": bool(gates.get("champion_gone")),
            "stale_after_days": model.stale_after_days,
        }

    def clean(self):
        data = super().clean()
        weights = [data.get(f"weight_{name}") for name in COMPONENTS]
        if all(weight is not None for weight in weights) and sum(weights) <= 0:
            raise ValidationError("At least one component needs a weight above 0.")
        green, yellow = data.get("green_min"), data.get("yellow_min")
        if green is not None and yellow is not None and green <= yellow:
            self.add_error("green_min", f"Green must start above yellow ({yellow}).")
        return data

    @property
    def weights(self) -> dict:
        return {name: _whole(self.cleaned_data[f"weight_{name}"]) for name in COMPONENTS}

    @property
    def bands(self) -> dict:
        return {"green": self.cleaned_data["green_min"], "yellow": self.cleaned_data["yellow_min"]}

    @property
    def gates(self) -> dict:
        return {
            "invoice_past_due_days": self.cleaned_data["invoice_past_due_days"],
            "champion_gone": self.cleaned_data["champion_gone"],
        }


class ThresholdsForm(forms.ModelForm):
    class Meta:
        model = SignalThresholds
        fields = [
            "silent_days",
            "health_drop_points",
            "go_live_days",
            "follow_up_days",
            "renewal_days",
            "plan_limit_percent",
            "payment_lookback_days",
            "support_spike_min_tickets",
            "support_spike_ratio",
        ]
        labels = {
            "silent_days": "Silent after (days)",
            "health_drop_points": "Health drop (points)",
            "go_live_days": "Go-live within (days)",
            "follow_up_days": "Follow-up after due (days)",
            "renewal_days": "Renewal within (days)",
            "plan_limit_percent": "Near plan limit (% of seats)",
            "payment_lookback_days": "Payment look-back (days)",
            "support_spike_min_tickets": "Support spike: at least (tickets)",
            "support_spike_ratio": "Support spike: times the weekly average",
        }

    def clean_plan_limit_percent(self):
        value = self.cleaned_data["plan_limit_percent"]
        if not 1 <= value <= 100:
            raise ValidationError("Use a percentage from 1 to 100.")
        return value

    def clean_support_spike_ratio(self):
        value = self.cleaned_data["support_spike_ratio"]
        if value <= 0:
            raise ValidationError("The ratio must be above 0.")
        return value


class HealthSettingsView(OrgViewMixin, TemplateView):
    template_name = "health/model_settings.html"
    allowed_roles = (Role.ADMIN,)

    def get_context_data(self, **kwargs):
        model = health_model_current(org=self.org) or health_model_ensure(org=self.org)
        thresholds = kwargs.pop("thresholds", None) or thresholds_ensure(org=self.org)
        return super().get_context_data(
            model=model,
            model_form=kwargs.pop("model_form", None) or HealthModelForm(initial=HealthModelForm.initial_from(model)),
            thresholds_form=kwargs.pop("thresholds_form", None) or ThresholdsForm(instance=thresholds),
            **kwargs,
        )

    def post(self, request, *args, **kwargs):
        thresholds = thresholds_ensure(org=self.org)
        model_form = HealthModelForm(request.POST)
        thresholds_form = ThresholdsForm(request.POST, instance=thresholds)
        if request.POST.get("preview"):
            return self._preview(request, model_form, thresholds_form)
        if not (model_form.is_valid() and thresholds_form.is_valid()):
            return self._invalid(model_form, thresholds_form, thresholds)
        try:
            saved = health_model_update(
                org=self.org,
                weights=model_form.weights,
                bands=model_form.bands,
                gates=model_form.gates,
                stale_after_days=model_form.cleaned_data["stale_after_days"],
                user=request.user,
            )
        except ValidationError as error:
            model_form.add_error(None, error)
            return self._invalid(model_form, thresholds_form, thresholds)
        thresholds_form.save()
        messages.success(
            request,
            f"Saved health model version {saved.version} and the signal thresholds; the next nightly run uses them.",
        )
        return redirect("health-settings", org_slug=self.org.slug)

    def _invalid(self, model_form, thresholds_form, thresholds):
        context = self.get_context_data(model_form=model_form, thresholds_form=thresholds_form, thresholds=thresholds)
        return self.render_to_response(context)

    def _preview(self, request, model_form, thresholds_form):
        preview = None
        if model_form.is_valid():
            preview = health_model_preview(org=self.org, weights=model_form.weights, bands=model_form.bands)
        if request.headers.get("HX-Request"):
            return render(request, "health/_preview.html", {"preview": preview, "model_form": model_form})
        context = self.get_context_data(model_form=model_form, thresholds_form=thresholds_form, preview=preview)
        return self.render_to_response(context)
