"""Privacy reports built from a ledger: JSON (schema ``audits/report.schema.json``), Markdown,
HTML and PDF.

The content follows the reporting checklist of Ponomareva et al. 2023 ("How to DP-fy ML",
§5.3: privacy unit, adjacency, accounting, sampling, hyperparameters) and the evaluation
pyramid of NIST SP 800-226 (unit of privacy, privacy parameters ε/δ, algorithms and
correctness, trust model and security): :data:`REPORT_STRUCTURE` names the report fields that
answer each item. Every figure an auditor needs is *recomputed* from the recorded DP events
under each accountant, never copied from the run's own claims; the run's claims are compared
with the recomputation instead. A report whose ledger fails verification states no guarantee.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from securefl.audit.keys import PublicKeySource
from securefl.audit.ledger import (
    MODEL_PROVENANCE,
    POLICY,
    ROUND_ABORTED,
    ROUND_COMPLETED,
    ROUND_REFUSED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Entry,
    Ledger,
    VerifyResult,
    format_timestamp,
    read_entries,
    verify_ledger,
)
from securefl.audit.policy import BudgetPolicy
from securefl.audit.records import (
    NODE_CONTRIBUTION,
    NODE_ROUND_REFUSED,
    NodeContribution,
    Record,
    RecordError,
    RunStarted,
    parse_as,
)
from securefl.audit.spend import (
    ACCOUNTANTS,
    ChargedRound,
    charged_rounds,
    curve_points,
    epsilon_curve,
    epsilon_of_events,
    mechanisms_of,
    node_run_charges,
    sampling_of,
)
from securefl.audit.threat_model import aggregation_threat_model, dp_threat_model, trust_model
from securefl.dp.participation import cohort_size_leak
from securefl.errors import ConfigurationError

SCHEMA_VERSION = 2
EMPIRICAL_AUDIT = "empirical_audit"
DEFAULT_DELTA = 1e-5
METRIC_KEYS = ("accuracy", "loss", "bytes_up", "bytes_down", "participants", "dropouts")
# PLD and PRV recompose at every point (~0.2 s and ~1 s each here), RDP adds curves (cheap):
# the plot shows RDP at every point, PLD at 8, PRV at the final round only.
_PLD_CURVE_POINTS = 8
_PRV_CURVE_POINTS = 1
# The per-round ε column uses RDP: cheap at every round, and an upper bound on PLD/PRV.
ROUND_EPSILON_ACCOUNTANT = "rdp"
_NO_DP_MECHANISMS = frozenset({"non_private"})

# NIST SP 800-226 evaluation items → report fields (also documented in audits/README.md).
REPORT_STRUCTURE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Summary",
        "the claim in one sentence (or the plain statement that there is none)",
        ("guarantee.statement", "guarantee.dp_status", "guarantee.verified"),
    ),
    (
        "1. Privacy unit",
        "unit of privacy: whose data one ε protects, and the neighbouring relation",
        ("guarantee.privacy_unit", "guarantee.adjacency"),
    ),
    (
        "2. Privacy parameters",
        "ε and δ, their meaning, the budget, and how ε grew over the rounds",
        (
            "guarantee.epsilon",
            "guarantee.headline",
            "guarantee.delta",
            "guarantee.budget",
            "epsilon_curve",
            "rounds[].epsilon_cumulative",
        ),
    ),
    (
        "3. Mechanism and accounting",
        "algorithms and correctness: mechanism, sampling, clip, noise, composition, code",
        (
            "guarantee.mechanisms",
            "guarantee.sampling",
            "guarantee.clip",
            "guarantee.noise_multiplier",
            "guarantee.composition",
            "runs[].code_version",
            "runs[].planned_rounds",
            "empirical_audits",
        ),
    ),
    (
        "4. Trust model",
        "who must be honest for ε to hold, per aggregation protocol and DP mode",
        ("threat_model.trust_model", "threat_model.aggregation", "threat_model.dp"),
    ),
    (
        "5. Coverage",
        "what is and is not covered: resumes, aborted and uncharged rounds, refusals, caveats",
        ("disclosures", "refusals", "assumptions", "caveats", "threat_model.dp"),
    ),
    (
        "Ledger integrity",
        "security of the record itself: hash chain, signed head, external anchor",
        ("ledger.verification",),
    ),
    (
        "Model provenance",
        "which release the claim covers",
        ("model_provenance", "runs"),
    ),
)

# Python argument names in messages from lower layers → the CLI flags an auditor types.
_CLI_WORDS = (
    ("pass expected_head", "pass --expect-head SEQ:HASH"),
    ("expected_head=", "--expect-head SEQ:HASH"),
    ("pass the expected public key", "pass the expected signer with --public-key"),
)


def cli_words(message: str) -> str:
    """A message with Python argument names replaced by the CLI flags that set them."""
    for old, new in _CLI_WORDS:
        message = message.replace(old, new)
    return message


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


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


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


#: Rounds of these protocols abort below 3 participants (fl.md §5); others need one.
_SECURE_MIN_COHORT = {"secagg": 3, "secagg+": 3, "he-ckks": 3}


def _cohort_size_leak(
    entries: Sequence[Entry],
    runs: Mapping[str, Entry],
    tightest: tuple[str, float] | None,
    delta: float,
) -> str | None:
    """A caveat when a client-level run's Poisson cohort size, revealed by the rounds that do
    not release, adds more than δ/100 to δ (``protocols/dp.md`` §5); recomputed from each
    run's recorded sampling, aggregation and policy (the one that refused its small cohorts;
    η is not monotone in m, so another run's or the report's policy would not bound it)."""
    if tightest is None or not math.isfinite(tightest[1]):
        return None
    floors: dict[str, int] = {}
    for e in entries:
        recorded = e.payload.get("policy") if e.kind == POLICY else None
        cohort = recorded.get("cohort") if isinstance(recorded, Mapping) else None
        if isinstance(cohort, Mapping) and isinstance(cohort.get("min_cohort"), int):
            floors[e.run_id] = max(floors.get(e.run_id, 1), int(cohort["min_cohort"]))
    worst = 0.0
    for run_id, started in runs.items():
        p = started.payload
        sampling, agg = p.get("sampling"), p.get("aggregation")
        if p.get("privacy_unit") != "client" or not isinstance(sampling, Mapping):
            continue
        q, n, rounds = _num(sampling.get("q")), sampling.get("n"), p.get("planned_rounds")
        if sampling.get("scheme") != "poisson" or q is None or not 0 < q <= 1:
            continue
        if not isinstance(n, int) or not isinstance(rounds, int) or n < 1 or rounds < 0:
            continue
        protocol = agg.get("protocol") if isinstance(agg, Mapping) else None
        m = max(_SECURE_MIN_COHORT.get(str(protocol), 1), floors.get(run_id, 1))
        worst = max(worst, cohort_size_leak(n, q, rounds, m))
    added = math.exp(min(tightest[1], 700.0)) * worst
    if added <= delta / 100:
        return None
    return (
        f"the Poisson-sampled cohort's size is revealed by the rounds that do not release (one"
        f" client's coin decides it with probability η = {worst:.3g} over the run, which no DP"
        f" event covers): the guarantee is (ε, δ + e^ε·η), δ + {added:.3g} instead of"
        f" {delta:.3g} (protocols/dp.md §5); sample every client or a fixed number a round"
    )


def _first(values: Iterable[Any]) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _field(payload: Mapping[str, Any], key: str, *subs: str) -> Any:
    """``payload[key]``, else the same key inside the sub-dicts ``subs`` (e.g. ``"dp"``)."""
    if payload.get(key) is not None:
        return payload[key]
    for sub in subs:
        inner = payload.get(sub)
        if isinstance(inner, Mapping) and inner.get(key) is not None:
            return inner[key]
    return None


# -- payload readers: the typed records (securefl.audit.records) first; a malformed entry (a
#    tampered ledger is still reported) falls back to reading the raw payload.

_R = TypeVar("_R", bound=Record)


def _record(e: Entry, cls: type[_R]) -> _R | None:
    try:
        return parse_as(e, cls)
    except RecordError:
        return None


def run_started_fields(e: Entry) -> tuple[int | None, dict[str, Any] | None]:
    """(planned rounds, code version) of a ``run_started`` entry."""
    rec = _record(e, RunStarted)
    planned = rec.planned_rounds if rec is not None else None
    cv = dict(rec.code_version) if rec is not None and rec.code_version else None
    if planned is None:
        planned = planned_rounds(e.payload)
    return planned, cv if cv is not None else code_version_of(e.payload)


def planned_rounds(run_started: Mapping[str, Any]) -> int | None:
    """Planned rounds of a ``run_started`` payload: ``planned_rounds``, else ``rounds``, else
    the older location ``config.rounds``."""
    return _int(
        _first(
            [
                _int(run_started.get("planned_rounds")),
                _int(run_started.get("rounds")),
                _int(_field(run_started, "rounds", "config")),
            ]
        )
    )


def code_version_of(run_started: Mapping[str, Any]) -> dict[str, Any] | None:
    """``code_version`` of a ``run_started`` payload (top level, else inside ``config``)."""
    v = _first([run_started.get("code_version"), _field(run_started, "code_version", "config")])
    return dict(v) if isinstance(v, Mapping) else None


def _budget_of_run(run_started: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The run's own ε budget and accountant (``epsilon_budget``, else ``target_epsilon`` when
    DP is on), top level or inside ``config``."""
    budget = _num(_field(run_started, "epsilon_budget", "config"))
    mode = _first([_field(run_started, "mode", "dp"), _field(run_started, "dp", "config")])
    if budget is None and isinstance(mode, str) and mode != "none":
        budget = _num(_field(run_started, "target_epsilon", "config"))
    acct = _field(run_started, "accountant", "dp", "config")
    return budget, acct if isinstance(acct, str) else None


def _round_row(
    e: Entry, c: ChargedRound, extra: Mapping[str, Any] | None, eps_cum: float | None
) -> dict[str, Any]:
    payload = e.payload
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), Mapping) else {}
    merged: dict[str, Any] = {**payload, **(metrics or {}), **dict(extra or {})}
    eps = merged.get("epsilon")
    return {
        "run_id": e.run_id,
        "round_id": e.round_id,
        "round": None if e.round_id is None else e.round_id + 1,
        "seq": e.seq,
        "status": c.status,
        "timestamp": e.timestamp,
        "participants": _count(merged.get("participants")),
        "dropouts": _count(_first([merged.get("dropouts"), merged.get("dropped")])),
        "accuracy": _num(merged.get("accuracy")),
        "loss": _num(merged.get("loss")),
        "bytes_up": _num(merged.get("bytes_up")),
        "bytes_down": _num(merged.get("bytes_down")),
        "epsilon_cumulative": eps_cum,
        "epsilon_recorded": eps if isinstance(eps, Mapping) else _num(eps),
    }


def _portable_path(value: Any) -> Any:
    """A recorded absolute file path shortened to its last two parts: the operator's
    machine layout (home and venv directories) is not the auditor's business, and the weights'
    SHA-256 identifies the model. The ledger keeps the full value."""
    if not isinstance(value, str):
        return value
    if value.startswith(("/", "~")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/"):
        parts = [x for x in value.replace("\\", "/").split("/") if x]
        return "(local path) …/" + "/".join(parts[-2:])
    return value


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
            "source": _portable_path(_first([p.get("source"), p.get("path")])),
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
                span = f"{min(vs):.4g}–{max(vs):.4g}"
                merged[k] = min(vs) if k == "threshold" else span
                if k == "threshold":
                    merged["threshold_range"] = span
            else:
                merged[k] = [
                    json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in vs
                ]
        out.append(merged)
    return out


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


def _round_epsilons(
    charged: Sequence[ChargedRound], delta: float, adjacency: str
) -> list[float | None]:
    """Cumulative ε after each charged round under :data:`ROUND_EPSILON_ACCOUNTANT`."""
    if not charged:
        return []
    events = [c.event for c in charged]
    try:
        values = epsilon_curve(
            ROUND_EPSILON_ACCOUNTANT, events, range(1, len(events) + 1), delta, adjacency
        )
    except ConfigurationError:
        return [None] * len(charged)
    return [v if v is not None and math.isfinite(v) else None for v in values]


def _describe_reconciliation(action: Mapping[str, Any]) -> str:
    """Plain words for one ``run_resumed["reconciled"]`` action of the loop."""
    parts = []
    for k, v in action.items():
        r = _int(v)
        if k == "appended_round_completed" and r is not None:
            parts.append(
                f"round {r + 1} had finished before the crash; its completion entry was"
                " appended from the checkpoint (charged)"
            )
        elif k == "aborted_in_flight_round" and r is not None:
            parts.append(
                f"round {r + 1} was in flight at the crash; recorded as aborted with nothing"
                " released (not charged) and re-run"
            )
        else:
            parts.append(f"{k.replace('_', ' ')}: {v}")
    return "; ".join(parts) or "nothing to reconcile"


def _disclosures(
    entries: Sequence[Entry], charged: Sequence[ChargedRound]
) -> dict[str, list[dict[str, Any]]]:
    """Events that change what the guarantee covers: resumes, aborted rounds, in-flight rounds.

    An aborted round with ``released: false`` is not charged on the operator's word alone (the
    ledger cannot show that nothing left the process), so it is listed as an assertion."""
    resumes = []
    uncharged = []
    aborted_charged = []
    for e in entries:
        if e.kind == RUN_RESUMED:
            actions = e.payload.get("reconciled")
            acts = [
                a for a in (actions if isinstance(actions, list) else []) if isinstance(a, Mapping)
            ]
            from_round = _int(e.payload.get("from_round"))
            resumes.append(
                {
                    "run_id": e.run_id,
                    "timestamp": e.timestamp,
                    "rounds_done_before": from_round,
                    "reconciled": [_describe_reconciliation(a) for a in acts],
                }
            )
        elif e.kind == ROUND_ABORTED:
            row = {
                "run_id": e.run_id,
                "round": None if e.round_id is None else e.round_id + 1,
                "timestamp": e.timestamp,
                "reason": str(e.payload.get("reason", "")) or None,
            }
            if e.payload.get("released") is False:
                uncharged.append(
                    {
                        **row,
                        "basis": "operator's assertion that nothing was released"
                        " (not verifiable from the ledger)",
                    }
                )
            else:
                aborted_charged.append(row)
    in_flight = [
        {
            "run_id": c.run_id,
            "round": None if c.round_id is None else c.round_id + 1,
            "seq": c.seq,
        }
        for c in charged
        if c.status == "in_flight"
    ]
    return {
        "resumes": resumes,
        "uncharged_rounds": uncharged,
        "aborted_rounds_charged": aborted_charged,
        "in_flight_rounds": in_flight,
    }


def _budget(
    policy: BudgetPolicy | None,
    run_payloads: Sequence[Mapping[str, Any]],
    eps_final: Mapping[str, float | None],
) -> dict[str, Any] | None:
    """The budget the run was held to and how much of it the recomputed ε uses."""
    acct: str | None
    d: float | None
    if policy is not None:
        eps, acct, source, d = (
            policy.max_epsilon,
            policy.accountant,
            f"policy {policy.name}",
            policy.delta,
        )
    else:
        found = [b for b in (_budget_of_run(p) for p in run_payloads) if b[0] is not None]
        if not found:
            return None
        eps_run, acct = found[0]
        assert eps_run is not None
        eps, source = eps_run, "run configuration"
        d = _num(_first(_field(p, "delta", "dp", "config") for p in run_payloads))
    spent = eps_final.get(acct) if acct else None
    return {
        "epsilon": eps,
        "delta": d,
        "accountant": acct,
        "source": source,
        "spent": spent,
        "within": None if spent is None else spent <= eps * (1 + 1e-9),
    }


def _dp_status(charged: Sequence[ChargedRound], mechs: set[str]) -> str:
    if not charged:
        return "no_releases"
    if not mechs - _NO_DP_MECHANISMS:
        return "none"
    if mechs & _NO_DP_MECHANISMS:
        return "partial"
    return "dp"


def _node_summary(entries: Sequence[Entry]) -> str | None:
    """One sentence for a node's own ledger (protocols/engine-flower.md, "Node-side policy
    and ledger"): its contributions, refusals and each run's ε recomputed at the δ and with
    the accountant the node recorded — the server-round sections do not apply to it."""
    contributions = [e for e in entries if e.kind == NODE_CONTRIBUTION]
    refused = sum(e.kind == NODE_ROUND_REFUSED for e in entries)
    if not contributions and not refused:
        return None
    try:
        charges = node_run_charges(contributions)
        deltas = {e.run_id: parse_as(e, NodeContribution).delta for e in contributions}
    except ConfigurationError as exc:
        return f"node ledger: its contributions cannot be accounted ({exc})"
    parts: list[str] = []
    total = 0.0
    for c in charges:
        eps, _why = epsilon_of_events(
            [c.charged_event], c.accountant, deltas[c.run_id], c.adjacency
        )
        total += eps
        shown = "∞" if not math.isfinite(eps) else f"{eps:.4g}"
        parts.append(
            f"run {c.run_id}: ε = {shown} at δ = {deltas[c.run_id]:g} ({c.accountant.upper()},"
            f" {c.count} rounds charged)"
        )
    shown_total = "∞" if not math.isfinite(total) else f"{total:.4g}"
    runs = "; ".join(parts) if parts else "none"
    return (
        f"node ledger: this data holder contributed {len(contributions)} round(s) to"
        f" {len(charges)} run(s) and refused {refused}; ε per run, recomputed by the node's"
        f" rule (the announced per-round event × the planned rounds): {runs}; total"
        f" ε = {shown_total} (basic composition across runs). The per-round sections of this"
        " report describe server ledgers and are empty here; check with securefl audit"
        " node-check."
    )


def _statement(g: Mapping[str, Any], verified: bool) -> str:
    """The report's one-sentence claim; none at all when the ledger failed verification."""
    if not verified:
        return (
            "UNVERIFIED: the ledger failed verification, so no privacy guarantee is stated. The"
            " figures below are recomputed from entries that may have been altered; they are"
            " not a guarantee."
        )
    unit, n = g["privacy_unit"], g["rounds_charged"]
    status = g["dp_status"]
    if status == "none":
        return (
            f"No differential privacy: {n} round(s) were released without DP noise. No (ε, δ)"
            f" guarantee holds for any {unit}; only the aggregation protocol's protections"
            " apply (trust model below)."
        )
    if status == "partial":
        return (
            "No differential privacy guarantee: at least one round was released without DP"
            " noise, so ε is unbounded for the run as a whole."
        )
    if status == "no_releases":
        return "Nothing was released: no round was charged to the privacy budget."
    head = g.get("headline")
    if not head:
        return (
            "No ε can be stated: none of the accountants can bound the recorded events"
            " (see the caveats)."
        )
    text = (
        f"(ε = {head['epsilon']:.4g}, δ = {g['delta']:.3g})-differential privacy for each"
        f" {unit} ({g['adjacency']} adjacency, {head['accountant'].upper()} accounting) over"
        f" {n} charged round(s)."
    )
    b = g.get("budget")
    if b:
        verdict = (
            "" if b["within"] is None else " — within budget" if b["within"] else " — OVER BUDGET"
        )
        text += f" Budget: ε ≤ {b['epsilon']:g} ({b['source']}){verdict}."
    return text


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
    utility: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full report as plain data (validates against ``audits/report.schema.json``).

    ``utility`` (:func:`securefl.audit.utility.utility_reference`) adds the benchmark's
    privacy–utility curve as a labelled reference section.

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
    mechs: set[str] = set()
    for c in charged:
        mechs |= mechanisms_of(c.event)
    dp_status = _dp_status(charged, mechs)
    curve = _curve(charged, accountants, delta, adjacency, max_curve_points)
    eps_final: dict[str, float | None] = {}
    for name in accountants:
        series = curve[name]
        eps_final[name] = series[-1] if series else 0.0
    if not charged:
        eps_final = dict.fromkeys(accountants, 0.0)
    finite = {k: v for k, v in eps_final.items() if v is not None}
    tightest = min(finite.items(), key=lambda kv: kv[1]) if finite else None
    if dp_status in ("none", "partial"):
        caveats.append("a non-private release was recorded: no finite ε holds")
    elif any(v is None for v in eps_final.values()):
        missing = sorted(k.upper() for k, v in eps_final.items() if v is None)
        caveats.append(f"accountant(s) {', '.join(missing)} cannot bound the recorded events")

    leak = _cohort_size_leak(entries, runs, tightest, delta)
    if leak is not None:
        caveats.append(leak)

    # -- per-round rows and consistency with the run's own claims --------------------------
    completed = [e for e in entries if e.kind == ROUND_COMPLETED]
    by_seq = {e.seq: e for e in entries}
    round_eps = _round_epsilons(charged, delta, adjacency) if dp_status == "dp" else []
    rows = [
        _round_row(
            by_seq[c.seq],
            c,
            (metrics or {}).get(c.round_id) if c.round_id is not None else None,
            round_eps[i] if round_eps else None,
        )
        for i, c in enumerate(charged)
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
                    f"the run recorded ε = {c_val:.4g} ({name.upper()}) but the recomputation"
                    f" gives {ours:.4g}: the run's own claim understates its spend"
                )
    in_flight = sum(c.status == "in_flight" for c in charged)
    if in_flight:
        caveats.append(f"{in_flight} round(s) projected but never completed are charged in full")
    disclosures = _disclosures(entries, charged)
    if disclosures["resumes"]:
        caveats.append(
            f"the run was resumed {len(disclosures['resumes'])} time(s) after a stop; what was"
            " reconciled is listed under coverage"
        )
    if disclosures["uncharged_rounds"]:
        caveats.append(
            f"{len(disclosures['uncharged_rounds'])} aborted round(s) are not charged on the"
            " operator's assertion that nothing was released"
        )

    refusals = [
        {
            "run_id": e.run_id,
            "round_id": e.round_id,
            "round": None if e.round_id is None else e.round_id + 1,
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
    dp_modes: set[str] = set()
    for run_id, e in runs.items():
        p = e.payload
        agg = p.get("aggregation") if isinstance(p.get("aggregation"), Mapping) else None
        if agg:
            aggs[json.dumps(agg, sort_keys=True)] = dict(agg)
        started_fields = run_started_fields(e)
        mode = _field(p, "mode", "dp")
        if isinstance(mode, str):
            dp_modes.add(mode)
        n_done = sum(1 for c in charged if c.run_id == run_id and c.status == "completed")
        run_rows.append(
            {
                "run_id": run_id,
                "started_at": e.timestamp,
                "finished_at": finished[run_id].timestamp if run_id in finished else None,
                "privacy_unit": p.get("privacy_unit"),
                "adjacency": p.get("adjacency"),
                "mechanism": _first([p.get("mechanism"), mode]),
                "clip": _num(_field(p, "clip", "dp")),
                "noise_multiplier": _num(_field(p, "noise_multiplier", "dp")),
                "planned_rounds": started_fields[0],
                "rounds_completed": n_done,
                "rounds_refused": sum(1 for r in refusals if r["run_id"] == run_id),
                "resumes": sum(1 for r in disclosures["resumes"] if r["run_id"] == run_id),
                "rounds_uncharged": sum(
                    1 for r in disclosures["uncharged_rounds"] if r["run_id"] == run_id
                ),
                "aggregation": dict(agg) if agg else None,
                "code_version": started_fields[1],
            }
        )
    if run_rows and any(r["code_version"] is None for r in run_rows):
        caveats.append("the code version of a run was not recorded")
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
    sampling = [json.loads(s) for s in sorted(samplings)] if dp_status == "dp" else []

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
        best, claim = (
            _num(audit.get("max_provable_lower_bound")),
            _num(audit.get("epsilon_theoretical")),
        )
        if audit["run_id"] not in runs:
            caveats.append(
                f"the empirical audit recorded as run {audit['run_id']} is not a training run"
                " in this ledger: it did not audit the model this report covers"
            )
        if best is not None and claim is not None and best <= claim:
            caveats.append(
                f"the empirical audit of run {audit['run_id']} could show at most ε ≥ {best:.3g},"
                f" not above the claimed ε = {claim:.3g}: it cannot refute the claim"
            )
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

    budget = _budget(policy, run_payloads, eps_final) if dp_status == "dp" else None
    head_acct = budget["accountant"] if budget and budget["accountant"] in finite else None
    headline = (
        {"accountant": head_acct, "epsilon": finite[head_acct]}
        if head_acct
        else None
        if tightest is None
        else {"accountant": tightest[0], "epsilon": tightest[1]}
    )
    guarantee: dict[str, Any] = {
        "verified": verification.ok,
        "dp_status": dp_status,
        "privacy_unit": privacy_unit,
        "adjacency": adjacency,
        "delta": delta,
        "epsilon": eps_final,
        "tightest": None
        if tightest is None
        else {"accountant": tightest[0], "epsilon": tightest[1]},
        "headline": headline if dp_status == "dp" and verification.ok else None,
        "budget": budget,
        "accountants": list(accountants),
        "policy_accountant": policy.accountant if policy else None,
        "round_epsilon_accountant": ROUND_EPSILON_ACCOUNTANT,
        "mechanisms": sorted(mechs),
        "sampling": sampling,
        "rounds_charged": len(charged),
        "rounds_in_flight": in_flight,
        "clip": clips,
        "noise_multiplier": noises,
        "composition": "adaptive composition of every charged round in the ledger",
    }
    guarantee["statement"] = _statement(guarantee, verification.ok)
    node = _node_summary(entries)
    if node is not None:
        caveats.insert(1 if not verification.ok else 0, node)
        if verification.ok and dp_status == "no_releases":
            guarantee["statement"] = node
    merged_aggs = _merge_aggregations(aggs)
    verification_dict = verification.to_dict()
    verification_dict["errors"] = [cli_words(str(m)) for m in verification_dict["errors"]]
    verification_dict["warnings"] = [cli_words(str(m)) for m in verification_dict["warnings"]]
    return {
        "schema_version": SCHEMA_VERSION,
        "title": title or "Privacy report",
        "generated_at": format_timestamp(generated_at),
        "ledger": {
            "source": source_label if source_label is not None else source,
            "entries": len(entries),
            "verification": verification_dict,
        },
        "guarantee": guarantee,
        "epsilon_curve": curve,
        "runs": run_rows,
        "rounds": rows,
        "refusals": refusals,
        "disclosures": disclosures,
        "policy": policy_block,
        "recorded_policy_sha256": [s for s in recorded_policies if isinstance(s, str)],
        "threat_model": {
            "aggregation": [aggregation_threat_model(a) for a in merged_aggs],
            "dp": dp_threat_model(mechs, str(privacy_unit), adjacency),
            "trust_model": trust_model(
                [str(a["protocol"]) for a in merged_aggs],
                mechs,
                dp_modes,
                str(privacy_unit),
                frozenset(
                    str(a["protocol"]) for a in merged_aggs if a.get("weakened_threat_model")
                ),
            ),
        },
        "model_provenance": provenance,
        "empirical_audits": empirical,
        **({"utility_reference": dict(utility)} if utility is not None else {}),
        "assumptions": assumptions,
        "caveats": list(dict.fromkeys(caveats)),
        "checklist": _checklist(guarantee, merged_aggs, provenance, verification, run_rows),
        "structure": [
            {"section": s, "nist_item": item, "fields": list(fields)}
            for s, item, fields in REPORT_STRUCTURE
        ],
    }


def _checklist(
    g: Mapping[str, Any],
    aggs: Sequence[Mapping[str, Any]],
    provenance: Sequence[Any],
    verification: VerifyResult,
    runs: Sequence[Mapping[str, Any]],
) -> list[dict[str, str]]:
    """Ponomareva et al. 2023 §5.3 / NIST SP 800-226 items, each with its value as text."""
    from securefl.audit.render_common import (
        code_version_text,
        epsilon_text,
        mechanisms_text,
        number_list,
        sampling_text,
    )

    def item(name: str, value: str, ok: bool) -> dict[str, str]:
        return {"item": name, "value": value, "status": "reported" if ok else "missing"}

    dp = g["dp_status"] == "dp"
    protocols = sorted({str(a.get("protocol")) for a in aggs})
    codes = sorted({code_version_text(r["code_version"]) for r in runs if r["code_version"]})
    planned = sorted({str(r["planned_rounds"]) for r in runs if r["planned_rounds"] is not None})
    return [
        item("privacy unit", str(g["privacy_unit"]), g["privacy_unit"] != "unknown"),
        item("adjacency (neighbouring relation)", str(g["adjacency"]), True),
        item(
            "mechanism(s)",
            mechanisms_text(g["mechanisms"]),
            dp,
        ),
        item(
            "ε under each accountant",
            epsilon_text(g["epsilon"]) if dp else "no differential privacy",
            dp and any(v is not None for v in g["epsilon"].values()),
        ),
        item("δ", f"{g['delta']:g}" if dp else "not applicable", dp),
        item(
            "budget",
            f"ε ≤ {g['budget']['epsilon']:g} ({g['budget']['source']})"
            if g.get("budget")
            else "none recorded",
            bool(g.get("budget")),
        ),
        item(
            "sampling (as performed)",
            "; ".join(sampling_text(s) for s in g["sampling"]) or "not applicable",
            bool(g["sampling"]),
        ),
        item("rounds charged (compositions)", str(g["rounds_charged"]), True),
        item("planned rounds", ", ".join(planned) or "not recorded", bool(planned)),
        item("clip bound", number_list(g["clip"]), bool(g["clip"])),
        item("noise multiplier", number_list(g["noise_multiplier"]), bool(g["noise_multiplier"])),
        item("trust model / secure aggregation", ", ".join(protocols) or "none", bool(protocols)),
        item("code version", "; ".join(codes) or "not recorded", bool(codes)),
        item(
            "model provenance",
            f"{len(provenance)} record(s)" if provenance else "none",
            bool(provenance),
        ),
        item(
            "ledger integrity verified",
            "yes" if verification.ok else "NO",
            verification.ok,
        ),
    ]


Writer = Callable[[Mapping[str, Any], "str | PathLike[str]"], Path]


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


def write_pdf(report: Mapping[str, Any], path: str | PathLike[str]) -> Path:
    """Print the self-contained HTML report to PDF (see :mod:`securefl.audit.render_pdf`)."""
    from securefl.audit.render_pdf import write_pdf as _write_pdf

    out: Path = _write_pdf(report, path)
    return out


WRITERS: dict[str, Writer] = {
    "json": write_json,
    "md": write_markdown,
    "html": write_html,
    "pdf": write_pdf,
}


def write_report(
    report: Mapping[str, Any], stem: str | PathLike[str], formats: Iterable[str]
) -> dict[str, Path]:
    """Write ``stem.<ext>`` for each format in ``formats`` (keys of :data:`WRITERS`)."""
    wanted = list(dict.fromkeys(formats))
    bad = [f for f in wanted if f not in WRITERS]
    if bad:
        raise ConfigurationError(
            f"unknown report format(s) {', '.join(bad)}; use {', '.join(WRITERS)}",
            parameter="formats",
        )
    base = Path(stem)
    return {f: WRITERS[f](report, base.with_name(f"{base.name}.{f}")) for f in wanted}
