"""Self-contained HTML rendering of a report: inline CSS, inline SVG plots, no external resource.

The content and its order come from :func:`securefl.audit.render_common.report_blocks` (shared
with Markdown); print CSS makes the same page the PDF (:mod:`securefl.audit.render_pdf`). Every
recorded string is passed through :func:`html.escape` (ledger payloads are data from other
parties). A short inline script only sets ``data-render`` and ``data-charts`` attributes on
``<body>`` so a headless browser test can tell a clean load from a script error; nothing it
does is visible and the report reads the same without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from securefl.audit.render_common import (
    NOT_BOUNDED,
    accountant_name,
    bytes_scale,
    report_blocks,
)
from securefl.audit.svg import line_chart

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
color:#1b1b1b;background:#fafafa;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}
h3{margin:1.1em 0 .3em}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.strong{font-weight:700;font-size:1.1em}.bad{color:#b00020;font-weight:700}
.muted{color:#666;font-size:.92em}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-weight:600}
.banner.ok{background:#e6f4ea;color:#11691b}.banner.bad{background:#fde7e9;color:#b00020}
.banner,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e3e3e3;
max-width:100%;height:auto}
.ct{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#555}.al{font-size:11px;fill:#333}
.lg{font-size:11px}.grid{stroke:#eee}.axis{stroke:#888}.nodata{fill:#888;font-size:12px}
@page{size:A4;margin:14mm 12mm}
@media print{body{background:#fff;font-size:10pt}main{max-width:none;padding:0}
h2{break-after:avoid}h3{break-after:avoid}tr,.chart,.banner{break-inside:avoid}
table{font-size:8.5pt}}
"""

_SCRIPT = """
window.addEventListener('error',function(){document.body.setAttribute('data-render','error');});
window.addEventListener('load',function(){
 var svgs=document.querySelectorAll('svg.chart'),drawn=0;
 for(var i=0;i<svgs.length;i++){
  var b=svgs[i].getBoundingClientRect();if(b.width>0&&b.height>0)drawn++;}
 document.body.setAttribute('data-charts',drawn+'/'+svgs.length);
 if(document.body.getAttribute('data-render')!=='error'){document.body.setAttribute('data-render','ok');}
});
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ul(items: Sequence[Any]) -> str:
    return "<ul>" + "".join(f"<li>{escape(str(x))}</li>" for x in items) + "</ul>"


def round_numbers(report: Mapping[str, Any]) -> list[float]:
    """x of each charged round in plots: its round number (1-based), else its position."""
    nums = [r.get("round") for r in report["rounds"]]
    if nums and all(isinstance(n, int) for n in nums) and nums == sorted(set(nums)):
        return [float(n) for n in nums]
    return [float(i + 1) for i in range(len(nums))]


def _epsilon_chart(report: Mapping[str, Any]) -> str:
    curve = report["epsilon_curve"]
    g = report["guarantee"]
    xs_all = round_numbers(report)
    xs = [xs_all[k - 1] if 0 < k <= len(xs_all) else float(k) for k in curve["rounds"]]
    series = {}
    for name in g["accountants"]:
        ys = curve.get(name, [])
        has = any(y is not None for y in ys)
        series[accountant_name(name) if has else f"{accountant_name(name)}: {NOT_BOUNDED}"] = ys
    b = g.get("budget")
    hlines = {f"budget ε = {b['epsilon']:g}": float(b["epsilon"])} if b else None
    unverified = "" if g.get("verified", True) else " (UNVERIFIED)"
    return line_chart(
        f"cumulative ε after each round at δ = {g['delta']:g}{unverified}",
        xs,
        series,
        x_label="round",
        y_label="ε",
        markers=len(xs) <= 40,
        connect_gaps=True,
        hlines=hlines,
    )


def _round_charts(report: Mapping[str, Any]) -> str:
    rows = report["rounds"]
    xs = round_numbers(report)

    def col(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if r[key] is None else float(r[key]) / scale for r in rows]

    size, unit = bytes_scale(col("bytes_up") + col("bytes_down"))
    charts = [
        line_chart(
            "participants and dropouts per round",
            xs,
            {"participants": col("participants"), "dropouts": col("dropouts")},
            x_label="round",
            y_label="clients",
        ),
        line_chart(
            "held-out accuracy per round",
            xs,
            {"accuracy": col("accuracy")},
            x_label="round",
            y_label="accuracy",
        ),
        line_chart(
            f"traffic per round ({unit})",
            xs,
            {"bytes up": col("bytes_up", size), "bytes down": col("bytes_down", size)},
            x_label="round",
            y_label=unit,
        ),
    ]
    return '<div class="charts">' + "".join(charts) + "</div>"


def _utility_chart(report: Mapping[str, Any]) -> str:
    """Accuracy vs ε per regime (medians), with the no-DP and linear-probe lines."""
    u = report["utility_reference"]
    xs = sorted({p["epsilon"] for r in u["regimes"].values() for p in r["points"]})
    series: dict[str, list[float | None]] = {}
    hlines: dict[str, float] = {}
    for regime, r in u["regimes"].items():
        by_eps = {p["epsilon"]: p["median"] for p in r["points"]}
        series[regime] = [by_eps.get(x) for x in xs]
        if r.get("nonprivate"):
            hlines[f"{regime}, no DP"] = r["nonprivate"]["median"]
    if u.get("acc_linear_probe") is not None:
        hlines["linear probe"] = u["acc_linear_probe"]
    if not xs:
        return ""
    return line_chart(
        "Test accuracy vs ε (benchmark reference)",
        xs,
        series,
        x_label="ε",
        y_label="accuracy",
        markers=True,
        connect_gaps=True,
        hlines=hlines,
    )


def render_html(report: Mapping[str, Any]) -> str:
    title = escape(str(report["title"]))
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\';'
        " style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        f"<title>{title}</title><style>{_CSS}</style></head>",
        "<body><main>",
    ]
    for block in report_blocks(report):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{escape(str(block[1]))}</{kind}>")
        elif kind == "p":
            cls = f' class="{block[2]}"' if block[2] else ""
            out.append(f"<p{cls}>{escape(str(block[1]))}</p>")
        elif kind == "banner":
            cls = "ok" if block[2] else "bad"
            out.append(f'<div class="banner {cls}" id="{block[3]}">{escape(str(block[1]))}</div>')
        elif kind == "table":
            out.append(_table(block[1], block[2]))
        elif kind == "ul":
            out.append(_ul(block[1]))
        elif kind == "chart":
            charts = {"epsilon": _epsilon_chart, "utility": _utility_chart}
            out.append(charts.get(block[1], _round_charts)(report))
    out.append(f"</main><script>{_SCRIPT}</script></body></html>")
    return "\n".join(out)
