"""Small inline SVG charts for the reports: scalable to the page's width, the title inside the image, each point's
values shown on hover (an SVG <title>), and nothing to load from a network."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 860, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 230, 48, 56  # the plot area's margins; the legend sits in the right one
PALETTE = ["#1f77b4", "#ee4c2c", "#6a3d9a", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


@dataclass
class Series:
    name: str
    points: list[tuple[float, float, str]] = field(default_factory=list)  # x, y, hover text
    line: bool = False  # join the points in x order
    color: str = ""


def _ticks(low: float, high: float, log: bool) -> list[float]:
    """Round values from at or below `low` to at or above `high`: the axis's range and its labels."""
    if high <= low:
        pad = max(abs(low) * 0.05, 1e-3)
        low, high = low - pad, high + pad
    if log:
        return [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]
    step = 10 ** math.floor(math.log10((high - low) / 5))
    for multiple in (1, 2, 5, 10):
        if (high - low) / (step * multiple) <= 6:
            step *= multiple
            break
    first, last = math.floor(low / step) * step, math.ceil(high / step) * step
    return [first + i * step for i in range(round((last - first) / step) + 1)]


def _label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def chart(
    title: str,
    x_label: str,
    y_label: str,
    series: list[Series],
    x_log: bool = False,
    y_log: bool = False,
    hline: tuple[float, str] | None = None,
) -> str:
    """A scatter or line chart as an inline <svg> in a <figure>; empty series are left out."""
    series = [s for s in series if s.points]
    for index, s in enumerate(series):
        s.color = s.color or PALETTE[index % len(PALETTE)]
    xs = [x for s in series for x, _, _ in s.points if not x_log or x > 0]
    ys = [y for s in series for _, y, _ in s.points if not y_log or y > 0] + ([hline[0]] if hline else [])
    if not xs or not ys:
        return f'<figure class="chart"><p class="note">{html.escape(title)}: nothing measured</p></figure>'
    x_ticks, y_ticks = _ticks(min(xs), max(xs), x_log), _ticks(min(ys), max(ys), y_log)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def scale(value: float, low: float, high: float) -> float:  # log axes
        return (math.log10(value) - math.log10(low)) / ((math.log10(high) - math.log10(low)) or 1)

    def fx(x: float) -> float:
        share = scale(x, x0, x1) if x_log else (x - x0) / ((x1 - x0) or 1)
        return LEFT + share * (WIDTH - LEFT - RIGHT)

    def fy(y: float) -> float:
        share = scale(y, y0, y1) if y_log else (y - y0) / ((y1 - y0) or 1)
        return HEIGHT - BOTTOM - share * (HEIGHT - TOP - BOTTOM)

    parts = [
        f'<text x="{WIDTH / 2}" y="26" text-anchor="middle" font-size="17" font-weight="600">'
        f"{html.escape(title)}</text>",
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle" font-size="13">'
        f"{html.escape(x_label)}</text>",
        f'<text transform="translate(18 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
        f'font-size="13">{html.escape(y_label)}</text>',
    ]
    for tick in x_ticks:
        x = fx(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#e6e6e6"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" font-size="11">{_label(tick)}</text>'
        )
    for tick in y_ticks:
        y = fy(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_label(tick)}</text>')
    if hline:
        y = fy(hline[0])
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" stroke-dasharray="4 3">'
            f"<title>{html.escape(hline[1])}</title></line>"
        )
    for index, s in enumerate(series):
        points = sorted(s.points) if s.line else s.points
        visible = [(x, y, tip) for x, y, tip in points if (not x_log or x > 0) and (not y_log or y > 0)]
        if s.line and len(visible) > 1:
            path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in visible)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.5"/>')
        for x, y, tip in visible:
            parts.append(
                f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="5" fill="{s.color}" fill-opacity="0.85">'
                f"<title>{html.escape(tip)}</title></circle>"
            )
        legend_y = TOP + 8 + index * min(20, (HEIGHT - TOP - 16) / len(series))  # many series: closer rows
        parts.append(f'<circle cx="{WIDTH - RIGHT + 18}" cy="{legend_y}" r="5" fill="{s.color}"/>')
        parts.append(
            f'<text x="{WIDTH - RIGHT + 28}" y="{legend_y + 4}" font-size="12">{html.escape(s.name[:30])}</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" fill="none" '
        'stroke="#999"/>'
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'font-family="system-ui, sans-serif"><title>{html.escape(title)}</title>{"".join(parts)}</svg>'
    )
    return f'<figure class="chart">{svg}</figure>'
