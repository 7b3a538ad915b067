"""Inline SVG line charts for the HTML reports (:mod:`azr.report.run`, :mod:`azr.report.compare`): no JavaScript.

:func:`svg_line_chart` draws one polyline per :class:`Series` with round ticks; :func:`figure` wraps a chart with
its caption and legend. Labels and titles are escaped here; colours and numbers are the caller's.
"""

from __future__ import annotations

import html
import math
from typing import NamedTuple

_e = html.escape
TYPE_COLOR = {"deduction": "#1f77b4", "abduction": "#d62728", "induction": "#2ca02c"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class Series(NamedTuple):
    label: str
    metric: str
    color: str
    dashed: bool = False


def ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering ``[lo, hi]``: ``ticks(0.03, 0.91)`` gives ``[0, 0.2, ..., 1.0]``."""
    if hi <= lo:
        lo, hi = (lo - 0.5, hi + 0.5) if lo else (0.0, 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(s * mag for s in steps if s * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def fmt_number(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.2e}"


def svg_line_chart(
    points: dict[Series, list[tuple[float, float]]],
    y_range: tuple[float, float] | None = None,
    x_range: tuple[float, float] | None = None,
) -> str:
    """An inline SVG line chart: one polyline per series over (step, value) points, with axes and ticks.

    The axes cover the data and ``x_range`` / ``y_range`` when given (a rate chart passes ``(0, 1)``)."""
    w, h, left, right, top, bottom = 520, 230, 56, 14, 10, 30
    xs = [x for pts in points.values() for x, _ in pts] + list(x_range or ())
    ys = [y for pts in points.values() for _, y in pts] + list(y_range or ())
    xt, yt = ticks(min(xs), max(xs), 6, integer=True), ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    out = [
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    for y in yt:
        out.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{fmt_number(y)}</text>')
    for x in xt:
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{fmt_number(x)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}"/>')
    for s, pts in points.items():
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{coords}">')
        out.append(f"<title>{_e(s.metric)}</title></polyline>")
        if len(pts) <= 30:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{s.color}"/>' for x, y in pts]
    out.append("</svg>")
    return "".join(out)


def figure(
    title: str,
    points: dict[Series, list[tuple[float, float]]],
    y_range: tuple[float, float] | None = None,
    x_range: tuple[float, float] | None = None,
) -> str:
    """A captioned chart with its legend; "" when no series has a point."""
    points = {s: p for s, p in points.items() if p}
    if not points:
        return ""
    legend = "".join(
        f'<span class="key"><i style="border-color:{s.color};border-style:{"dashed" if s.dashed else "solid"}">'
        f"</i>{_e(s.label)}</span>"
        for s in points
    )
    return (
        f"<figure><figcaption>{_e(title)}</figcaption>{svg_line_chart(points, y_range, x_range)}"
        f'<div class="legend">{legend}</div></figure>'
    )


__all__ = ["PALETTE", "TYPE_COLOR", "Series", "figure", "fmt_number", "svg_line_chart", "ticks"]
