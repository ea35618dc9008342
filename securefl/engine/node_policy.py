"""Node-side enforcement: a data holder's own policy, decided on its own accounting.

A SuperNode must not have to trust the server's bookkeeping (issue 11, item 3). It keeps a
local :class:`NodePolicy` (TOML, safe by default: secure aggregation against a malicious
server, noise the node itself adds, bounded ε), its own signed ledger
(:mod:`securefl.engine.node_ledger`) and refuses a round whose announced
:class:`~securefl.engine.node_terms.RoundTerms` would break the policy. Normative text:
protocols/engine-flower.md, "Node-side policy and ledger".

Accounting rule. The node never reads a server ε. It recomputes, with securefl's accountants
(the same path as the server policy, :func:`securefl.audit.spend.epsilon_of_events`), at the
policy's ``delta_max``:

* per run: the announced per-round ``dp_event`` composed ``max(rounds, contributions)`` times —
  the whole planned run, because a node does not see the rounds it was not sampled into, and
  more if the server asked it more often than planned (a replayed or re-run round is charged);
* in total: the sum of the per-run figures over every run in the node's ledger plus this one —
  *basic* composition across runs (ε's add, and so do the δ's: k runs give (Σε, k·δ_max)),
  because runs are separate analyses by possibly different servers.

A run's terms are pinned at the first round the node joins: a later round of the same run
with a different event, plan, aggregation, DP mode or parameter is refused. Every decision is
recorded in the node ledger *before* the node computes anything, so a crash after admission
still counts the spend. Threat model: the node trusts its own code, clock-free ledger and
policy file; it cannot check that a server running *central* DP adds the noise it announces
(that is why ``central`` is an opt-in), nor that other nodes are honest (Sybils).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securefl.audit.ledger import Entry, Ledger, PendingEntry, canonical_json, read_entries
from securefl.audit.records import (
    NODE_CONTRIBUTION,
    NodeContribution,
    NodePolicyRecorded,
    NodeRoundRefused,
)
from securefl.audit.spend import ACCOUNTANTS, adjacency_of, epsilon_of_events
from securefl.engine.node_ledger import NodeHistory, open_node_ledger
from securefl.engine.node_terms import (
    AGGREGATIONS,
    DP_MODES,
    SECURE_MASKING,
    MalformedTermsError,
    RoundTerms,
)
from securefl.errors import ConfigurationError, UnsafeRequestError
from securefl.vocabulary import ThreatModel

NODE_POLICY_KIND = "node"
_KEYS = frozenset(
    {
        "kind",
        "name",
        "description",
        "max_epsilon_per_run",
        "max_epsilon_total",
        "delta_max",
        "min_threshold",
        "min_threshold_fraction",
        "threat_model",
        "allowed_aggregations",
        "allowed_dp",
        "min_noise_multiplier",
        "max_clip",
        "accountant",
    }
)
_NON_PRIVATE = frozenset({"non_private"})
_NO_RELEASE = frozenset({"noop", "non_private"})


class NodePolicyError(ConfigurationError):
    """A node policy file or dict is malformed; ``parameter`` names the field."""


class NodePolicyRefusal(UnsafeRequestError):
    """The node refuses a round under its own policy (recorded in its ledger first).

    ``reasons`` lists every rule broken, each ``"rule: message"`` (rule names in
    protocols/engine-flower.md); ``run_id`` / ``round_index`` say which round, ``None`` when
    the terms did not parse.
    """

    def __init__(self, reasons: list[str], *, run_id: str | None, round_index: int | None) -> None:
        where = "announced round" if run_id is None else f"round {round_index} of run {run_id}"
        super().__init__(f"node refuses {where}: " + "; ".join(reasons))
        self.reasons = list(reasons)
        self.run_id = run_id
        self.round_index = round_index


# --------------------------------------------------------------------------- the policy
def _num(d: Mapping[str, Any], key: str, default: float, *, hi: float, zero: bool = False) -> float:
    """A finite number in (0, hi] (``zero``: [0, hi])."""
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise NodePolicyError(f"must be a number, got {v!r}", parameter=key)
    x = float(v)
    if not math.isfinite(x) or not (x >= 0 if zero else x > 0) or x > hi:
        raise NodePolicyError(
            f"must be a finite number in {'[' if zero else '('}0, {hi:g}], got {x!r}",
            parameter=key,
        )
    return x


def _names(
    d: Mapping[str, Any], key: str, default: frozenset[str], known: Iterable[str]
) -> frozenset[str]:
    v = d.get(key)
    if v is None:
        return default
    opts = tuple(known)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise NodePolicyError("must be a list of names", parameter=key)
    bad = sorted(set(v) - set(opts))
    if bad:
        raise NodePolicyError(
            f"unknown name(s) {', '.join(map(repr, bad))}; known: {', '.join(opts)}",
            parameter=key,
        )
    return frozenset(v)


@dataclass(frozen=True)
class NodePolicy:
    """What a data holder will take part in (``audits/policies/node_default.toml``).

    Every field is optional, and the default is the strong choice; a weaker one must be
    written in the file: ``plain`` aggregation (the server sees the node's individual update),
    ``central`` DP (the server adds the noise to a sum it sees in the clear), ``none`` (no DP),
    the ``semi-honest`` SecAgg threat model.
    """

    name: str = "node-default"
    description: str = ""
    max_epsilon_per_run: float = 10.0
    max_epsilon_total: float = 30.0
    delta_max: float = 1e-5
    min_threshold: int = 3
    min_threshold_fraction: float = 0.5
    threat_model: ThreatModel = ThreatModel.MALICIOUS
    allowed_aggregations: frozenset[str] = frozenset({"secagg", "secagg+"})
    allowed_dp: frozenset[str] = frozenset({"distributed", "local"})
    min_noise_multiplier: float = 0.5
    max_clip: float | None = None
    #: ``None``: the accountant the run announces (each of rdp / prv / pld is a sound upper
    #: bound, and the node computes it itself); a name pins the node's own choice.
    accountant: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodePolicy:
        """Read a TOML node policy; :class:`NodePolicyError` (``parameter="path"`` for I/O
        and syntax) on anything invalid."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise NodePolicyError(f"cannot read {p}: {exc.strerror}", parameter="path") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise NodePolicyError(f"{p} is not valid TOML: {exc}", parameter="path") from exc
        except RecursionError:
            raise NodePolicyError(f"{p} nests too deeply", parameter="path") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodePolicy:
        if not isinstance(d, Mapping):
            raise NodePolicyError("must be a table", parameter="policy")
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise NodePolicyError(
                f"unknown field(s) {', '.join(unknown)}", parameter=str(unknown[0])
            )
        if d.get("kind", NODE_POLICY_KIND) != NODE_POLICY_KIND:
            raise NodePolicyError(f"must be {NODE_POLICY_KIND!r}", parameter="kind")
        for key in ("name", "description"):
            if key in d and not isinstance(d[key], str):
                raise NodePolicyError("must be a string", parameter=key)
        threshold = d.get("min_threshold", 3)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
            raise NodePolicyError("must be an integer >= 2", parameter="min_threshold")
        max_clip = d.get("max_clip")
        accountant = d.get("accountant")
        try:
            threat_model = ThreatModel.parse(
                d.get("threat_model", ThreatModel.MALICIOUS.value), parameter="threat_model"
            )
        except ConfigurationError as exc:
            raise NodePolicyError(str(exc).split(": ", 1)[-1], parameter="threat_model") from exc
        if accountant is not None and accountant not in ACCOUNTANTS:
            raise NodePolicyError(
                f"must be one of {', '.join(ACCOUNTANTS)}", parameter="accountant"
            )
        policy = cls(
            name=d.get("name", "node-default") or "node-default",
            description=d.get("description", ""),
            max_epsilon_per_run=_num(d, "max_epsilon_per_run", 10.0, hi=math.inf),
            max_epsilon_total=_num(d, "max_epsilon_total", 30.0, hi=math.inf),
            delta_max=_num(d, "delta_max", 1e-5, hi=0.5),
            min_threshold=threshold,
            min_threshold_fraction=_num(d, "min_threshold_fraction", 0.5, hi=1),
            threat_model=threat_model,
            allowed_aggregations=_names(
                d, "allowed_aggregations", cls.allowed_aggregations, AGGREGATIONS
            ),
            allowed_dp=_names(d, "allowed_dp", cls.allowed_dp, DP_MODES),
            min_noise_multiplier=_num(d, "min_noise_multiplier", 0.5, hi=math.inf, zero=True),
            max_clip=None if max_clip is None else _num(d, "max_clip", 1.0, hi=math.inf),
            accountant=accountant,
        )
        return policy

    def to_dict(self) -> dict[str, Any]:
        """The TOML structure back (recorded in the node ledger)."""
        out: dict[str, Any] = {
            "kind": NODE_POLICY_KIND,
            "name": self.name,
            "description": self.description,
            "max_epsilon_per_run": self.max_epsilon_per_run,
            "max_epsilon_total": self.max_epsilon_total,
            "delta_max": self.delta_max,
            "min_threshold": self.min_threshold,
            "min_threshold_fraction": self.min_threshold_fraction,
            "threat_model": self.threat_model.value,
            "allowed_aggregations": sorted(self.allowed_aggregations),
            "allowed_dp": sorted(self.allowed_dp),
            "min_noise_multiplier": self.min_noise_multiplier,
        }
        if self.max_clip is not None:
            out["max_clip"] = self.max_clip
        if self.accountant is not None:
            out["accountant"] = self.accountant
        return out

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()


# --------------------------------------------------------------------------- deciding
@dataclass(frozen=True)
class NodeDecision:
    """The node's answer for one round: ``reasons`` (empty = admitted) and its own figures
    (``None`` ε: no finite bound)."""

    reasons: list[str]
    epsilon_run: float | None
    epsilon_total: float | None
    charged_rounds: int
    accountant: str
    adjacency: str

    @property
    def admitted(self) -> bool:
        return not self.reasons


EpsilonCache = dict[tuple[str, int, str, float], tuple[float, str | None]]


def _leaf_noise(event: Mapping[str, Any]) -> Iterator[float]:
    """z = noise std / L2 sensitivity of every noise-adding leaf of an event dict (0 for a
    non-private release); sampling / composition wrappers are walked."""
    stack: list[Any] = [event]
    while stack:
        node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        kind = node.get("type")
        if kind == "gaussian":
            yield float(node["noise_multiplier"])
        elif kind == "discrete_gaussian":
            yield float(node["sigma"]) / float(node["l2_sensitivity"])
        elif kind == "distributed_discrete_gaussian":
            n = float(node["min_contributors"])
            yield float(node["sigma"]) * math.sqrt(n) / float(node["l2_sensitivity"])
        elif kind == "discrete_gaussian_tree_increment":  # per node and participation
            yield float(node["sigma"]) / float(node["l2_sensitivity"])
        elif kind == "zcdp":  # ρ = 1/(2z²) for the Gaussian mechanism
            yield 1.0 / math.sqrt(2.0 * float(node["rho"]))
        elif kind == "non_private":
            yield 0.0
        stack.append(node.get("event"))
        subs = node.get("events")
        if isinstance(subs, list):
            stack.extend(subs)


def _types(event: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    stack: list[Any] = [event]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            if isinstance(node.get("type"), str):
                out.add(node["type"])
            stack.append(node.get("event"))
            subs = node.get("events")
            if isinstance(subs, list):
                stack.extend(subs)
    return out


def run_epsilon(
    event: Mapping[str, Any],
    count: int,
    accountant: str,
    delta: float,
    cache: EpsilonCache | None = None,
) -> tuple[float, str | None]:
    """ε at ``delta`` of ``event`` run ``count`` times: ``(ε, None)`` or ``(∞, why)``."""
    if _types(event) & _NON_PRIVATE:
        return math.inf, "the run releases without DP (non_private event)"
    key = (canonical_json(event), count, accountant, delta)
    if cache is not None and key in cache:
        return cache[key]
    composed = {"type": "self_composed", "event": dict(event), "count": count}
    try:
        value = epsilon_of_events([composed], accountant, delta, adjacency_of(event))
    except (ArithmeticError, ValueError) as exc:  # fail closed on any numeric failure
        value = (math.inf, f"the DP event cannot be accounted ({type(exc).__name__})")
    if cache is not None:
        cache[key] = value
    return value


def _shown(eps: float) -> str:
    return "∞" if not math.isfinite(eps) else f"{eps:.4g}"


def evaluate(
    policy: NodePolicy,
    terms: RoundTerms,
    history: NodeHistory,
    cache: EpsilonCache | None = None,
) -> NodeDecision:
    """Every rule of ``policy`` against ``terms`` given what the node already did (pure)."""
    reasons: list[str] = []
    if history.error is not None:
        reasons.append(f"ledger: the node ledger cannot be accounted ({history.error})")
    pinned = history.pinned.get(terms.run_id)
    if pinned is not None and pinned.pinned() != terms.pinned():
        now = terms.pinned()
        changed = sorted(k for k, v in pinned.pinned().items() if now.get(k) != v)
        reasons.append(
            f"terms_changed: {', '.join(changed)} differ from round"
            f" {history.first_round[terms.run_id]}, the first this node joined in run"
            f" {terms.run_id}"
        )
    if terms.aggregation not in policy.allowed_aggregations:
        reasons.append(
            f"aggregation: {terms.aggregation!r} is not allowed"
            f" (allowed: {', '.join(sorted(policy.allowed_aggregations))})"
        )
    if terms.dp not in policy.allowed_dp:
        reasons.append(
            f"dp: {terms.dp!r} is not allowed (allowed: {', '.join(sorted(policy.allowed_dp))})"
        )
    if terms.aggregation in SECURE_MASKING:
        if (
            policy.threat_model is ThreatModel.MALICIOUS
            and ThreatModel.parse(terms.threat_model) is ThreatModel.SEMI_HONEST
        ):
            reasons.append(
                "threat_model: the run assumes a semi-honest server; this node requires"
                " security against a malicious one"
            )
        t = terms.threshold if terms.threshold is not None else 0
        if t < policy.min_threshold:
            reasons.append(f"threshold: t = {t} < the node's minimum {policy.min_threshold}")
        need = math.ceil(policy.min_threshold_fraction * terms.neighbours - 1e-9)
        if t < need:
            reasons.append(
                f"threshold_fraction: t = {t} of {terms.neighbours} neighbours <"
                f" {policy.min_threshold_fraction:g} of them ({need})"
            )
    if terms.delta > policy.delta_max:
        reasons.append(f"delta: δ = {terms.delta:g} > the node's maximum {policy.delta_max:g}")
    types = _types(terms.dp_event)
    if terms.dp == "none":
        if not types <= _NO_RELEASE:
            reasons.append(
                "dp_event: the run announces no DP but records a DP mechanism"
                f" ({', '.join(sorted(types - _NO_RELEASE))})"
            )
    else:
        z = terms.noise_multiplier
        leaves = list(_leaf_noise(terms.dp_event))
        lowest = min([*leaves, *([] if z is None else [z])], default=None)
        if z is None:
            reasons.append("noise_multiplier: not announced for a DP run")
        if lowest is not None and lowest < policy.min_noise_multiplier:
            reasons.append(
                f"noise_multiplier: {lowest:.4g} (announced or in the DP event) <"
                f" the node's minimum {policy.min_noise_multiplier:g}"
            )
        if policy.max_clip is not None and (terms.clip is None or terms.clip > policy.max_clip):
            reasons.append(f"clip: {terms.clip!r} > the node's maximum {policy.max_clip:g}")

    # -- the node's own accounting ---------------------------------------------------------
    event = terms.dp_event
    accountant = policy.accountant or terms.accountant
    delta = policy.delta_max
    count = max(terms.rounds, history.contributions.get(terms.run_id, 0) + 1)
    non_private_opt_in = terms.dp == "none" and "none" in policy.allowed_dp
    eps_run, why = run_epsilon(event, count, accountant, delta, cache)
    if not non_private_opt_in:
        if why is not None:
            reasons.append(f"epsilon_per_run: {why}")
        elif eps_run > policy.max_epsilon_per_run:
            reasons.append(
                f"epsilon_per_run: ε = {_shown(eps_run)} at δ = {delta:g} ({accountant},"
                f" {count} rounds) > the node's maximum {policy.max_epsilon_per_run:g}"
            )
    others = 0.0
    other_runs = 0
    for charge in history.charges():
        if charge.run_id == terms.run_id:
            continue
        acc = policy.accountant or charge.accountant
        e, _ = run_epsilon(charge.event, charge.count, acc, delta, cache)
        others += e
        other_runs += 1
    total = others + eps_run
    if not non_private_opt_in:
        if not math.isfinite(others):
            reasons.append(
                "epsilon_total: a contribution without a finite ε is recorded on this node;"
                " no finite total holds"
            )
        elif total > policy.max_epsilon_total:
            reasons.append(
                f"epsilon_total: ε = {_shown(total)} over {other_runs + 1} run(s) (basic"
                f" composition, δ = {delta:g} each) > the node's maximum"
                f" {policy.max_epsilon_total:g}"
            )
    return NodeDecision(
        reasons=reasons,
        epsilon_run=eps_run if math.isfinite(eps_run) else None,
        epsilon_total=total if math.isfinite(total) else None,
        charged_rounds=count,
        accountant=accountant,
        adjacency=adjacency_of(event),
    )


# --------------------------------------------------------------------------- the guard
@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An advisory lock beside the ledger: two ClientApp processes of one node cannot both
    pass the total-budget rule before either records its contribution."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class NodeGuard:
    """Admits or refuses announced rounds for one node, recording each decision first.

    ``ledger`` is the node's own (:func:`open_node_ledger`, opened with its signing key).
    """

    def __init__(self, policy: NodePolicy, ledger: Ledger) -> None:
        if not isinstance(policy, NodePolicy):
            raise ConfigurationError("must be a NodePolicy", parameter="policy")
        self.policy = policy
        self.ledger = ledger
        self._cache: EpsilonCache = {}

    def _policy_entry(self, history: NodeHistory, run_id: str) -> list[PendingEntry]:
        sha = self.policy.sha256()
        if history.policy_sha256 == sha:
            return []
        rec = NodePolicyRecorded(policy=self.policy.to_dict(), policy_sha256=sha)
        return [PendingEntry(rec.kind, rec.to_payload(), run_id=run_id)]

    def admit(self, terms: RoundTerms) -> NodeDecision:
        """Record and return the admission of ``terms``, or record the refusal and raise
        :class:`NodePolicyRefusal` listing every broken rule. Call before computing."""
        if not isinstance(terms, RoundTerms):
            raise ConfigurationError("must be RoundTerms", parameter="terms")
        with _exclusive(self.ledger.path):
            history = NodeHistory.of(self.ledger.entries())
            decision = evaluate(self.policy, terms, history, self._cache)
            pending = self._policy_entry(history, terms.run_id)
            sha = self.policy.sha256()
            if decision.admitted:
                rec: NodeContribution | NodeRoundRefused = NodeContribution(
                    terms=terms.to_dict(),
                    terms_sha256=terms.sha256,
                    dp_event=terms.dp_event,
                    planned_rounds=terms.rounds,
                    charged_rounds=decision.charged_rounds,
                    accountant=decision.accountant,
                    delta=self.policy.delta_max,
                    adjacency=decision.adjacency,
                    policy_sha256=sha,
                    epsilon_run=decision.epsilon_run,
                    epsilon_total=decision.epsilon_total,
                )
            else:
                rec = NodeRoundRefused(
                    reasons=decision.reasons,
                    policy_sha256=sha,
                    terms=terms.to_dict(),
                    epsilon_run=decision.epsilon_run,
                    epsilon_total=decision.epsilon_total,
                )
            pending.append(
                PendingEntry(
                    rec.kind, rec.to_payload(), run_id=terms.run_id, round_id=terms.round_index
                )
            )
            self.ledger.append_many(pending)
        if not decision.admitted:
            raise NodePolicyRefusal(
                decision.reasons, run_id=terms.run_id, round_index=terms.round_index
            )
        return decision

    def refuse_malformed(
        self, error: MalformedTermsError, *, run_id: str | None = None
    ) -> NodePolicyRefusal:
        """Record that announced terms did not parse; returns the refusal to raise (or to
        report to the server). ``run_id``, if the transport knows it, files the entry."""
        rid = run_id if isinstance(run_id, str) and run_id else "unknown"
        reasons = [f"terms: {error}"]
        with _exclusive(self.ledger.path):
            history = NodeHistory.of(self.ledger.entries())
            pending = self._policy_entry(history, rid)
            rec = NodeRoundRefused(reasons=reasons, policy_sha256=self.policy.sha256())
            pending.append(PendingEntry(rec.kind, rec.to_payload(), run_id=rid))
            self.ledger.append_many(pending)
        return NodePolicyRefusal(reasons, run_id=None, round_index=None)


# --------------------------------------------------------------------------- auditing
@dataclass
class NodeCheckResult:
    """A node ledger replayed against a node policy (``securefl audit node-check``)."""

    ok: bool
    policy: str
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    epsilon_total: float | None = 0.0
    contributions: int = 0
    refusals: int = 0
    delta: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "policy": self.policy,
            "violations": list(self.violations),
            "warnings": list(self.warnings),
            "runs": [dict(r) for r in self.runs],
            "epsilon_total": self.epsilon_total,
            "delta_per_run": self.delta,
            "contributions": self.contributions,
            "refusals": self.refusals,
        }


def check_node_ledger(
    source: Ledger | str | os.PathLike[str] | Iterable[Entry], policy: NodePolicy
) -> NodeCheckResult:
    """Replay a node ledger: every contribution is re-decided under ``policy`` with the
    history before it (ε recomputed, nothing read from the recorded figures), and each run's
    ε and the total are reported."""
    if isinstance(source, Ledger):
        entries = list(source.entries())
    elif isinstance(source, str | os.PathLike):
        entries = read_entries(source)
    else:
        entries = list(source)
    result = NodeCheckResult(ok=True, policy=policy.name, delta=policy.delta_max)
    cache: EpsilonCache = {}
    history = NodeHistory()
    for e in entries:
        if e.kind == NODE_CONTRIBUTION and history.error is None:
            try:
                terms = RoundTerms.from_dict(NodeContribution.from_payload(e.payload).terms)
            except ConfigurationError as exc:
                result.violations.append(f"entry {e.seq}: {exc}")
                continue
            d = evaluate(policy, terms, history, cache)  # the history before this entry
            for r in d.reasons:
                result.violations.append(
                    f"entry {e.seq}: run {e.run_id} round {terms.round_index}: {r}"
                )
        history.feed(e)
    if history.error is not None:
        result.violations.append(history.error)
    result.refusals = history.refusals
    result.contributions = sum(history.contributions.values())
    total = 0.0
    for charge in history.charges():
        acc = policy.accountant or charge.accountant
        eps, why = run_epsilon(charge.event, charge.count, acc, policy.delta_max, cache)
        total += eps
        result.runs.append(
            {
                "run_id": charge.run_id,
                "contributions": charge.contributions,
                "planned_rounds": charge.planned_rounds,
                "charged_rounds": charge.count,
                "accountant": acc,
                "epsilon": eps if math.isfinite(eps) else None,
                **({"why_unbounded": why} if why else {}),
            }
        )
    result.epsilon_total = total if math.isfinite(total) else None
    if result.refusals:
        result.warnings.append(f"the node refused {result.refusals} round(s) (nothing charged)")
    result.ok = not result.violations
    return result


__all__ = [
    "NodeCheckResult",
    "NodeDecision",
    "NodeGuard",
    "NodePolicy",
    "NodePolicyError",
    "NodePolicyRefusal",
    "check_node_ledger",
    "evaluate",
    "open_node_ledger",
    "run_epsilon",
]
