"""Human wording shared by the Markdown, HTML and PDF renderers (no Python reprs on a page).

One place decides how a value reads to a compliance officer: numbers to 4 significant digits,
bytes in kB/MB/GB, accountants by their usual upper-case names, sampling and code versions as
phrases, and rounds numbered from 1 (the ledger's ``round_id`` + 1) everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ROUND_NUMBERING_NOTE = (
    "Rounds are numbered from 1 in every table and plot (round 1 is the ledger's round_id 0)."
)
NOT_BOUNDED = "cannot bound these events"

# Aggregation parameters: recorded key → heading shown to a reader.
_PARAM_NAMES = {
    "threshold": "threshold t (smallest recorded)",
    "threshold_range": "threshold t (range over rounds)",
    "degree": "graph degree k",
    "modulus_bits": "ring modulus (bits)",
    "bits": "ring modulus (bits)",
    "n": "clients in the round (n)",
    "delta": "tolerated dropout fraction δ (SecAgg+ parameter, not the DP δ)",
    "gamma": "tolerated corrupt fraction γ (SecAgg+ parameter)",
    "threat_model": "threat model",
    "refused": "clients refused",
    "coordinate_clip": "coordinate clip (encoding)",
    "encoding_error_bound": "encoding error bound",
    "complete_graph": "complete graph",
    "frac_bits": "fixed-point fraction bits",
    "he_preset": "CKKS preset",
    "poly_modulus_degree": "CKKS ring degree",
    "scale_bits": "CKKS scale (bits)",
}


def fmt(v: Any) -> str:
    """Human formatting of a recorded value."""
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


def fmt_bytes(v: float | None) -> str:
    """Bytes in decimal units (kB = 1000 B), e.g. ``1.23 MB``."""
    if v is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def bytes_scale(values: Sequence[float | None]) -> tuple[float, str]:
    """(divisor, unit) so that the largest value plots as a number below 1000."""
    peak = max((abs(v) for v in values if v is not None), default=0.0)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if peak >= size:
            return size, unit
    return 1.0, "B"


def accountant_name(name: str) -> str:
    return name.upper()


def epsilon_value(v: float | None) -> str:
    return NOT_BOUNDED if v is None else f"{v:.4g}"


def epsilon_text(eps: Mapping[str, float | None]) -> str:
    """``RDP 8.12; PLD 7.99; PRV cannot bound these events``."""
    return "; ".join(f"{accountant_name(k)} {epsilon_value(v)}" for k, v in eps.items())


def sampling_text(s: Mapping[str, Any]) -> str:
    scheme = s.get("scheme")
    if scheme == "poisson":
        return f"Poisson sampling, rate q = {fmt(s.get('rate'))}"
    if scheme == "fixed_size_without_replacement":
        return (
            f"fixed-size sample of {fmt(s.get('sample_size'))} out of"
            f" {fmt(s.get('source_size'))}, without replacement"
        )
    if scheme == "all":
        return "no sampling (every unit in every round)"
    return fmt(s)


def mechanisms_text(mechanisms: Sequence[str]) -> str:
    """Recorded mechanism names; a non-private release is named as such."""
    names = [
        "none (released without DP noise)" if m == "non_private" else m.replace("_", " ")
        for m in mechanisms
    ]
    return ", ".join(names) or "none"


def number_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values) if values else "not recorded"


def code_version_text(cv: Mapping[str, Any] | None) -> str:
    """``securefl 0.3.0, git 1a2b3c4d5e6f (uncommitted changes)``."""
    if not cv:
        return "not recorded"
    parts = []
    if cv.get("securefl"):
        parts.append(f"securefl {cv['securefl']}")
    if cv.get("git_commit"):
        parts.append(f"git {str(cv['git_commit'])[:12]}")
    if cv.get("git_dirty"):
        parts.append("uncommitted changes")
    rest = {k: v for k, v in cv.items() if k not in {"securefl", "git_commit", "git_dirty"}}
    parts += [f"{k} {fmt(v)}" for k, v in rest.items() if v is not None]
    return ", ".join(parts) or "not recorded"


def parameter_rows(params: Mapping[str, Any]) -> list[list[str]]:
    """Aggregation parameters as (name, value) rows for a small table."""
    rows = []
    for k, v in params.items():
        if k == "threshold_range" or (k == "model" and params.get("threat_model") == v):
            continue
        name = _PARAM_NAMES.get(k, k.replace("_", " "))
        if k == "threshold" and "threshold_range" in params:
            name, v = _PARAM_NAMES["threshold"], f"{v} (range {params['threshold_range']})"
        rows.append([name, fmt(v)])
    return rows


def budget_text(b: Mapping[str, Any] | None, *, verified: bool = True) -> str:
    """The budget and the recomputed spend; no verdict on an unverified ledger."""
    if not b:
        return "no budget recorded"
    acct = f", {accountant_name(b['accountant'])}" if b.get("accountant") else ""
    delta = f" at δ = {b['delta']:g}" if b.get("delta") is not None else ""
    if b.get("spent") is None:
        spent = ""
    elif not verified:
        spent = f"; recomputed ε = {b['spent']:.4g} from unverified entries (no verdict)"
    else:
        spent = f"; spent ε = {b['spent']:.4g}" + (
            " (within budget)" if b.get("within") else " (OVER BUDGET)"
        )
    return f"ε ≤ {b['epsilon']:g}{delta} ({b['source']}{acct}){spent}"


def meaning_of_epsilon(g: Mapping[str, Any]) -> str:
    """What (ε, δ) promises, in one sentence (NIST SP 800-226: privacy parameters)."""
    change = "replaced by another" if g["adjacency"] == "replace-one" else "added or removed"
    return (
        f"Whatever the training released, the probability of any outcome changes by at most a"
        f" factor e^ε when one {g['privacy_unit']}'s data is {change}, except with probability"
        f" at most δ. Smaller ε is stronger; δ should be well below 1 / (number of"
        f" {g['privacy_unit']}s)."
    )


# Per-round table shown by both renderers: (column heading, key in a report round, formatter).
def round_table(
    rows: Sequence[Mapping[str, Any]], accountant: str
) -> tuple[list[str], list[list[str]]]:
    """Headings and cells of the per-round table."""
    headings = [
        "run",
        "round",
        "status",
        "participants",
        "dropouts",
        "accuracy",
        "loss",
        f"ε after round ({accountant_name(accountant)})",
        "bytes up",
        "bytes down",
    ]
    cells = [
        [
            fmt(r["run_id"]),
            fmt(r.get("round")),
            "charged in flight" if r["status"] == "in_flight" else str(r["status"]),
            fmt(r["participants"]),
            fmt(r["dropouts"]),
            fmt(r["accuracy"]),
            fmt(r["loss"]),
            fmt(r.get("epsilon_cumulative")),
            fmt_bytes(r["bytes_up"]),
            fmt_bytes(r["bytes_down"]),
        ]
        for r in rows
    ]
    return headings, cells


def round_rows(report: Mapping[str, Any], limit: int) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]] = list(report["rounds"])
    if len(rows) <= limit:
        return rows
    half = limit // 2
    return rows[:half] + rows[-half:]


def run_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    headings = [
        "run",
        "started",
        "finished",
        "unit",
        "mechanism",
        "clip",
        "noise z",
        "planned rounds",
        "completed",
        "refused",
        "resumes",
        "code version",
    ]
    cells = [
        [
            fmt(r["run_id"]),
            fmt(r["started_at"]),
            fmt(r["finished_at"]),
            fmt(r["privacy_unit"]),
            fmt(r["mechanism"]),
            fmt(r["clip"]),
            fmt(r["noise_multiplier"]),
            fmt(r["planned_rounds"]) if r["planned_rounds"] is not None else "not recorded",
            fmt(r["rounds_completed"]),
            fmt(r["rounds_refused"]),
            fmt(r.get("resumes", 0)),
            code_version_text(r.get("code_version")),
        ]
        for r in report["runs"]
    ]
    return headings, cells


def provenance_text(p: Mapping[str, Any]) -> str:
    parts = [str(p.get("base_model"))]
    w = p.get("weights_sha256")
    if isinstance(w, Mapping) and w:
        parts.append("weights " + ", ".join(f"{k} sha256 {str(v)[:16]}…" for k, v in w.items()))
    if p.get("licence"):
        parts.append(f"licence {p['licence']}")
    if p.get("source"):
        parts.append(f"source {p['source']}")
    return "; ".join(parts)


# -- the report as a sequence of blocks, rendered identically by Markdown and HTML -------------

Block = tuple[Any, ...]
# ("h1"|"h2"|"h3", text) · ("p", text, style) with style in {"", "strong", "muted", "bad"}
# ("banner", text, ok, element id) · ("table", headings, rows) · ("ul", items)
# ("chart", chart id)  (HTML only; Markdown skips it)


def _audit_rows(audits: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headings = [
        "run",
        "what was audited",
        "canaries",
        "guesses (correct)",
        "δ",
        "confidence",
        "ε lower bound",
        "highest provable",
        "theoretical ε",
        "result",
    ]
    cells = []
    for a in audits:
        raw = a.get("details")
        details: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        what = a.get("mechanism") or details.get("mechanism") or details.get("model")
        cells.append(
            [
                fmt(a.get("run_id")),
                fmt(what) if what else "not stated",
                fmt(a.get("canaries")),
                f"{fmt(a.get('guesses'))} ({fmt(a.get('correct'))})",
                fmt(a.get("delta")),
                fmt(a.get("confidence")),
                fmt(a.get("epsilon_lower_bound")),
                fmt(a.get("max_provable_lower_bound")),
                fmt(a.get("epsilon_theoretical")),
                "CLAIM FAILS" if a.get("claim_violated") else "no violation found",
            ]
        )
    return headings, cells


def audit_sentence(a: Mapping[str, Any]) -> str:
    """What one empirical audit shows, and the most it could have shown."""
    what = a.get("mechanism") or "a mechanism not stated in the record"
    text = (
        f"Run {a.get('run_id')}: audited {what} with {fmt(a.get('canaries'))} canaries and"
        f" {fmt(a.get('guesses'))} guesses ({fmt(a.get('correct'))} correct) at δ ="
        f" {fmt(a.get('delta'))} and {fmt(a.get('confidence'))} confidence: ε ≥"
        f" {fmt(a.get('epsilon_lower_bound'))}."
    )
    best, claim = a.get("max_provable_lower_bound"), a.get("epsilon_theoretical")
    if isinstance(best, int | float):
        text += f" This design can show at most ε ≥ {best:.3g}"
        if isinstance(claim, int | float) and best <= claim:
            text += f", so it cannot refute the claimed ε = {claim:.3g}"
        text += "."
    return text


def utility_blocks(u: Mapping[str, Any], g: Mapping[str, Any]) -> list[Block]:
    """The privacy–utility reference: what accuracy each ε costs (benchmark, not this run)."""
    rows = []
    for regime, r in u["regimes"].items():
        base = r.get("nonprivate")
        for p in r["points"]:
            ratio = f"{p['median'] / base['median']:.3f}" if base and base["median"] else "—"
            rows.append(
                [
                    regime,
                    f"{p['epsilon']:g}",
                    f"{p['median']:.3f} ({p['min']:.3f}–{p['max']:.3f})",
                    ratio,
                ]
            )
        if base:
            rows.append([regime, "no DP", f"{base['median']:.3f}", "1"])
    if u.get("acc_linear_probe") is not None:
        rows.append(["centralised linear probe", "no DP", f"{u['acc_linear_probe']:.3f}", "—"])
    spent = g.get("epsilon") or {}
    shown = [f"{accountant_name(k)} {epsilon_value(x)}" for k, x in spent.items()]
    seeds = f" over {u['seeds']} seeds" if u.get("seeds") else ""
    return [
        ("h2", "Privacy–utility reference (benchmark, not this run)"),
        ("p", f"{u['note']} Source: {u['source']}{seeds}.", "muted"),
        (
            "p",
            f"This run spent ε = {', '.join(shown)}; read its cost off the curve below."
            if shown
            else "This run spent no ε.",
            "",
        ),
        ("table", ["regime", "ε", "accuracy, median (min–max)", "÷ no-DP median"], rows),
        ("chart", "utility"),
    ]


def report_blocks(report: Mapping[str, Any]) -> list[Block]:
    """Every section of the report, in reading order (NIST SP 800-226 items first)."""
    g = report["guarantee"]
    v = report["ledger"]["verification"]
    verified = bool(v["ok"])
    dp = g["dp_status"] == "dp"
    out: list[Block] = [("h1", str(report["title"]))]
    out.append(
        ("p", f"Generated {report['generated_at']} from {report['ledger']['source']}.", "muted")
    )
    head = v.get("head") or {}
    out.append(
        (
            "banner",
            f"Ledger {'verified' if verified else 'VERIFICATION FAILED'}: {v['entries']}"
            f" entries; signer key pinned: {fmt(v['key_pinned'])}; head anchor"
            f" {head.get('anchor', 'none')}",
            verified,
            "verification",
        )
    )
    if v["errors"]:
        out.append(("ul", [f"error: {e}" for e in v["errors"]]))
    if v["warnings"]:
        out.append(("ul", [f"warning: {w}" for w in v["warnings"]]))

    out += [("h2", "Summary"), ("p", g["statement"], "strong" if verified and dp else "bad")]
    if not verified:
        out.append(
            (
                "p",
                "Every figure below is UNVERIFIED: it is recomputed from ledger entries whose"
                " integrity could not be established, and must not be read as a guarantee.",
                "bad",
            )
        )
    unverified = "" if verified else " (unverified)"

    out += [
        ("h2", "1. Privacy unit"),
        (
            "table",
            ["item", "value"],
            [
                ["privacy unit (whose data one ε protects)", fmt(g["privacy_unit"])],
                ["neighbouring relation (adjacency)", fmt(g["adjacency"])],
            ],
        ),
    ]

    out.append(("h2", f"2. Privacy parameters ε and δ{unverified}"))
    if dp:
        out.append(("p", meaning_of_epsilon(g), ""))
        out.append(
            (
                "table",
                ["accountant", f"ε at δ = {g['delta']:g}{unverified}"],
                [[accountant_name(k), epsilon_value(x)] for k, x in g["epsilon"].items()],
            )
        )
        out.append(("p", f"Budget: {budget_text(g.get('budget'), verified=verified)}.", ""))
        out.append(("chart", "epsilon"))
    elif g["dp_status"] == "no_releases":
        out.append(("p", "No round was charged: nothing to account.", ""))
    else:
        out.append(
            (
                "p",
                "No differential privacy: there is no ε or δ to report, and no budget applies.",
                "bad",
            )
        )

    out.append(("h2", "3. Mechanism and accounting"))
    runs = report["runs"]
    planned = sorted({r["planned_rounds"] for r in runs if r["planned_rounds"] is not None})
    codes = sorted({code_version_text(r.get("code_version")) for r in runs})
    out.append(
        (
            "table",
            ["item", "value"],
            [
                ["mechanism(s)", mechanisms_text(g["mechanisms"])],
                [
                    "sampling (as performed)",
                    "; ".join(sampling_text(s) for s in g["sampling"]) or "not applicable",
                ],
                ["clip bound", number_list(g["clip"])],
                ["noise multiplier z (σ = z · clip)", number_list(g["noise_multiplier"])],
                ["planned rounds", ", ".join(str(p) for p in planned) or "not recorded"],
                ["rounds charged", str(g["rounds_charged"])],
                ["of which charged in flight (never completed)", str(g["rounds_in_flight"])],
                ["composition", str(g["composition"])],
                ["code version", "; ".join(codes) or "not recorded"],
            ],
        )
    )

    tm = report["threat_model"]
    out += [
        ("h2", "4. Trust model"),
        ("p", "Who must be honest for ε to hold, per aggregation protocol and DP mode:", ""),
        (
            "table",
            [
                "aggregation",
                "DP mode",
                "must be honest for ε to hold",
                "who sees individual updates",
            ],
            [
                [t["aggregation"], t["dp_mode"], t["must_be_honest"], t["sees_updates"]]
                for t in tm.get("trust_model", [])
            ],
        ),
    ]
    for a in tm["aggregation"]:
        out.append(("h3", f"Aggregation: {a['protocol']}"))
        params = parameter_rows(a["parameters"])
        if params:
            out.append(("table", ["parameter", "value"], params))
        out.append(("p", "Protects against:", ""))
        out.append(("ul", a["protects_against"] or ["nothing"]))
        out.append(("p", "Does not protect against:", ""))
        out.append(("ul", a["does_not_protect_against"]))
    out += [
        ("h3", "Differential privacy"),
        ("p", "Protects against:", ""),
        ("ul", tm["dp"]["protects_against"] if dp else ["nothing: no differential privacy"]),
        ("p", "Does not protect against:", ""),
        ("ul", tm["dp"]["does_not_protect_against"]),
    ]

    d = report["disclosures"]
    out.append(("h2", "5. Coverage: what is and is not covered"))
    out.append(("h3", "Crashes and resumes"))
    if d["resumes"]:
        out.append(
            (
                "table",
                ["run", "resumed at", "rounds done before", "reconciled"],
                [
                    [
                        r["run_id"],
                        r["timestamp"],
                        fmt(r["rounds_done_before"]),
                        "; ".join(r["reconciled"]) or "nothing",
                    ]
                    for r in d["resumes"]
                ],
            )
        )
    else:
        out.append(("p", "No resume recorded: the run(s) never restarted after a stop.", ""))
    out.append(("h3", "Aborted and uncharged rounds"))
    aborted = [
        [
            r["run_id"],
            fmt(r["round"]),
            "not charged",
            f"{r['basis']}; reason: {r['reason'] or 'not given'}",
        ]
        for r in d["uncharged_rounds"]
    ] + [
        [r["run_id"], fmt(r["round"]), "charged", f"reason: {r['reason'] or 'not given'}"]
        for r in d["aborted_rounds_charged"]
    ]
    aborted += [
        [
            r["run_id"],
            fmt(r["round"]),
            "charged in full",
            "projected but never completed (it may have released a noised sum)",
        ]
        for r in d["in_flight_rounds"]
    ]
    if aborted:
        out.append(("table", ["run", "round", "charge", "basis"], aborted))
    else:
        out.append(("p", "No round was aborted.", ""))
    if report["refusals"]:
        out += [
            ("h3", "Rounds refused by the budget policy (nothing released)"),
            (
                "table",
                ["run", "round", "projected ε", "reasons"],
                [
                    [
                        r["run_id"],
                        fmt(r.get("round")),
                        fmt(r["projected_epsilon"]),
                        "; ".join(r["reasons"]),
                    ]
                    for r in report["refusals"]
                ],
            ),
        ]
    out += [
        ("h3", "Assumptions (not checkable from the ledger)"),
        ("ul", report["assumptions"]),
        ("h3", "Caveats"),
        ("ul", report["caveats"]),
    ]

    pol = report.get("policy")
    if pol:
        out += [
            ("h2", "Policy"),
            (
                "banner",
                f"Policy {pol['name']}: {'satisfied' if pol['ok'] else 'VIOLATED'}"
                if verified
                else f"Policy {pol['name']}: NOT ASSESSED, the ledger failed verification",
                bool(pol["ok"]) and verified,
                "policy-status",
            ),
        ]
        out.append(
            (
                "p",
                f"Budget: {budget_text(g.get('budget'), verified=verified)}. Policy sha256"
                f" {pol['sha256']}.",
                "",
            )
        )
        notes = [f"violation: {x}" for x in pol["violations"]]
        notes += [f"warning: {cli_text(x)}" for x in pol["warnings"]]
        if notes:
            out.append(("ul", notes))

    out += [("h2", "Runs"), ("table", *run_table(report))]
    out += [("h2", "Rounds"), ("p", ROUND_NUMBERING_NOTE, "muted"), ("chart", "rounds")]
    shown = round_rows(report, 200)
    if len(shown) < len(report["rounds"]):
        out.append(
            (
                "p",
                f"First and last {len(shown) // 2} of {len(report['rounds'])} rounds; the JSON"
                " report has all.",
                "muted",
            )
        )
    out.append(("table", *round_table(shown, g.get("round_epsilon_accountant", "rdp"))))

    if report["model_provenance"]:
        out += [
            ("h2", "Model provenance"),
            ("ul", [provenance_text(p) for p in report["model_provenance"]]),
        ]
    if report["empirical_audits"]:
        out += [
            ("h2", "Empirical privacy audit"),
            (
                "p",
                "One-run audit (Steinke, Nasr, Jagielski 2023) with client-level canaries"
                " (Andrew et al. 2024) where stated. A lower bound below the theoretical ε is"
                " consistent with the claim but is not evidence of privacy: the design cannot"
                " show more than its highest provable bound.",
                "muted",
            ),
            ("table", *_audit_rows(report["empirical_audits"])),
            ("ul", [audit_sentence(a) for a in report["empirical_audits"]]),
        ]
    if report.get("utility_reference"):
        out += utility_blocks(report["utility_reference"], report["guarantee"])
    out += [
        ("h2", "Reporting checklist"),
        ("p", "Ponomareva et al. 2023, “How to DP-fy ML”, §5.3; NIST SP 800-226.", "muted"),
        (
            "table",
            ["item", "value", "status"],
            [[c["item"], c["value"], c["status"]] for c in report["checklist"]],
        ),
        ("h2", "How this report maps to NIST SP 800-226"),
        (
            "table",
            ["section", "evaluation item", "report fields (JSON)"],
            [
                [s["section"], s["nist_item"], ", ".join(s["fields"])]
                for s in report.get("structure", [])
            ],
        ),
    ]
    return out


def cli_text(message: str) -> str:
    from securefl.audit.report import cli_words

    return cli_words(message)
