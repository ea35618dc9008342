"""Privacy budget policies (TOML) and their evaluation against a ledger.

A policy states the guarantee a deployment promised (Ponomareva et al. 2023, §5 "reporting"):
privacy unit, adjacency, a maximum ε at a fixed δ under a named accountant, and the operational
safeguards (minimum cohort, minimum secure-aggregation threshold, allowed mechanisms and
aggregation protocols). :meth:`BudgetPolicy.check` recomputes the spend of a whole ledger from
its recorded DP events; :meth:`BudgetPolicy.check_round` is asked by the training loop before
each round with the round's projected event, and a refused round is recorded with
:func:`record_refusal`.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

from securefl.audit.ledger import (
    RUN_STARTED,
    Entry,
    Ledger,
    canonical_json,
    read_entries,
)
from securefl.audit.records import (
    PolicyRecorded,
    RoundCompleted,
    RoundProjected,
    RoundRefused,
    RunStarted,
    parse,
    parse_as,
)
from securefl.audit.spend import (
    ACCOUNTANTS,
    ChargedRound,
    charged_rounds,
    epsilon_of_events,
    mechanisms_of,
)
from securefl.errors import ConfigurationError

PRIVACY_UNITS = ("example", "client")
ADJACENCIES = ("add-remove", "replace-one")
SCOPES = ("ledger", "run")
SECURE_AGGREGATION = frozenset({"secagg", "secagg+"})
KNOWN_PROTOCOLS = frozenset({"plaintext", "secagg", "secagg+", "he-ckks"})
_TOP_KEYS = {
    "name",
    "description",
    "privacy_unit",
    "adjacency",
    "accountant",
    "scope",
    "budget",
    "cohort",
    "allowed",
}


class PolicyError(ConfigurationError):
    """A policy file or dict is malformed; ``parameter`` names the offending field."""


LedgerSource = Ledger | str | PathLike[str] | Iterable[Entry]


def _entries(source: LedgerSource) -> list[Entry]:
    if isinstance(source, Ledger):
        return list(source.entries())
    if isinstance(source, str | PathLike):
        return read_entries(source)
    return list(source)


def _req(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise PolicyError("is required", parameter=f"{where}{key}")
    return d[key]


def _choice(value: Any, options: Iterable[str], name: str) -> str:
    opts = tuple(options)
    if not isinstance(value, str) or value not in opts:
        raise PolicyError(f"must be one of {', '.join(opts)}, got {value!r}", parameter=name)
    return value


def _number(value: Any, name: str, *, lo: float, hi: float, open_lo: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError("must be a number", parameter=name)
    x = float(value)
    bad_lo = x <= lo if open_lo else x < lo
    if not math.isfinite(x) or bad_lo or x >= hi:
        raise PolicyError(
            f"must be in {'(' if open_lo else '['}{lo}, {hi}), got {x}", parameter=name
        )
    return x


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(f"must be an integer >= {minimum}", parameter=name)
    return int(value)


def _names(value: Any, name: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError("must be a list of names", parameter=name)
    return frozenset(value)


def _unknown(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise PolicyError(f"unknown field(s) {', '.join(extra)}", parameter=f"{where}{extra[0]}")


@dataclass(frozen=True)
class Decision:
    """Answer to "may this round run?"; ``reasons`` lists every rule it would break."""

    allowed: bool
    reasons: list[str]
    projected_epsilon: float


@dataclass
class CheckResult:
    """Outcome of evaluating a whole ledger against a policy."""

    ok: bool
    policy: str
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    epsilon: dict[str, float | None] = field(default_factory=dict)  # scope key -> ε
    rounds_charged: int = 0
    rounds_in_flight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "policy": self.policy,
            "violations": list(self.violations),
            "warnings": list(self.warnings),
            "epsilon": dict(self.epsilon),
            "rounds_charged": self.rounds_charged,
            "rounds_in_flight": self.rounds_in_flight,
        }


@dataclass(frozen=True)
class BudgetPolicy:
    """A validated budget policy (see ``audits/policies/*.toml``)."""

    name: str
    privacy_unit: str
    adjacency: str
    accountant: str
    max_epsilon: float
    delta: float
    min_cohort: int = 1
    min_secagg_threshold: int | None = None
    allowed_mechanisms: frozenset[str] | None = None
    allowed_aggregation_protocols: frozenset[str] | None = None
    scope: str = "ledger"
    description: str = ""

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | PathLike[str]) -> BudgetPolicy:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PolicyError(f"cannot read {p}: {exc.strerror}", parameter="path") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{p} is not valid TOML: {exc}", parameter="path") from exc
        except RecursionError:  # tomllib recurses once per nested inline table / array
            raise PolicyError(
                f"{p} is not a policy: tables or arrays nested too deeply", parameter="path"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetPolicy:
        if not isinstance(d, Mapping):
            raise PolicyError("policy must be a table", parameter="policy")
        _unknown(d, _TOP_KEYS, "")
        budget = _req(d, "budget", "")
        if not isinstance(budget, Mapping):
            raise PolicyError("must be a table", parameter="budget")
        _unknown(budget, {"max_epsilon", "delta"}, "budget.")
        cohort = d.get("cohort", {})
        if not isinstance(cohort, Mapping):
            raise PolicyError("must be a table", parameter="cohort")
        _unknown(cohort, {"min_cohort", "min_secagg_threshold"}, "cohort.")
        allowed = d.get("allowed", {})
        if not isinstance(allowed, Mapping):
            raise PolicyError("must be a table", parameter="allowed")
        _unknown(allowed, {"mechanisms", "aggregation_protocols"}, "allowed.")
        name = d.get("name", "unnamed")
        if not isinstance(name, str) or not name:
            raise PolicyError("must be a non-empty string", parameter="name")
        desc = d.get("description", "")
        if not isinstance(desc, str):
            raise PolicyError("must be a string", parameter="description")
        threshold = cohort.get("min_secagg_threshold")
        mechs = allowed.get("mechanisms")
        protos = allowed.get("aggregation_protocols")
        proto_set = None if protos is None else _names(protos, "allowed.aggregation_protocols")
        if proto_set is not None and not proto_set <= KNOWN_PROTOCOLS:
            bad = sorted(proto_set - KNOWN_PROTOCOLS)
            raise PolicyError(
                f"unknown protocol(s) {', '.join(bad)};"
                f" known: {', '.join(sorted(KNOWN_PROTOCOLS))}",
                parameter="allowed.aggregation_protocols",
            )
        return cls(
            name=name,
            description=desc,
            privacy_unit=_choice(_req(d, "privacy_unit", ""), PRIVACY_UNITS, "privacy_unit"),
            adjacency=_choice(_req(d, "adjacency", ""), ADJACENCIES, "adjacency"),
            accountant=_choice(_req(d, "accountant", ""), ACCOUNTANTS, "accountant"),
            scope=_choice(d.get("scope", "ledger"), SCOPES, "scope"),
            max_epsilon=_number(
                _req(budget, "max_epsilon", "budget."), "budget.max_epsilon", lo=0, hi=math.inf
            ),
            delta=_number(_req(budget, "delta", "budget."), "budget.delta", lo=0, hi=1),
            min_cohort=_int(cohort.get("min_cohort", 1), "cohort.min_cohort", minimum=1),
            min_secagg_threshold=None
            if threshold is None
            else _int(threshold, "cohort.min_secagg_threshold", minimum=2),
            allowed_mechanisms=None if mechs is None else _names(mechs, "allowed.mechanisms"),
            allowed_aggregation_protocols=proto_set,
        )

    def to_dict(self) -> dict[str, Any]:
        """The TOML structure back (used for the ``policy`` ledger entry and reports)."""
        cohort: dict[str, Any] = {"min_cohort": self.min_cohort}
        if self.min_secagg_threshold is not None:
            cohort["min_secagg_threshold"] = self.min_secagg_threshold
        allowed: dict[str, Any] = {}
        if self.allowed_mechanisms is not None:
            allowed["mechanisms"] = sorted(self.allowed_mechanisms)
        if self.allowed_aggregation_protocols is not None:
            allowed["aggregation_protocols"] = sorted(self.allowed_aggregation_protocols)
        return {
            "name": self.name,
            "description": self.description,
            "privacy_unit": self.privacy_unit,
            "adjacency": self.adjacency,
            "accountant": self.accountant,
            "scope": self.scope,
            "budget": {"max_epsilon": self.max_epsilon, "delta": self.delta},
            "cohort": cohort,
            "allowed": allowed,
        }

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    # -- rules -----------------------------------------------------------------------------
    def _epsilon_of(self, events: list[dict[str, Any]]) -> tuple[float, str | None]:
        """ε of the composition under the policy's accountant (∞ + reason if unaccountable)."""
        return epsilon_of_events(events, self.accountant, self.delta, self.adjacency)

    def _round_rules(self, info: RoundFacts, event: Mapping[str, Any] | None) -> list[str]:
        """Cohort, protocol, threshold, unit, adjacency and mechanism rules for one round.

        A rule whose input was not recorded is *refused*, never skipped: a round whose cohort
        is unknown cannot satisfy ``min_cohort`` > 1 (a misspelt key used to skip the rule).
        """
        reasons: list[str] = []
        if info.privacy_unit is not None and info.privacy_unit != self.privacy_unit:
            reasons.append(
                f"privacy unit {info.privacy_unit!r} is not the policy's {self.privacy_unit!r}"
            )
        if info.adjacency is not None and info.adjacency != self.adjacency:
            reasons.append(f"adjacency {info.adjacency!r} is not the policy's {self.adjacency!r}")
        if info.participants is None:
            if self.min_cohort > 1:
                reasons.append(
                    f"participants not recorded: minimum cohort {self.min_cohort} cannot be checked"
                )
        elif info.participants < self.min_cohort:
            reasons.append(f"{info.participants} participants < minimum cohort {self.min_cohort}")
        agg = info.aggregation or {}
        protocol = agg.get("protocol")
        allowed = self.allowed_aggregation_protocols
        if allowed is not None and protocol not in allowed:
            reasons.append(f"aggregation protocol {protocol!r} is not allowed")
        if self.min_secagg_threshold is not None:
            if protocol in SECURE_AGGREGATION:
                t = agg.get("threshold")
                if not isinstance(t, int) or t < self.min_secagg_threshold:
                    reasons.append(
                        f"secure-aggregation threshold {t!r} < required {self.min_secagg_threshold}"
                    )
            elif protocol != "he-ckks":
                reasons.append(
                    f"policy requires secure aggregation (threshold ≥"
                    f" {self.min_secagg_threshold}) but protocol is {protocol!r}"
                )
        if event is not None and self.allowed_mechanisms is not None:
            for mech in sorted(mechanisms_of(event) - self.allowed_mechanisms):
                reasons.append(f"mechanism {mech!r} is not allowed")
        return reasons

    @staticmethod
    def _run_context(entries: list[Entry]) -> dict[str, RunStarted]:
        """Per run: its ``run_started`` record (unit, adjacency, aggregation defaults)."""
        ctx: dict[str, RunStarted] = {}
        for e in entries:
            if e.kind == RUN_STARTED and e.run_id not in ctx:
                ctx[e.run_id] = parse_as(e, RunStarted)
        return ctx

    def check(self, ledger: LedgerSource) -> CheckResult:
        """Evaluate every recorded round and the recomputed cumulative ε."""
        entries = _entries(ledger)
        result = CheckResult(ok=True, policy=self.name)
        try:
            runs = self._run_context(entries)
            charged = charged_rounds(entries)
        except ConfigurationError as exc:
            result.ok = False
            result.violations.append(str(exc))
            return result
        result.rounds_charged = len(charged)
        result.rounds_in_flight = sum(c.status == "in_flight" for c in charged)
        if result.rounds_in_flight:
            result.warnings.append(
                f"{result.rounds_in_flight} round(s) were projected but never completed;"
                " they are charged in full"
            )
        by_seq = {e.seq: e for e in entries}
        broken: dict[tuple[str, str], list[int | None]] = {}
        unknown_cohort: list[int | None] = []
        for c in charged:
            info = RoundFacts.of_entry(by_seq[c.seq], runs.get(c.run_id))
            if c.status == "in_flight" and info.participants is None:
                # A projection that never completed has no recorded cohort (its aggregate,
                # if any, left no record): said as a warning, the round is charged in full.
                info = replace(info, participants=self.min_cohort)
                if self.min_cohort > 1:
                    unknown_cohort.append(c.round_id)
            for r in self._round_rules(info, c.event):
                broken.setdefault((c.run_id, r), []).append(c.round_id)
        for (run_id, reason), rounds in broken.items():
            shown = ", ".join(str(r) for r in rounds[:5]) + (" …" if len(rounds) > 5 else "")
            result.violations.append(f"run {run_id}: {reason} ({len(rounds)} round(s): {shown})")
        if unknown_cohort:
            result.warnings.append(
                f"minimum cohort {self.min_cohort} cannot be checked for {len(unknown_cohort)}"
                " in-flight round(s) whose projection stated no expected_cohort"
            )
        for run_id in sorted({c.run_id for c in charged} - set(runs)):
            result.warnings.append(f"run {run_id}: no run_started entry")
        groups: dict[str, list[ChargedRound]] = {}
        for c in charged:
            groups.setdefault("ledger" if self.scope == "ledger" else c.run_id, []).append(c)
        for key, members in groups.items():
            eps, why = self._epsilon_of([c.event for c in members])
            result.epsilon[key] = eps if math.isfinite(eps) else None
            if why:
                result.violations.append(why)
            elif eps > self.max_epsilon:
                result.violations.append(
                    f"{key}: ε = {eps:.4g} at δ = {self.delta:g} ({self.accountant}) exceeds"
                    f" the budget {self.max_epsilon:g}"
                )
        result.ok = not result.violations
        return result

    def check_round(
        self,
        ledger: LedgerSource,
        projected_event: Any,
        round_info: Mapping[str, Any],
    ) -> Decision:
        """May the next round run? Composes the charged history (policy scope) with
        ``projected_event`` and applies every per-round rule to ``round_info``.

        ``round_info`` keys (see :data:`ROUND_INFO_KEYS`; an unknown key is refused, so a
        typo cannot skip a rule): ``run_id``, ``round_id``, ``privacy_unit``, ``adjacency``,
        ``participants`` (or ``cohort_size`` / ``expected_cohort``: the clients that will be
        in the sum; required when the policy's ``min_cohort`` > 1), ``aggregation`` =
        {``protocol``, ``threshold``, ``degree``, ...}. Values not given are taken from the
        run's ``run_started`` record.
        """
        event = _event_dict(projected_event)
        entries = _entries(ledger)
        run_id = round_info.get("run_id")
        scope_run = run_id if self.scope == "run" and isinstance(run_id, str) else None
        reasons: list[str] = []
        try:
            history = [c.event for c in charged_rounds(entries, run_id=scope_run)]
        except ConfigurationError as exc:
            history = []
            reasons.append(f"ledger cannot be accounted: {exc}")
        eps, why = self._epsilon_of([*history, event])
        if why:
            reasons.append(why)
        elif eps > self.max_epsilon:
            reasons.append(
                f"projected ε = {eps:.4g} at δ = {self.delta:g} ({self.accountant}) would exceed"
                f" the budget {self.max_epsilon:g}"
            )
        try:
            runs = self._run_context(entries)
        except ConfigurationError as exc:
            runs = {}
            reasons.append(f"ledger cannot be read: {exc}")
        run = runs.get(run_id) if isinstance(run_id, str) else None
        reasons += self._round_rules(RoundFacts.of_round_info(round_info, run), event)
        return Decision(allowed=not reasons, reasons=reasons, projected_epsilon=eps)


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, Mapping):
        return dict(event)
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        if isinstance(d, dict):
            return d
    raise ConfigurationError("must be a DpEvent or its to_dict()", parameter="projected_event")


ROUND_INFO_KEYS = frozenset(
    {
        "run_id",
        "round_id",
        "privacy_unit",
        "adjacency",
        "aggregation",
        "participants",
        "cohort_size",
        "expected_cohort",
    }
)


@dataclass(frozen=True)
class RoundFacts:
    """What the per-round rules read, from typed records (never from guessed payload keys)."""

    privacy_unit: str | None
    adjacency: str | None
    aggregation: Mapping[str, Any] | None
    participants: int | None

    @classmethod
    def of_entry(cls, entry: Entry, run: RunStarted | None) -> RoundFacts:
        """A charged round: completed (its recorded participants) or in flight (its
        projected cohort, if it stated one)."""
        rec = parse(entry)
        if isinstance(rec, RoundCompleted):
            participants = rec.participants
        elif isinstance(rec, RoundProjected):
            participants = rec.expected_cohort
        else:  # pragma: no cover - charged_rounds yields only these two kinds
            raise ConfigurationError(f"entry {entry.seq} is not a round", parameter="kind")
        return cls(
            privacy_unit=rec.privacy_unit or (run.privacy_unit if run else None),
            adjacency=rec.adjacency or (run.adjacency if run else None),
            aggregation=rec.aggregation or (run.aggregation if run else None),
            participants=participants,
        )

    @classmethod
    def of_round_info(cls, info: Mapping[str, Any], run: RunStarted | None) -> RoundFacts:
        """The caller's description of the next round (keys checked, see ``check_round``)."""
        if not isinstance(info, Mapping):
            raise PolicyError("must be a mapping", parameter="round_info")
        unknown = sorted(set(info) - ROUND_INFO_KEYS)
        if unknown:
            raise PolicyError(
                f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(ROUND_INFO_KEYS))}",
                parameter=f"round_info.{unknown[0]}",
            )
        participants: int | None = None
        for key in ("participants", "cohort_size", "expected_cohort"):
            v = info.get(key)
            if v is None:
                continue
            if isinstance(v, list):
                v = len(v)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise PolicyError("must be a count >= 0", parameter=f"round_info.{key}")
            participants = v
            break
        agg = info.get("aggregation")
        if agg is not None and not isinstance(agg, Mapping):
            raise PolicyError("must be a mapping", parameter="round_info.aggregation")
        unit, adj = info.get("privacy_unit"), info.get("adjacency")
        return cls(
            privacy_unit=unit if isinstance(unit, str) else (run.privacy_unit if run else None),
            adjacency=adj if isinstance(adj, str) else (run.adjacency if run else None),
            aggregation=agg if agg is not None else (run.aggregation if run else None),
            participants=participants,
        )


def check(ledger: LedgerSource, policy: BudgetPolicy) -> CheckResult:
    """Module-level alias of :meth:`BudgetPolicy.check`."""
    return policy.check(ledger)


def check_round(
    ledger: LedgerSource, projected_event: Any, round_info: Mapping[str, Any], policy: BudgetPolicy
) -> Decision:
    """Module-level alias of :meth:`BudgetPolicy.check_round`."""
    return policy.check_round(ledger, projected_event, round_info)


def record_policy(
    ledger: Ledger,
    policy: BudgetPolicy,
    *,
    run_id: str | None = None,
    timestamp: datetime | str | None = None,
) -> Entry:
    """Record which policy governs the run (its content and SHA-256)."""
    record = PolicyRecorded(policy=policy.to_dict(), policy_sha256=policy.sha256)
    return ledger.append_record(record, run_id=run_id, timestamp=timestamp)


def record_refusal(
    ledger: Ledger,
    decision: Decision,
    round_info: Mapping[str, Any],
    *,
    projected_event: Any = None,
    policy: BudgetPolicy | None = None,
    run_id: str | None = None,
    round_id: int | None = None,
    timestamp: datetime | str | None = None,
) -> Entry:
    """Append a ``round_refused`` entry: the reasons, projected ε and what was asked."""
    if decision.allowed:
        raise ConfigurationError(
            "decision allowed the round; nothing to refuse", parameter="decision"
        )
    rid = run_id if run_id is not None else round_info.get("run_id")
    rnd = round_id if round_id is not None else round_info.get("round_id")
    record = RoundRefused(
        reasons=list(decision.reasons),
        projected_epsilon=decision.projected_epsilon,
        round_info={k: v for k, v in round_info.items() if k not in {"run_id", "round_id"}},
        dp_event=None if projected_event is None else _event_dict(projected_event),
        policy=None if policy is None else policy.name,
        policy_sha256=None if policy is None else policy.sha256,
    )
    return ledger.append_record(
        record,
        run_id=rid if isinstance(rid, str) else None,
        round_id=rnd if isinstance(rnd, int) else None,
        timestamp=timestamp,
    )
