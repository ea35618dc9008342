"""Markdown rendering of a report dict (for pull requests, tickets and model cards)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_MAX_ROUND_ROWS = 50


def fmt(v: Any) -> str:
    """Human formatting shared by the Markdown and HTML renderers."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return ", ".join(fmt(x) for x in v) if v else "—"
    return str(v)


def _md(text: Any) -> str:
    """Escape Markdown table/inline metacharacters in recorded text."""
    s = fmt(text)
    for ch in ("\\", "|", "*", "_", "`", "<", ">", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def round_rows(report: Mapping[str, Any], limit: int) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]] = list(report["rounds"])
    if len(rows) <= limit:
        return rows
    half = limit // 2
    return rows[:half] + rows[-half:]


# Per-round table shown by both renderers: (column heading, key in a report round).
ROUND_COLUMNS = (
    ("run", "run_id"),
    ("round", "round_id"),
    ("status", "status"),
    ("participants", "participants"),
    ("dropouts", "dropouts"),
    ("accuracy", "accuracy"),
    ("loss", "loss"),
    ("bytes up", "bytes_up"),
    ("bytes down", "bytes_down"),
)


def round_table(rows: list[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Headings and cells of the per-round table."""
    return [h for h, _ in ROUND_COLUMNS], [[r[k] for _, k in ROUND_COLUMNS] for r in rows]


def render_markdown(report: Mapping[str, Any]) -> str:
    g = report["guarantee"]
    v = report["ledger"]["verification"]
    lines = [f"# {_md(report['title'])}", "", f"Generated {report['generated_at']}.", ""]
    status = "VERIFIED" if v["ok"] else "VERIFICATION FAILED"
    lines += [
        "## Ledger integrity",
        "",
        f"**{status}** — {v['entries']} entries; key pinned: {fmt(v['key_pinned'])};"
        f" head anchor `{(v.get('head') or {}).get('anchor', '—')}`.",
        "",
    ]
    lines += [f"- error: {_md(e)}" for e in v["errors"]]
    lines += [f"- warning: {_md(w)}" for w in v["warnings"]]
    lines += ["", "## Guarantee", ""]
    tight = g.get("tightest") or {}
    lines += _table(
        ["item", "value"],
        [
            ["privacy unit", g["privacy_unit"]],
            ["adjacency", g["adjacency"]],
            ["mechanisms", g["mechanisms"]],
            ["δ", g["delta"]],
            ["rounds charged", g["rounds_charged"]],
            ["sampling", [fmt(s) for s in g["sampling"]]],
            ["clip bound", g["clip"]],
            ["noise multiplier", g["noise_multiplier"]],
            ["tightest ε", f"{fmt(tight.get('epsilon'))} ({fmt(tight.get('accountant'))})"],
        ],
    )
    lines += ["", "ε at δ under each accountant (recomputed from the recorded events):", ""]
    lines += _table(["accountant", "ε"], [[k, x] for k, x in g["epsilon"].items()])
    pol = report.get("policy")
    if pol:
        lines += [
            "",
            "## Policy",
            "",
            f"Policy **{_md(pol['name'])}** (sha256 `{pol['sha256']}`):"
            f" {'satisfied' if pol['ok'] else 'VIOLATED'}.",
            "",
        ]
        lines += [f"- violation: {_md(x)}" for x in pol["violations"]]
        lines += [f"- warning: {_md(x)}" for x in pol["warnings"]]
    if report["refusals"]:
        lines += ["", "## Refused rounds", ""]
        lines += _table(
            ["run", "round", "projected ε", "reasons"],
            [
                [r["run_id"], r["round_id"], r["projected_epsilon"], "; ".join(r["reasons"])]
                for r in report["refusals"]
            ],
        )
    lines += ["", "## Threat model", ""]
    for a in report["threat_model"]["aggregation"]:
        lines += [f"### Aggregation: {_md(a['protocol'])} ({_md(a['parameters'])})", ""]
        lines += [f"- protects against: {_md(x)}" for x in a["protects_against"]]
        lines += [f"- does NOT protect against: {_md(x)}" for x in a["does_not_protect_against"]]
        lines.append("")
    dp = report["threat_model"]["dp"]
    lines += ["### Differential privacy", ""]
    lines += [f"- protects against: {_md(x)}" for x in dp["protects_against"]]
    lines += [f"- trust: {_md(x)}" for x in dp["trust"]]
    lines += [f"- does NOT protect against: {_md(x)}" for x in dp["does_not_protect_against"]]
    lines += ["", "## Runs", ""]
    lines += _table(
        ["run", "started", "unit", "mechanism", "clip", "z", "rounds", "refused", "code"],
        [
            [
                r["run_id"],
                r["started_at"],
                r["privacy_unit"],
                r["mechanism"],
                r["clip"],
                r["noise_multiplier"],
                r["rounds_completed"],
                r["rounds_refused"],
                (r.get("code_version") or {}).get("git_commit")
                or (r.get("code_version") or {}).get("securefl"),
            ]
            for r in report["runs"]
        ],
    )
    lines += ["", "## Rounds", ""]
    shown = round_rows(report, _MAX_ROUND_ROWS)
    if len(shown) < len(report["rounds"]):
        lines += [f"(first and last {_MAX_ROUND_ROWS // 2} of {len(report['rounds'])} rounds)", ""]
    lines += _table(*round_table(shown))
    if report["model_provenance"]:
        lines += ["", "## Model provenance", ""]
        lines += [f"- {_md(p)}" for p in report["model_provenance"]]
    if report["empirical_audits"]:
        lines += ["", "## Empirical audit (Steinke, Nasr, Jagielski 2023)", ""]
        lines += _table(
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
        )
    lines += ["", "## Assumptions", ""] + [f"- {_md(x)}" for x in report["assumptions"]]
    lines += ["", "## Caveats", ""] + [f"- {_md(x)}" for x in report["caveats"]]
    lines += ["", "## Reporting checklist (Ponomareva et al. 2023; NIST SP 800-226)", ""]
    lines += _table(
        ["item", "value", "status"],
        [[c["item"], c["value"], c["status"]] for c in report["checklist"]],
    )
    return "\n".join(lines) + "\n"
