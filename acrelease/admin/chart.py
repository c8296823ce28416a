"""The dashboard's one chart, drawn on the server as inline SVG: devices per reported version, hourly.

No chart library and no script: the page works offline and prints as it looks. Colours come from a
fixed palette readable on light and dark backgrounds; text takes the page's colours through CSS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
OTHER_COLOUR = "#9ca3af"
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 24


def versions_chart(hours: Sequence[int], series: Mapping[str, Mapping[int, int]], most: int = 7) -> Markup:
    """A line per version (the ``most`` largest now; the rest summed as "other") over ``hours``
    (epoch milliseconds at the start of each hour, oldest first)."""
    if not hours or not series:
        return Markup('<p class="muted">No history yet: the servers record the fleet\'s versions once an hour.</p>')
    latest = hours[-1]
    ranked = sorted(series, key=lambda v: (-series[v].get(latest, 0), v))
    shown = ranked[:most]
    lines: dict[str, list[int]] = {v: [series[v].get(h, 0) for h in hours] for v in shown}
    rest = ranked[most:]
    if rest:
        lines["other"] = [sum(series[v].get(h, 0) for v in rest) for h in hours]
    top = max(1, max(max(values) for values in lines.values()))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (len(hours) - 1) if len(hours) > 1 else plot_w / 2)

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="devices per version, hourly">']
    for fraction in (0, 0.5, 1):
        value = round(top * fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
                     f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value}</text>')
    days = [i for i, hour in enumerate(hours) if _utc(hour).hour == 0]
    for i in days:
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                     f'{_utc(hours[i]).strftime("%a %d")}</text>')
    legend = []
    for number, (version, values) in enumerate(lines.items()):
        colour = OTHER_COLOUR if version == "other" and rest else PALETTE[number % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        name = escape(version)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f'<title>{name}: {values[-1]} now</title></polyline>'
                     f'<circle cx="{x(len(values) - 1):.1f}" cy="{y(values[-1]):.1f}" r="3" fill="{colour}"/>')
        legend.append(f'<span><i style="background:{colour}"></i>{name} ({values[-1]})</span>')
    parts.append("</svg>")
    return Markup("".join(parts) + '<div class="legend">' + "".join(legend) + "</div>")


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
