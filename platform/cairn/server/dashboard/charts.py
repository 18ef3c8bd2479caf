"""Metric histories as SVG line charts, drawn on the server: a loss curve, or two runs' overlaid.

A chart here is axes, "nice" ticks (1, 2 or 5 times a power of ten), one polyline per series and a
legend: what a person needs to see a curve go down and compare two of them. A JS chart library
would be most of the dashboard's weight for that. Series colours come from CSS classes
(`series-0`, `series-1`); every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 38, 38
MAX_POINTS = 1500  # a polyline longer than the chart is wide only costs bytes


@dataclass(frozen=True)
class Series:
    """One line: its name in the legend and its (step, value) points."""

    label: str
    points: Sequence[tuple[float, float]]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda st: abs((hi - lo) / st - count))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def fmt(value: float) -> str:
    """A tick label: at most four significant digits, thousands as k, M, G."""
    if value == 0:
        return "0"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / (size if unit != 'k' else 1e3):.4g}{unit}"
    if abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    finite = [(s, v) for s, v in points if math.isfinite(v) and math.isfinite(s)]
    if len(finite) <= MAX_POINTS:
        return finite
    every = math.ceil(len(finite) / MAX_POINTS)
    return finite[::every] + ([finite[-1]] if (len(finite) - 1) % every else [])


def line_chart(
    title: str, series: Sequence[Series], x_label: str = "step", width: int = WIDTH
) -> Markup:
    """A chart of `series` (empty markup when none has a finite point)."""
    lines = [(s.label, _thin(s.points)) for s in series]
    lines = [(label, pts) for label, pts in lines if pts]
    if not lines:
        return Markup("")
    xs = [p[0] for _, pts in lines for p in pts]
    ys = [p[1] for _, pts in lines for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return TOP + (1 - (v - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><text class="title" x="{LEFT}" y="18">{escape(title)}</text>'
        f'<g class="grid">'
    ]
    for t in nice_ticks(y0, y1):
        out.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
            f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" class="ytick">{fmt(t)}</text>'
        )
    for t in nice_ticks(x0, x1, 6):
        out.append(
            f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 16}" class="xtick">{fmt(t)}</text>'
        )
    out.append(
        f'</g><rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>'
        f'<text class="axis" x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}">{escape(x_label)}'
        "</text>"
    )
    for i, (label, pts) in enumerate(lines):
        css = f"series-{i % 4}"
        if len(pts) == 1:
            out.append(
                f'<circle class="{css}" cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="3"/>'
            )
        else:
            coords = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in pts)
            out.append(f'<polyline class="{css}" points="{coords}"/>')
        if len(lines) > 1:
            lx = width - RIGHT - 200
            ly = 14 + i * 13
            out.append(
                f'<line class="{css}" x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}"/>'
                f'<text class="legend" x="{lx + 24}" y="{ly}">{escape(label[:30])}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))
