"""Self-contained HTML rendering of a report: inline CSS, inline SVG plots, no external resource.

Every recorded string is passed through :func:`html.escape` (ledger payloads are data from
other parties). A ten-line inline script only marks the page as rendered (``data-render``) so
that a headless browser test can tell a clean load from a script error; the report reads the
same without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from securefl.audit.render_md import fmt, round_rows, round_table
from securefl.audit.svg import line_chart

_MAX_ROUND_ROWS = 200

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#fafafa;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:.2em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.ok{color:#11691b;font-weight:600}.bad{color:#b00020;font-weight:700}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0}
.banner.ok{background:#e6f4ea}.banner.bad{background:#fde7e9}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e3e3e3}
.ct{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#555}.al{font-size:11px;fill:#333}
.lg{font-size:11px}.grid{stroke:#eee}.axis{stroke:#888}.muted{fill:#888;font-size:12px}
code{background:#f0f0f0;padding:1px 4px;border-radius:3px;word-break:break-all}
"""

_SCRIPT = """
window.addEventListener('error',function(){document.body.setAttribute('data-render','error');});
window.addEventListener('load',function(){
 var svgs=document.querySelectorAll('svg.chart'),drawn=0;
 for(var i=0;i<svgs.length;i++){
  var b=svgs[i].getBoundingClientRect();if(b.width>0&&b.height>0)drawn++;}
 var m=document.getElementById('render-check');m.textContent='charts:'+drawn+'/'+svgs.length;
 if(document.body.getAttribute('data-render')!=='error'){document.body.setAttribute('data-render','ok');}
});
"""


def _e(v: Any) -> str:
    return escape(fmt(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ul(items: Sequence[Any], prefix: str = "") -> str:
    if not items:
        return "<p>—</p>"
    return "<ul>" + "".join(f"<li>{escape(prefix)}{_e(x)}</li>" for x in items) + "</ul>"


def _charts(report: Mapping[str, Any]) -> str:
    curve = report["epsilon_curve"]
    g = report["guarantee"]
    eps_series = {name: curve.get(name, []) for name in g["accountants"]}
    rows = report["rounds"]
    xs = [float(i + 1) for i in range(len(rows))]

    def col(key: str) -> list[float | None]:
        return [None if r[key] is None else float(r[key]) for r in rows]

    charts = [
        line_chart(
            f"ε vs rounds at δ = {g['delta']:g} under each accountant",
            [float(x) for x in curve["rounds"]],
            eps_series,
            x_label="rounds charged",
            y_label="ε",
            markers=len(curve["rounds"]) <= 40,
            connect_gaps=True,
        ),
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
            "bytes per round",
            xs,
            {"bytes up": col("bytes_up"), "bytes down": col("bytes_down")},
            x_label="round",
            y_label="bytes",
        ),
    ]
    return '<div class="charts">' + "".join(charts) + "</div>"


def render_html(report: Mapping[str, Any]) -> str:
    g = report["guarantee"]
    v = report["ledger"]["verification"]
    ok = bool(v["ok"])
    tight = g.get("tightest") or {}
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\';'
        " style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
        f"<title>{escape(str(report['title']))}</title><style>{_CSS}</style></head>",
        "<body><main>",
        f"<h1>{escape(str(report['title']))}</h1>",
        f"<p>Generated {escape(str(report['generated_at']))} from "
        f"<code>{escape(str(report['ledger']['source']))}</code>.</p>",
        f'<div class="banner {"ok" if ok else "bad"}" id="verification">Ledger '
        f"{'verified' if ok else 'VERIFICATION FAILED'}: {v['entries']} entries, key pinned:"
        f" {_e(v['key_pinned'])}, head anchor <code>{_e((v.get('head') or {}).get('anchor'))}"
        "</code></div>",
        _ul(v["errors"], "error: ") if v["errors"] else "",
        _ul(v["warnings"], "warning: ") if v["warnings"] else "",
        "<h2>Guarantee</h2>",
        f"<p><strong>({_e(tight.get('epsilon'))}, {_e(g['delta'])})-DP</strong> for each"
        f" <strong>{_e(g['privacy_unit'])}</strong> under <strong>{_e(g['adjacency'])}"
        f"</strong> adjacency (tightest accountant: {_e(tight.get('accountant'))}).</p>",
        _table(["accountant", "ε at δ"], [[k, x] for k, x in g["epsilon"].items()]),
        _table(
            ["item", "value"],
            [
                ["mechanisms", g["mechanisms"]],
                ["sampling", [fmt(s) for s in g["sampling"]]],
                ["rounds charged", g["rounds_charged"]],
                ["rounds in flight (charged)", g["rounds_in_flight"]],
                ["clip bound", g["clip"]],
                ["noise multiplier", g["noise_multiplier"]],
                ["composition", g["composition"]],
            ],
        ),
        "<h2>Plots</h2>",
        _charts(report),
    ]
    pol = report.get("policy")
    if pol:
        cls = "ok" if pol["ok"] else "bad"
        out += [
            "<h2>Policy</h2>",
            f'<div class="banner {cls}" id="policy-status">Policy {_e(pol["name"])}:'
            f" {'satisfied' if pol['ok'] else 'VIOLATED'} (sha256 <code>{_e(pol['sha256'])}"
            "</code>)</div>",
            _ul(pol["violations"], "violation: "),
            _ul(pol["warnings"], "warning: ") if pol["warnings"] else "",
        ]
    if report["refusals"]:
        out += [
            "<h2>Refused rounds</h2>",
            _table(
                ["run", "round", "projected ε", "reasons"],
                [
                    [r["run_id"], r["round_id"], r["projected_epsilon"], "; ".join(r["reasons"])]
                    for r in report["refusals"]
                ],
            ),
        ]
    out.append("<h2>Threat model</h2>")
    for a in report["threat_model"]["aggregation"]:
        out += [
            f"<h3>Aggregation: {_e(a['protocol'])}</h3><p>parameters: {_e(a['parameters'])}</p>",
            "<p>Protects against:</p>",
            _ul(a["protects_against"]),
            "<p>Does <strong>not</strong> protect against:</p>",
            _ul(a["does_not_protect_against"]),
        ]
    dp = report["threat_model"]["dp"]
    out += [
        "<h3>Differential privacy</h3>",
        _ul(dp["protects_against"]),
        "<p>Trust:</p>",
        _ul(dp["trust"]),
        "<p>Does <strong>not</strong> protect against:</p>",
        _ul(dp["does_not_protect_against"]),
        "<h2>Runs</h2>",
        _table(
            [
                "run",
                "started",
                "finished",
                "unit",
                "mechanism",
                "clip",
                "z",
                "rounds",
                "refused",
                "code",
            ],
            [
                [
                    r["run_id"],
                    r["started_at"],
                    r["finished_at"],
                    r["privacy_unit"],
                    r["mechanism"],
                    r["clip"],
                    r["noise_multiplier"],
                    r["rounds_completed"],
                    r["rounds_refused"],
                    r.get("code_version"),
                ]
                for r in report["runs"]
            ],
        ),
    ]
    shown = round_rows(report, _MAX_ROUND_ROWS)
    out.append("<h2>Rounds</h2>")
    if len(shown) < len(report["rounds"]):
        out.append(
            f"<p>First and last {_MAX_ROUND_ROWS // 2} of {len(report['rounds'])}"
            " rounds; the JSON report has all.</p>"
        )
    out.append(_table(*round_table(shown)))
    if report["model_provenance"]:
        out += ["<h2>Model provenance</h2>", _ul(report["model_provenance"])]
    if report["empirical_audits"]:
        out += [
            "<h2>Empirical audit (Steinke, Nasr, Jagielski 2023)</h2>",
            _table(
                ["run", "ε lower bound", "confidence", "theoretical ε", "claim"],
                [
                    [
                        a["run_id"],
                        a.get("epsilon_lower_bound"),
                        a.get("confidence"),
                        a.get("epsilon_theoretical"),
                        "FAILS" if a.get("claim_violated") else "consistent",
                    ]
                    for a in report["empirical_audits"]
                ],
            ),
        ]
    out += [
        "<h2>Assumptions</h2>",
        _ul(report["assumptions"]),
        "<h2>Caveats</h2>",
        _ul(report["caveats"]),
        "<h2>Reporting checklist</h2>",
        "<p>Ponomareva et al. 2023, “How to DP-fy ML”, §5.3; NIST SP 800-226.</p>",
        _table(
            ["item", "value", "status"],
            [[c["item"], c["value"], c["status"]] for c in report["checklist"]],
        ),
        '<p id="render-check" class="muted">not rendered by a browser</p>',
        f"</main><script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(x for x in out if x)
