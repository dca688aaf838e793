"""Template helpers shared by every page: health badges, deltas, sparklines, money."""

from decimal import Decimal

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from csm.charts import sparkline_path

register = template.Library()


@register.simple_tag
def health_badge(score, band):
    if score is None:
        return mark_safe('<span class="band band-none" title="No health score yet">–</span>')
    return format_html(
        '<span class="band band-{}" title="Health {} ({})">{}</span>', band, round(score), band, round(score)
    )


@register.simple_tag
def delta(value):
    if value is None:
        return ""
    value = float(value)
    if value > 0:
        return format_html(
            '<span class="delta-up" aria-label="up {} overnight">▲ {}</span>', f"{value:g}", f"{value:g}"
        )
    if value < 0:
        return format_html(
            '<span class="delta-down" aria-label="down {} overnight">▼ {}</span>', f"{-value:g}", f"{-value:g}"
        )
    return mark_safe('<span class="delta-flat" aria-label="unchanged">±0</span>')


@register.simple_tag
def sparkline(values, width=96, height=24):
    path = sparkline_path(list(values or []), width=width, height=height)
    if not path:
        return mark_safe('<span class="muted small">no trend yet</span>')
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="30-day health trend">'
        '<path d="{}"/></svg>',
        width,
        height,
        width,
        height,
        path,
    )


@register.filter
def money(value, currency="USD"):
    """Compact money: 1.2M, 85k, 950."""
    if value is None or value == "":
        return "–"
    amount = Decimal(value)
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "USD").upper(), "")
    for limit, suffix in ((Decimal(1_000_000), "M"), (Decimal(1_000), "k")):
        if abs(amount) >= limit:
            return f"{symbol}{amount / limit:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{symbol}{amount:.0f}"
