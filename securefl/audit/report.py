"""Privacy reports built from a ledger: JSON (schema ``audits/report.schema.json``), Markdown, HTML.

The content follows the reporting checklist of Ponomareva et al. 2023 ("How to DP-fy ML",
§5.3: privacy unit, adjacency, accounting, sampling, hyperparameters) and NIST SP 800-226
(§2 privacy unit, §3 trust model, §4 ε and δ): every figure an auditor needs is *recomputed*
from the recorded DP events under each accountant, never copied from the run's own claims;
the run's claims are compared with the recomputation instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

from securefl.audit.keys import PublicKeySource
from securefl.audit.ledger import (
    MODEL_PROVENANCE,
    POLICY,
    ROUND_COMPLETED,
    ROUND_REFUSED,
    RUN_FINISHED,
    RUN_STARTED,
    Entry,
    Ledger,
    VerifyResult,
    format_timestamp,
    read_entries,
    verify_ledger,
)
from securefl.audit.policy import BudgetPolicy
from securefl.audit.spend import (
    ACCOUNTANTS,
    ChargedRound,
    charged_rounds,
    curve_points,
    epsilon_curve,
    mechanisms_of,
    sampling_of,
)
from securefl.audit.threat_model import aggregation_threat_model, dp_threat_model
from securefl.errors import ConfigurationError

SCHEMA_VERSION = 1
EMPIRICAL_AUDIT = "empirical_audit"
DEFAULT_DELTA = 1e-5
METRIC_KEYS = ("accuracy", "loss", "bytes_up", "bytes_down", "participants", "dropouts")
# PLD and PRV recompose at every point (~0.2 s and ~1 s each here), RDP adds curves (cheap):
# the plot shows RDP at every point, PLD at 8, PRV at the final round only.
_PLD_CURVE_POINTS = 8
_PRV_CURVE_POINTS = 1


def _entries_and_verification(
    ledger: Ledger | str | PathLike[str],
    public_key: PublicKeySource | None,
    expected_head: str | None,
) -> tuple[list[Entry], VerifyResult, str | None]:
    if isinstance(ledger, Ledger):
        return (
            list(ledger.entries()),
            ledger.verify(public_key, expected_head=expected_head),
            str(ledger.path),
        )
    return (
        read_entries(ledger),
        verify_ledger(ledger, public_key, expected_head=expected_head),
        str(ledger),
    )


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _count(v: Any) -> int | None:
    """Counts recorded as an int, a list of ids, or a per-stage dict of either."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, list):
        return len(v)
    if isinstance(v, Mapping):
        parts = [_count(x) for x in v.values()]
        return sum(p for p in parts if p is not None)
    return None


def _round_row(e: Entry, status: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    payload = e.payload
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), Mapping) else {}
    merged: dict[str, Any] = {**payload, **(metrics or {}), **dict(extra or {})}
    eps = merged.get("epsilon")
    return {
        "run_id": e.run_id,
        "round_id": e.round_id,
        "seq": e.seq,
        "status": status,
        "timestamp": e.timestamp,
        "participants": _count(merged.get("participants")),
        "dropouts": _count(_first([merged.get("dropouts"), merged.get("dropped")])),
        "accuracy": _num(merged.get("accuracy")),
        "loss": _num(merged.get("loss")),
        "bytes_up": _num(merged.get("bytes_up")),
        "bytes_down": _num(merged.get("bytes_down")),
        "epsilon_recorded": eps if isinstance(eps, Mapping) else _num(eps),
    }


def _field(payload: Mapping[str, Any], key: str, *subs: str) -> Any:
    """``payload[key]``, else the same key inside the sub-dicts ``subs`` (e.g. ``"dp"``)."""
    if payload.get(key) is not None:
        return payload[key]
    for sub in subs:
        inner = payload.get(sub)
        if isinstance(inner, Mapping) and inner.get(key) is not None:
            return inner[key]
    return None


def _provenance(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Model provenance from ``model_provenance`` entries and ``run_started["model"]``."""
    raw = [e.payload for e in entries if e.kind == MODEL_PROVENANCE]
    raw += [
        e.payload["model"]
        for e in entries
        if e.kind == RUN_STARTED and isinstance(e.payload.get("model"), Mapping)
    ]
    out: list[dict[str, Any]] = []
    for p in raw:
        item = {
            "base_model": str(_first([p.get("base_model"), p.get("name"), "unknown"])),
            "weights_sha256": p.get("weights_sha256"),
            "licence": _first([p.get("licence"), p.get("license")]),
            "source": _first([p.get("source"), p.get("path")]),
        }
        if item not in out:
            out.append(item)
    return out


def _merge_aggregations(aggs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per protocol; a parameter that varied is shown as ``lo–hi`` (numbers) and the
    threshold used for the threat statement is the SMALLEST recorded (the weakest round)."""
    by_proto: dict[str, dict[str, list[Any]]] = {}
    for agg in aggs.values():
        values = by_proto.setdefault(str(agg.get("protocol", "unknown")), {})
        for k, v in agg.items():
            if k != "protocol" and v is not None and v not in values.setdefault(k, []):
                values[k].append(v)
    out: list[dict[str, Any]] = []
    for proto, values in sorted(by_proto.items()):
        merged: dict[str, Any] = {"protocol": proto}
        for k, vs in sorted(values.items()):
            if len(vs) == 1:
                merged[k] = vs[0]
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vs):
                merged[k] = min(vs) if k == "threshold" else f"{min(vs)}–{max(vs)}"
                if k == "threshold":
                    merged["threshold_range"] = f"{min(vs)}–{max(vs)}"
            else:
                merged[k] = [
                    json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in vs
                ]
        out.append(merged)
    return out


def _first(values: Iterable[Any]) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _curve(
    charged: Sequence[ChargedRound],
    accountants: Sequence[str],
    delta: float,
    adjacency: str,
    max_points: int,
) -> dict[str, Any]:
    """Cumulative ε per accountant at ``curve_points`` (see the limits above)."""
    n = len(charged)
    points = curve_points(n, max_points)
    events = [c.event for c in charged]
    out: dict[str, Any] = {"rounds": points}
    for name in accountants:
        limit = {"rdp": max_points, "pld": _PLD_CURVE_POINTS, "prv": _PRV_CURVE_POINTS}[name]
        pts = [p for p in curve_points(n, limit) if p in set(points)] if n else []
        if n and n not in pts:
            pts.append(n)
        try:
            values = dict(zip(pts, epsilon_curve(name, events, pts, delta, adjacency), strict=True))
        except ConfigurationError:
            values = {}
        out[name] = [
            v if v is not None and math.isfinite(v) else None
            for v in (values.get(p) for p in points)
        ]
    return out


def build_report(
    ledger: Ledger | str | PathLike[str],
    policy: BudgetPolicy | None = None,
    *,
    metrics: Mapping[int, Mapping[str, Any]] | None = None,
    public_key: PublicKeySource | None = None,
    expected_head: str | None = None,
    delta: float | None = None,
    accountants: Sequence[str] = ACCOUNTANTS,
    max_curve_points: int = 40,
    generated_at: datetime | str | None = None,
    title: str | None = None,
    source_label: str | None = None,
) -> dict[str, Any]:
    """The full report as plain data (validates against ``audits/report.schema.json``).

    ``metrics`` adds per-round figures (round id → {accuracy, loss, bytes_up, ...}) to what the
    ``round_completed`` entries carry. ``delta`` overrides the δ at which ε is reported (default:
    the policy's, else the run's recorded ``delta``, else 1e-5 with a caveat). ``source_label``
    replaces the ledger path shown in the report (e.g. a repository-relative path).
    """
    entries, verification, source = _entries_and_verification(ledger, public_key, expected_head)
    runs = {e.run_id: e for e in entries if e.kind == RUN_STARTED}
    run_payloads = [e.payload for e in runs.values()]
    caveats: list[str] = []
    assumptions: list[str] = [
        "noise and sampling used a cryptographic random source as recorded (not re-checkable"
        " from the ledger)",
        "the sampling recorded in each DP event is the sampling the loop performed",
        "the clip bound was enforced on every contribution before noise was added",
        "the ledger records every release on this data (scope of the composition)",
        "the normalising denominator of each aggregate was fixed in advance",
    ]
    try:
        charged = charged_rounds(entries)
    except ConfigurationError as exc:
        charged = []
        caveats.append(f"the recorded rounds cannot be accounted: {exc}")

    privacy_unit = (
        policy.privacy_unit if policy else _first(p.get("privacy_unit") for p in run_payloads)
    )
    adjacency = policy.adjacency if policy else _first(p.get("adjacency") for p in run_payloads)
    if adjacency not in ("add-remove", "replace-one"):
        if adjacency is not None:
            caveats.append(f"unknown adjacency {adjacency!r} recorded; add-remove assumed")
        else:
            caveats.append("adjacency not recorded; add-remove assumed")
        adjacency = "add-remove"
    if privacy_unit is None:
        caveats.append("privacy unit not recorded: the guarantee's unit is unknown")
        privacy_unit = "unknown"
    if delta is None:
        delta = (
            policy.delta if policy else _num(_first(_field(p, "delta", "dp") for p in run_payloads))
        )
    if delta is None:
        delta = DEFAULT_DELTA
        caveats.append(f"δ not recorded; ε reported at δ = {DEFAULT_DELTA:g}")

    # -- ε under each accountant, recomputed -----------------------------------------------
    curve = _curve(charged, accountants, delta, adjacency, max_curve_points)
    eps_final: dict[str, float | None] = {}
    for name in accountants:
        series = curve[name]
        eps_final[name] = series[-1] if series else 0.0
    if not charged:
        eps_final = dict.fromkeys(accountants, 0.0)
    finite = {k: v for k, v in eps_final.items() if v is not None}
    tightest = min(finite.items(), key=lambda kv: kv[1]) if finite else None
    mechs: set[str] = set()
    for c in charged:
        mechs |= mechanisms_of(c.event)
    if "non_private" in mechs:
        caveats.append("a non-private release was recorded: no finite ε holds")
    if any(v is None for v in eps_final.values()):
        missing = sorted(k for k, v in eps_final.items() if v is None)
        caveats.append(f"accountant(s) {', '.join(missing)} cannot bound the recorded events")

    # -- per-round rows and consistency with the run's own claims --------------------------
    completed = [e for e in entries if e.kind == ROUND_COMPLETED]
    by_seq = {e.seq: e for e in entries}
    rows = [
        _round_row(
            by_seq[c.seq],
            c.status,
            (metrics or {}).get(c.round_id) if c.round_id is not None else None,
        )
        for c in charged
    ]
    if completed:
        last = rows[-1]["epsilon_recorded"] if rows else None
        claims = last if isinstance(last, Mapping) else {}
        if not isinstance(last, Mapping) and last is not None:
            acct = _first(
                [
                    completed[-1].payload.get("accountant"),
                    *(_field(p, "accountant", "dp", "config") for p in run_payloads),
                ]
            )
            claims = {acct: last} if isinstance(acct, str) else {}
        for name, claimed in claims.items():
            ours = eps_final.get(name)
            c_val = _num(claimed)
            if ours is not None and c_val is not None and c_val < ours * (1 - 1e-2) - 1e-6:
                caveats.append(
                    f"the run recorded ε = {c_val:.4g} ({name}) but the recomputation gives"
                    f" {ours:.4g}: the run's own claim understates its spend"
                )
    in_flight = sum(c.status == "in_flight" for c in charged)
    if in_flight:
        caveats.append(f"{in_flight} round(s) projected but never completed are charged in full")

    refusals = [
        {
            "run_id": e.run_id,
            "round_id": e.round_id,
            "timestamp": e.timestamp,
            "reasons": [str(r) for r in e.payload.get("reasons", [])],
            "projected_epsilon": _num(e.payload.get("projected_epsilon")),
        }
        for e in entries
        if e.kind == ROUND_REFUSED
    ]

    # -- runs, aggregation, provenance -----------------------------------------------------
    finished = {e.run_id: e for e in entries if e.kind == RUN_FINISHED}
    run_rows = []
    aggs: dict[str, dict[str, Any]] = {}
    for run_id, e in runs.items():
        p = e.payload
        agg = p.get("aggregation") if isinstance(p.get("aggregation"), Mapping) else None
        if agg:
            aggs[json.dumps(agg, sort_keys=True)] = dict(agg)
        n_done = sum(1 for c in charged if c.run_id == run_id and c.status == "completed")
        run_rows.append(
            {
                "run_id": run_id,
                "started_at": e.timestamp,
                "finished_at": finished[run_id].timestamp if run_id in finished else None,
                "privacy_unit": p.get("privacy_unit"),
                "adjacency": p.get("adjacency"),
                "mechanism": _first([p.get("mechanism"), _field(p, "mode", "dp")]),
                "clip": _num(_field(p, "clip", "dp")),
                "noise_multiplier": _num(_field(p, "noise_multiplier", "dp")),
                "planned_rounds": p.get("rounds") if isinstance(p.get("rounds"), int) else None,
                "rounds_completed": n_done,
                "rounds_refused": sum(1 for r in refusals if r["run_id"] == run_id),
                "aggregation": dict(agg) if agg else None,
                "code_version": p.get("code_version")
                if isinstance(p.get("code_version"), Mapping)
                else None,
            }
        )
    for c in charged:
        agg = by_seq[c.seq].payload.get("aggregation")
        if isinstance(agg, Mapping):
            aggs.setdefault(json.dumps(agg, sort_keys=True), dict(agg))
    if not aggs:
        caveats.append("no aggregation protocol recorded: assume the server saw every update")
    provenance = _provenance(entries)
    if not provenance:
        caveats.append("no model provenance recorded")
    clips = sorted({x for x in (r["clip"] for r in run_rows) if x is not None})
    noises = sorted({x for x in (r["noise_multiplier"] for r in run_rows) if x is not None})
    samplings = {json.dumps(sampling_of(c.event), sort_keys=True) for c in charged}
    sampling = [json.loads(s) for s in sorted(samplings)]

    policy_block: dict[str, Any] | None = None
    if policy is not None:
        res = policy.check(entries)
        policy_block = {
            "name": policy.name,
            "sha256": policy.sha256,
            "definition": policy.to_dict(),
            "ok": res.ok,
            "violations": res.violations,
            "warnings": res.warnings,
            "epsilon": res.epsilon,
        }
    recorded_policies = [e.payload.get("policy_sha256") for e in entries if e.kind == POLICY]

    empirical = [
        {"run_id": e.run_id, "timestamp": e.timestamp, **e.payload}
        for e in entries
        if e.kind == EMPIRICAL_AUDIT
    ]
    for audit in empirical:
        if audit.get("claim_violated"):
            caveats.append(
                f"the empirical audit of run {audit['run_id']} found ε ≥"
                f" {audit.get('epsilon_lower_bound')} above the theoretical ε: the claim FAILS"
            )
    caveats += [
        "ε does not cover hyperparameter tuning or earlier runs on the same data unless they"
        " are in this ledger (Papernot & Steinke 2022)",
        "a DP guarantee bounds what can be inferred about one unit; it does not make the"
        " model's outputs fair or correct",
    ]
    if not verification.ok:
        caveats.insert(0, "LEDGER VERIFICATION FAILED: nothing in this report can be trusted")

    guarantee = {
        "privacy_unit": privacy_unit,
        "adjacency": adjacency,
        "delta": delta,
        "epsilon": eps_final,
        "tightest": None
        if tightest is None
        else {"accountant": tightest[0], "epsilon": tightest[1]},
        "accountants": list(accountants),
        "policy_accountant": policy.accountant if policy else None,
        "mechanisms": sorted(mechs),
        "sampling": sampling,
        "rounds_charged": len(charged),
        "rounds_in_flight": in_flight,
        "clip": clips,
        "noise_multiplier": noises,
        "composition": "adaptive composition of every charged round in the ledger",
    }
    checklist = _checklist(guarantee, aggs, provenance, verification)
    return {
        "schema_version": SCHEMA_VERSION,
        "title": title or "Privacy report",
        "generated_at": format_timestamp(generated_at),
        "ledger": {
            "source": source_label if source_label is not None else source,
            "entries": len(entries),
            "verification": verification.to_dict(),
        },
        "guarantee": guarantee,
        "epsilon_curve": curve,
        "runs": run_rows,
        "rounds": rows,
        "refusals": refusals,
        "policy": policy_block,
        "recorded_policy_sha256": [s for s in recorded_policies if isinstance(s, str)],
        "threat_model": {
            "aggregation": [aggregation_threat_model(a) for a in _merge_aggregations(aggs)],
            "dp": dp_threat_model(mechs, str(privacy_unit), adjacency),
        },
        "model_provenance": provenance,
        "empirical_audits": empirical,
        "assumptions": assumptions,
        "caveats": caveats,
        "checklist": checklist,
    }


def _checklist(
    g: Mapping[str, Any],
    aggs: Mapping[str, Any],
    provenance: Sequence[Any],
    verification: VerifyResult,
) -> list[dict[str, str]]:
    """Ponomareva et al. 2023 §5.3 / NIST SP 800-226 items, each with its reported value."""

    def item(name: str, value: Any, ok: bool) -> dict[str, str]:
        return {"item": name, "value": str(value), "status": "reported" if ok else "missing"}

    eps = g["epsilon"]
    return [
        item("privacy unit", g["privacy_unit"], g["privacy_unit"] != "unknown"),
        item("adjacency (neighbouring relation)", g["adjacency"], True),
        item("mechanism(s)", ", ".join(g["mechanisms"]) or "none", bool(g["mechanisms"])),
        item("accountant(s) and ε under each", eps, any(v is not None for v in eps.values())),
        item("δ", g["delta"], True),
        item("sampling (as performed)", g["sampling"], bool(g["sampling"])),
        item("number of rounds (compositions)", g["rounds_charged"], True),
        item("clip bound", g["clip"], bool(g["clip"])),
        item("noise multiplier", g["noise_multiplier"], bool(g["noise_multiplier"])),
        item(
            "trust model / secure aggregation",
            sorted(a.get("protocol") for a in aggs.values()),
            bool(aggs),
        ),
        item("model provenance", len(provenance), bool(provenance)),
        item("ledger integrity verified", verification.ok, verification.ok),
    ]


def write_json(report: Mapping[str, Any], path: str | PathLike[str]) -> Path:
    """Write the report as canonical, indented JSON (UTF-8)."""
    out = Path(path)
    out.write_text(
        json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    return out


def write_markdown(report: Mapping[str, Any], path: str | PathLike[str]) -> Path:
    from securefl.audit.render_md import render_markdown

    out = Path(path)
    out.write_text(render_markdown(report), encoding="utf-8")
    return out


def write_html(report: Mapping[str, Any], path: str | PathLike[str]) -> Path:
    from securefl.audit.render_html import render_html

    out = Path(path)
    out.write_text(render_html(report), encoding="utf-8")
    return out
