"""Server-side SVG charts: sparklines and health trends, no JavaScript and no CDN."""

from dataclasses import dataclass
from datetime import date


def _scale(values: list[float], lo: float, hi: float, height: float, pad: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [pad + (height - 2 * pad) * (1 - (v - lo) / span) for v in values]


def sparkline_path(values: list[float], *, width: int = 96, height: int = 24) -> str:
    """An SVG path `d` for a small trend line on a fixed 0-100 scale (health scores)."""
    points = [v for v in values if v is not None]
    if len(points) < 2:
        return ""
    ys = _scale(points, 0, 100, height, 2)
    step = width / (len(points) - 1)
    return "M" + " L".join(f"{i * step:.1f},{y:.1f}" for i, y in enumerate(ys))


@dataclass
class TrendChart:
    width: int
    height: int
    path: str
    zones: list[dict]
    gridlines: list[dict]
    labels: list[dict]
    points: list[dict]


def trend_chart(
    series: list[tuple[date, float]], *, green: float = 70, yellow: float = 40, width: int = 1100, height: int = 240
) -> TrendChart:
    """A health trend over time with the band zones behind it."""
    left, right, top, bottom = 32, 8, 8, 22
    inner_w, inner_h = width - left - right, height - top - bottom

    def y_of(value: float) -> float:
        return top + inner_h * (1 - value / 100)

    zones = [
        {"cls": "zone-green", "y": y_of(100), "h": y_of(green) - y_of(100)},
        {"cls": "zone-yellow", "y": y_of(green), "h": y_of(yellow) - y_of(green)},
        {"cls": "zone-red", "y": y_of(yellow), "h": y_of(0) - y_of(yellow)},
    ]
    gridlines = [{"y": y_of(v), "label": v} for v in (0, 25, 50, 75, 100)]
    if not series:
        return TrendChart(width, height, "", zones, gridlines, [], [])
    n = len(series)
    step = inner_w / max(n - 1, 1)
    points = [
        {"x": left + i * step, "y": y_of(float(score)), "date": day, "score": score}
        for i, (day, score) in enumerate(series)
    ]
    path = "M" + " L".join(f"{p['x']:.1f},{p['y']:.1f}" for p in points)
    every = max(1, n // 6)
    labels = [{"x": p["x"], "text": p["date"].strftime("%-d %b")} for i, p in enumerate(points) if i % every == 0]
    for zone in zones:
        zone.update(x=left, w=inner_w)
    for line in gridlines:
        line.update(x1=left, x2=left + inner_w)
    return TrendChart(width, height, path, zones, gridlines, labels, points)
