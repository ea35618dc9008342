"""The privacy–utility curve of ``utility_bench.py`` as a standalone SVG (no matplotlib).

Accuracy against ε on a log axis, one line per regime (median over seeds, min–max bar at each
ε), and dashed horizontal lines for the non-private federated runs and the centralised linear
probe. Styles are inline attributes so the file renders on its own (e.g. in a README); tick
placement reuses :func:`securefl.audit.svg.nice_ticks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

from securefl.audit.svg import PALETTE, nice_ticks

#: (key in the result's "curve", legend label)
REGIMES = (
    ("device_client_level", "cross-device, client-level DP"),
    ("silo_example_level", "cross-silo, example-level DP"),
)


def _points(curve: Mapping[str, Any]) -> list[tuple[float, Mapping[str, float]]]:
    return sorted((float(k), v) for k, v in curve.items() if k != "inf")


def curve_svg(result: Mapping[str, Any], *, width: int = 680, height: int = 380) -> str:
    """The SVG of ``result`` (the benchmark's JSON object: ``curve``, ``acc_linear_probe``)."""
    left, right, top, bottom = 64, 24, 64, 48
    pw, ph = width - left - right, height - top - bottom
    curves = result["curve"]
    hlines: list[tuple[str, float, str]] = [
        ("linear probe (centralised)", float(result["acc_linear_probe"]), "#444444")
    ]
    for i, (key, label) in enumerate(REGIMES):
        if key in curves and "inf" in curves[key]:
            regime = label.split(",")[0]
            hlines.append((f"{regime}, no DP", float(curves[key]["inf"]["median"]), PALETTE[i]))
    eps = sorted({e for key, _ in REGIMES if key in curves for e, _ in _points(curves[key])})
    lows = [p["min"] for key, _ in REGIMES if key in curves for _, p in _points(curves[key])]
    highs = [p["max"] for key, _ in REGIMES if key in curves for _, p in _points(curves[key])]
    values = lows + highs + [v for _, v, _ in hlines]
    y_ticks = nice_ticks(math.floor(min(values) * 20) / 20, max(values), 6)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x_lo, x_hi = math.log(min(eps) / 1.3), math.log(max(eps) * 1.3)

    def px(e: float) -> float:
        return left + (math.log(e) - x_lo) / (x_hi - x_lo) * pw

    def py(a: float) -> float:
        return top + ph - (a - y_lo) / (y_hi - y_lo) * ph

    title = "Privacy–utility: test accuracy vs ε (median over seeds, bars min–max)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"'
        f' role="img" aria-label="{escape(title)}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for t in y_ticks:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}"'
            f' stroke="#e5e5e5"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">'
            f"{t:g}</text>"
        )
    for e in eps:
        out.append(f'<text x="{px(e):.1f}" y="{top + ph + 16}" text-anchor="middle">{e:g}</text>')
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="black"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="black"/>'
        f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">'
        "ε (log scale; δ = 1e-5 cross-device, 1e-6 cross-silo)</text>"
        f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "test accuracy</text>"
    )
    for k, (label, value, color) in enumerate(hlines):
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(value):.1f}" y2="{py(value):.1f}"'
            f' stroke="{color}" stroke-width="1.2" stroke-dasharray="6 4"/>'
            f'<text x="{left + 4 + k * pw / 3:.1f}" y="{py(value) - 4:.1f}" fill="{color}"'
            f' font-size="11">{escape(label)} {value:.3f}</text>'
        )
    lx = float(left)
    for i, (key, label) in enumerate(REGIMES):
        if key not in curves:
            continue
        color = PALETTE[i]
        pts = _points(curves[key])
        out.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
            + " ".join(f"{px(e):.1f},{py(p['median']):.1f}" for e, p in pts)
            + '"/>'
        )
        for e, p in pts:
            x = px(e) + (i - 0.5) * 6  # side by side where the regimes share an ε
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(p["min"]):.1f}"'
                f' y2="{py(p["max"]):.1f}" stroke="{color}" stroke-width="1.5"/>'
                f'<circle cx="{x:.1f}" cy="{py(p["median"]):.1f}" r="3.5" fill="{color}"/>'
            )
        out.append(
            f'<rect x="{lx:.0f}" y="32" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14:.0f}" y="41">{escape(label)}</text>'
        )
        lx += 40 + 6.4 * len(label)
    out.append("</svg>")
    return "".join(out)


def _cell(s: Mapping[str, Any], seeds: int | None = None) -> str:
    """median [min–max], with the run count when it differs from ``seeds``."""
    text = f"{s['median']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"
    n = len(s.get("values", ()))
    return text if seeds is None or n in (0, seeds) else f"{text} (n = {n})"


def markdown(result: Mapping[str, Any], command: str) -> str:
    """The README subsection: medians with min–max spreads, the targets, the image link."""
    curves = result["curve"]
    dev, silo = curves["device_client_level"], curves["silo_example_level"]
    eps = sorted({float(k) for c in (dev, silo) for k in c if k != "inf"})
    rows = [
        "| ε | cross-device, client-level DP (δ = 1e-5)"
        " | cross-silo, example-level DP (δ = 1e-6) |",
        "|---|---|---|",
    ]
    for e in eps:
        key = f"{e:g}"
        rows.append(
            f"| {key} | {_cell(dev[key], result['seeds']) if key in dev else '—'} |"
            f" {_cell(silo[key], result['seeds']) if key in silo else '—'} |"
        )
    n_all = result["seeds"]
    rows.append(f"| no DP | {_cell(dev['inf'], n_all)} | {_cell(silo['inf'], n_all)} |")
    targets = [
        ("acc_ratio_eps8_device", "≥ 0.95"),
        ("acc_ratio_eps3_device", "≥ 0.90"),
        ("acc_ratio_eps8_silo", "≥ 0.95"),
        ("acc_ratio_eps1_silo", "≥ 0.85"),
    ]
    ratio_rows = ["| ratio (DP ÷ no DP, same seed) | median [min–max] | target |", "|---|---|---|"]
    ratio_rows += [
        f"| `{k}` | {_cell(result[k], n_all) if k in result else 'not run (stopped)'} | {t} |"
        for k, t in targets
    ]
    n, n_silo = result["seeds"], result.get("seeds_silo", result["seeds"])
    seeds = f"{n} seeds" if n == n_silo else f"{n} (cross-device) and {n_silo} (cross-silo) seeds"
    return "\n".join(
        [
            "### Privacy–utility",
            "",
            "Test accuracy of a softmax head on frozen all-MiniLM-L6-v2 embeddings, trained with "
            "securefl on the Pang & Lee movie-review data (3 classes, 11,069 train / 2,767 test "
            f"texts; `benchmarks/utility_bench.py`), median over {seeds} [min–max]. "
            "Cross-device: 1,000 clients, ~200 sampled a round (Poisson q = 0.2), 50 rounds, "
            "client-level DP (the privacy unit is a client's whole data). Cross-silo: 5 sites, "
            "20 rounds, DP-SGD inside each site and SecAgg across sites (the unit is one "
            "example).",
            "",
            "![privacy–utility curve](benchmarks/results/privacy_utility.svg)",
            "",
            *rows,
            "",
            f"Centralised linear probe (logistic regression, same split): "
            f"{result['acc_linear_probe']:.3f}.",
            "",
            *ratio_rows,
            "",
            f"Reproduce (about {round(result.get('wall_s', 0) / 60)} minutes on a shared 2-core "
            f"machine, 1-min load {result.get('load_avg_1min_at_end', '?')} at the end): "
            f"`{command}`",
        ]
    )
