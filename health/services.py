"""Writes for the health model and scores."""

import json
from datetime import date, timedelta

import pandas as pd
from django.core.exceptions import ValidationError
from django.db import transaction

from health.bulk import server_cursor, stage_frame
from health.models import (
    COMPONENTS,
    DEFAULT_BANDS,
    DEFAULT_GATES,
    DEFAULT_STALE_AFTER_DAYS,
    DEFAULT_WEIGHTS,
    HealthModel,
)
from health.scoring import Frames, HealthConfig, localize, score_accounts
from health.selectors import health_model_current, org_frames, scores_frame


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


def health_model_validate(*, weights: dict, bands: dict, gates: dict, stale_after_days: int) -> None:
    """Raise ValidationError, in words an admin can act on, when a model version would not make sense."""
    unknown = set(weights) - set(COMPONENTS)
    if unknown:
        raise ValidationError(f"Unknown components {sorted(unknown)}; use {', '.join(COMPONENTS)}.")
    for name, weight in weights.items():
        if not isinstance(weight, int | float) or weight < 0:
            raise ValidationError(f"The weight of {name} must be a number of 0 or more, not {weight!r}.")
    if sum(weights.values()) <= 0:
        raise ValidationError("At least one component needs a weight above 0.")
    green, yellow = bands.get("green"), bands.get("yellow")
    if not all(isinstance(v, int | float) for v in (green, yellow)) or not 0 < yellow < green <= 100:
        raise ValidationError("Bands need 0 < yellow < green <= 100 (green from `green`, yellow from `yellow`).")
    cap = gates.get("red_cap")
    if not isinstance(cap, int | float) or not 0 <= cap < yellow:
        raise ValidationError(f"The gate cap must lie in the red band (0 to {yellow - 1}), not {cap!r}.")
    days = gates.get("invoice_past_due_days")
    if days is not None and (not isinstance(days, int) or days < 0):
        raise ValidationError("invoice_past_due_days must be a whole number of days, or null to switch it off.")
    if not isinstance(stale_after_days, int) or stale_after_days < 0:
        raise ValidationError("stale_after_days must be a whole number of days.")


def health_model_update(
    *,
    org,
    weights: dict | None = None,
    bands: dict | None = None,
    gates: dict | None = None,
    stale_after_days: int | None = None,
    user=None,
) -> HealthModel:
    """Save a change as a new version; past scores keep the version they were computed with."""
    with transaction.atomic():
        # Lock the current version so two admins saving at once get versions n+1 and n+2.
        current = HealthModel.objects.select_for_update().filter(org=org).order_by("-version").first()
        if current is None:
            current = health_model_ensure(org=org)
        new_weights = {**current.weights, **(weights or {})}
        new_bands = {**current.bands, **(bands or {})}
        new_gates = {**current.gates, **(gates or {})}
        stale = current.stale_after_days if stale_after_days is None else stale_after_days
        health_model_validate(weights=new_weights, bands=new_bands, gates=new_gates, stale_after_days=stale)
        return HealthModel.objects.create(
            org=org,
            version=current.version + 1,
            weights=new_weights,
            bands=new_bands,
            gates=new_gates,
            stale_after_days=stale,
            created_by=user,
        )


# Scores of an older model version are left as they are: a score is what the model of its day said.
UPSERT_SCORES = """
    INSERT INTO health_healthscore
        (org_id, account_id, date, model_version, score, band, delta, components, component_dates, excluded, gate)
    SELECT %(org)s, s.account_id, %(day)s, %(version)s, s.score, s.band, s.delta,
           s.components, s.component_dates, s.excluded, s.gate
    FROM staged_scores s
    ON CONFLICT (org_id, account_id, date) DO UPDATE SET
        score = EXCLUDED.score, band = EXCLUDED.band, delta = EXCLUDED.delta,
        components = EXCLUDED.components, component_dates = EXCLUDED.component_dates,
        excluded = EXCLUDED.excluded, gate = EXCLUDED.gate
    WHERE health_healthscore.model_version = EXCLUDED.model_version
"""
STAGED_SCORES = {
    "account_id": "bigint",
    "score": "numeric",
    "band": "text",
    "delta": "numeric",
    "components": "jsonb",
    "component_dates": "jsonb",
    "excluded": "jsonb",
    "gate": "text",
}


def health_scores_write(*, org, day: date, scores: pd.DataFrame) -> int:
    """Upsert one day's scores in one statement; returns the number of rows written."""
    if scores.empty:
        return 0
    dumps = json.dumps
    staged = scores.assign(
        components=[dumps(v) for v in scores["components"]],
        component_dates=[dumps(v) for v in scores["component_dates"]],
        excluded=[dumps(v) for v in scores["excluded"]],
    )
    params = {"org": org.pk, "day": day, "version": int(scores["model_version"].iloc[0])}
    with server_cursor() as cursor:
        stage_frame(cursor, "staged_scores", STAGED_SCORES, staged)
        cursor.execute(UPSERT_SCORES, params)
        return cursor.rowcount


def health_scores_compute(
    *, org, day: date, frames: Frames | None = None, previous: pd.DataFrame | None = None
) -> dict:
    """Score every account of the organization for D and store the scores; returns counts.

    `frames` (the localized frames of (org, D)) and `previous` (the stored scores of D-1) are
    passed by a caller that already has them.
    """
    model = health_model_current(org=org) or health_model_ensure(org=org)
    if frames is None:
        raw = org_frames(org=org, day=day, stale_after_days=model.stale_after_days)
        frames = localize(raw, tz=org.tz, day=day)
    config = HealthConfig.from_model(model)
    if previous is None:
        previous = scores_frame(org=org, day=day - timedelta(days=1))
    scores = score_accounts(frames, day=day, config=config, previous=previous)
    written = health_scores_write(org=org, day=day, scores=scores)
    return {
        "accounts": len(frames.accounts),
        "scores": len(scores),
        "scores_written": written,
        "scores_kept": len(scores) - written,
        "model_version": config.version,
    }
