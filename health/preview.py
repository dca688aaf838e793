"""What a change of weights or bands would do, before it is saved.

The preview re-scores the latest scored day from the components stored with each score, so it
needs no source data and answers in one query: a weighted mean over the components present, the
weights renormalized over them (as the nightly formula does), gated scores kept capped in the red
band, then banded with the new thresholds.
"""

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from django.db import connection

from health.models import COMPONENTS, DEFAULT_GATES
from health.portfolio import latest_scored_day
from health.scoring import band_for
from health.selectors import health_model_current

BANDS = ("green", "yellow", "red")

# Each component as its own column, unpacked by PostgreSQL: no JSON parsing row by row in Python.
STORED_SCORES_SQL = """
    SELECT account_id, band, gate, {components}
    FROM health_healthscore WHERE org_id = %(org)s AND date = %(day)s
""".format(components=", ".join(f"(components ->> '{name}')::float8 AS {name}" for name in COMPONENTS))


def stored_scores(*, org, day: date) -> pd.DataFrame:
    """One day's stored scores: account_id, band, gate and one column per component (NaN if absent)."""
    with connection.cursor() as cursor:
        cursor.execute(STORED_SCORES_SQL, {"org": org.pk, "day": day})
        rows = cursor.fetchall()
    frame = pd.DataFrame.from_records(rows, columns=["account_id", "band", "gate", *COMPONENTS])
    frame[list(COMPONENTS)] = frame[list(COMPONENTS)].astype(float)
    return frame


@dataclass
class BandMove:
    before: str
    after: str
    accounts: int


@dataclass
class Preview:
    day: date | None
    accounts: int = 0
    moves: list[BandMove] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    not_rescored: int = 0

    @property
    def changed(self) -> int:
        return sum(move.accounts for move in self.moves)


def rescore(scores: pd.DataFrame, *, weights: dict, bands: dict, cap: float) -> pd.DataFrame:
    """Stored scores (stored_scores) with the score and band the new weights and bands give.

    `new_band` keeps the current band where no weighted component is present (`rescored` False):
    the formula would not score such an account at all, and the preview should not invent a move.
    """
    values = scores[list(COMPONENTS)]
    weight = pd.Series({name: float(weights.get(name, 0) or 0) for name in COMPONENTS})
    counted = values.notna() & (weight > 0).to_numpy()
    weight_sum = counted.mul(weight, axis=1).sum(axis=1)
    rescored = weight_sum > 0
    score = (values.where(counted, 0.0).mul(weight, axis=1).sum(axis=1) / weight_sum.where(rescored)).round(1)
    gated = scores["gate"].fillna("") != ""
    score = score.where(~gated, np.minimum(score, cap))
    out = scores[["account_id", "band"]].copy()
    out["new_score"] = score
    out["new_band"] = band_for(score.fillna(0), bands).where(rescored, scores["band"])
    out["rescored"] = rescored
    return out


def band_moves(rescored: pd.DataFrame) -> list[BandMove]:
    moved = rescored[rescored["band"] != rescored["new_band"]]
    counts = moved.groupby(["band", "new_band"]).size()
    order = {band: n for n, band in enumerate(BANDS)}
    moves = [BandMove(before, after, int(n)) for (before, after), n in counts.items()]
    return sorted(moves, key=lambda move: (order.get(move.before, 9), order.get(move.after, 9)))


def health_model_preview(*, org, weights: dict, bands: dict) -> Preview:
    """How many accounts of the latest scored day would change band under these weights and bands."""
    day = latest_scored_day(org=org)
    if day is None:
        return Preview(day=None)
    model = health_model_current(org=org)
    cap = float(((model.gates if model else None) or {}).get("red_cap", DEFAULT_GATES["red_cap"]))
    scores = stored_scores(org=org, day=day)
    if scores.empty:
        return Preview(day=day)
    result = rescore(scores, weights=weights, bands=bands, cap=cap)
    return Preview(
        day=day,
        accounts=len(result),
        moves=band_moves(result),
        before={band: int((result["band"] == band).sum()) for band in BANDS},
        after={band: int((result["new_band"] == band).sum()) for band in BANDS},
        not_rescored=int((~result["rescored"]).sum()),
    )
