"""A dependency-free SVG line plot, for the measured curves the README shows (no matplotlib in the dependencies)."""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [2.0**k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
    step = 10 ** math.floor(math.log10((hi - lo) or 1.0))
    step = step / 5 if (hi - lo) / step < 2 else step / 2 if (hi - lo) / step < 5 else step
    return [round(lo + k * step, 10) for k in range(int((hi - lo) / step + 1e-9) + 1)]


def line_plot(
    panels: list[tuple[str, dict[str, list[tuple[float, float]]]]],
    x_label: str,
    y_label: str,
    y_range: tuple[float, float],
    log_x: bool = True,
    panel_size: tuple[int, int] = (360, 260),
) -> str:
    """SVG text: side-by-side panels ``(title, {series: [(x, y), ...]})`` sharing axes and a legend of the series.

    ``log_x``: base-2 logarithmic x axis (step counts). Points are drawn as markers joined by lines.
    """
    names = list(dict.fromkeys(name for _, series in panels for name in series))
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
    xs = [x for _, series in panels for points in series.values() for x, _ in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:  # one x value: centre it
        x_lo, x_hi = (x_lo / 2, x_hi * 2) if log_x else (x_lo - 1, x_hi + 1)
    y_lo, y_hi = y_range
    w, h = panel_size
    left, top, bottom, gap = 50, 30, 40, 20
    legend_w = 150
    width, height = left + len(panels) * (w + gap) + legend_w, top + h + bottom

    def fx(x, ox):
        t = (math.log(x) - math.log(x_lo)) / (math.log(x_hi) - math.log(x_lo)) if log_x else (x - x_lo) / (x_hi - x_lo)
        return ox + t * w

    def fy(y):
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for p, (title, series) in enumerate(panels):
        ox = left + p * (w + gap)
        out.append(f'<text x="{ox + w / 2}" y="{top - 10}" text-anchor="middle" font-size="13">{escape(title)}</text>')
        out.append(f'<rect x="{ox}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#444"/>')
        for x in _ticks(x_lo, x_hi, log_x):
            if x_lo <= x <= x_hi:
                X = fx(x, ox)
                out.append(f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{top + h}" stroke="#ddd"/>')
                out.append(f'<text x="{X:.1f}" y="{top + h + 14}" text-anchor="middle">{x:g}</text>')
        for y in _ticks(y_lo, y_hi, False):
            Y = fy(y)
            out.append(f'<line x1="{ox}" y1="{Y:.1f}" x2="{ox + w}" y2="{Y:.1f}" stroke="#ddd"/>')
            if p == 0:
                out.append(f'<text x="{ox - 6}" y="{Y + 4:.1f}" text-anchor="end">{y:g}</text>')
        out.append(f'<text x="{ox + w / 2}" y="{top + h + 32}" text-anchor="middle">{escape(x_label)}</text>')
        for name, points in series.items():
            path = " ".join(f"{fx(x, ox):.1f},{fy(y):.1f}" for x, y in sorted(points))
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour[name]}" stroke-width="1.6"/>')
            out.extend(
                f'<circle cx="{fx(x, ox):.1f}" cy="{fy(y):.1f}" r="2.4" fill="{colour[name]}"/>' for x, y in points
            )
    out.append(
        f'<text transform="translate(14,{top + h / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
    )
    lx = left + len(panels) * (w + gap)
    for i, name in enumerate(names):
        y = top + 12 + 16 * i
        out.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 18}" y2="{y - 4}" stroke="{colour[name]}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 24}" y="{y}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
