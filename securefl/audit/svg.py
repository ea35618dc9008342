"""A tiny inline-SVG line chart (no JS, no CDN) for self-contained HTML reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_MAX_POINTS = 600


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _label(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _thin(
    xs: Sequence[float], ys: Sequence[float | None]
) -> tuple[list[float], list[float | None]]:
    if len(xs) <= _MAX_POINTS:
        return list(xs), list(ys)
    step = len(xs) / _MAX_POINTS
    idx = sorted({int(i * step) for i in range(_MAX_POINTS)} | {len(xs) - 1})
    return [xs[i] for i in idx], [ys[i] for i in idx]


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 260,
    markers: bool = False,
    connect_gaps: bool = False,
    hlines: Mapping[str, float] | None = None,
) -> str:
    """An SVG line chart; ``None`` values leave gaps (or are skipped with ``connect_gaps``).

    ``hlines`` draws labelled dashed horizontal lines (e.g. the ε budget); a series without
    any value keeps its legend entry, drawn hollow, so its label can say why. All text is
    escaped."""
    left, right, top, bottom = 64, 16, 44, 44
    pw, ph = width - left - right, height - top - bottom
    values = [y for ys in series.values() for y in ys if y is not None and math.isfinite(y)]
    lines = {k: v for k, v in (hlines or {}).items() if math.isfinite(v)}
    if values:
        values += list(lines.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="18" class="ct">{escape(title)}</text>',
    ]
    if not xs or not values:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="muted">'
            "no data recorded</text></svg>"
        )
        return "".join(parts)
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    y_ticks = nice_ticks(min(0.0, min(values)), max(values))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if y_hi == y_lo:
        y_hi = y_lo + 1

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    for t in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(_label(t))}</text>"
        )
    integer_x = all(float(x).is_integer() for x in xs)
    for t in nice_ticks(x_lo, x_hi, 6):
        if x_lo <= t <= x_hi and (not integer_x or float(t).is_integer()):
            parts.append(
                f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                f"{escape(_label(t))}</text>"
            )
    parts.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis"/>'
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="al">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle"'
        f' class="al">{escape(y_label)}</text>'
    )
    for label, yv in lines.items():
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(yv):.1f}" y2="{py(yv):.1f}"'
            f' stroke="#b00020" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{left + pw - 4}" y="{py(yv) - 5:.1f}" text-anchor="end" class="lg"'
            f' fill="#b00020">{escape(label)}</text>'
        )
    lx = float(left)
    for i, (name, ys) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        txs, tys = _thin(xs, ys)
        segment: list[str] = []
        segments: list[list[str]] = []
        for x, y in zip(txs, tys, strict=True):
            if y is None or not math.isfinite(y):
                if connect_gaps:
                    continue
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{px(x):.1f},{py(y):.1f}")
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) == 1 or markers:
                for pt in seg:
                    cx, cy = pt.split(",")
                    parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            if len(seg) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.8"'
                    f' points="{" ".join(seg)}"/>'
                )
        empty = not any(y is not None and math.isfinite(y) for y in ys)
        fill = f'fill="none" stroke="{color}"' if empty else f'fill="{color}"'
        parts.append(
            f'<rect x="{lx:.0f}" y="26" width="10" height="10" {fill}/>'
            f'<text x="{lx + 14:.0f}" y="35" class="lg">{escape(name)}</text>'
        )
        lx += 30 + 6.2 * len(name)
    parts.append("</svg>")
    return "".join(parts)
