"""Writes for the health model and scores."""

from health.models import DEFAULT_BANDS, DEFAULT_GATES, DEFAULT_STALE_AFTER_DAYS, DEFAULT_WEIGHTS, HealthModel


def health_model_ensure(*, org) -> HealthModel:
    """The organization's current health model, creating version 1 with the defaults."""
    current = HealthModel.objects.filter(org=org).order_by("-version").first()
    if current is None:
        current = HealthModel.objects.create(
            org=org,
            version=1,
            weights=dict(DEFAULT_WEIGHTS),
            bands=dict(DEFAULT_BANDS),
            gates=dict(DEFAULT_GATES),
            stale_after_days=DEFAULT_STALE_AFTER_DAYS,
        )
    return current
