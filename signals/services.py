"""Writes for signals, thresholds and the triage list."""

from signals.models import SignalThresholds


def thresholds_ensure(*, org) -> SignalThresholds:
    thresholds, _ = SignalThresholds.objects.get_or_create(org=org)
    return thresholds
