"""Node-side enforcement: the node's own policy, accounting, signed ledger and audit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from securefl.audit.ledger import Ledger, read_entries, verify_ledger
from securefl.audit.records import (
    NodeContribution,
    NodePolicyRecorded,
    NodeRoundRefused,
    parse,
)
from securefl.audit.report import build_report, write_html, write_json, write_markdown
from securefl.cli import app
from securefl.dp.events import (
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NonPrivateEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
)
from securefl.engine.node_policy import (
    NodeGuard,
    NodePolicy,
    NodePolicyError,
    NodePolicyRefusal,
    check_node_ledger,
    open_node_ledger,
    run_epsilon,
)
from securefl.engine.node_terms import MAX_TERMS_BYTES, MalformedTermsError, RoundTerms, TermsError
from securefl.errors import (
    ConfigurationError,
    MalformedMessageError,
    RemoteProtocolError,
    UnsafeRequestError,
)

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "audits" / "policies"
runner = CliRunner()
#: Gaussian events without sampling: the RDP accountant's closed form keeps the tests fast.
EVENT = GaussianEvent(5.0).to_dict()


def terms(**over: Any) -> RoundTerms:
    base: dict[str, Any] = {
        "run_id": "run-a",
        "round_index": 0,
        "rounds": 10,
        "aggregation": "secagg+",
        "dp": "distributed",
        "dp_event": EVENT,
        "noise_multiplier": 5.0,
        "clip": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "threat_model": "malicious",
        "threshold": 6,
        "cohort_size": 20,
        "privacy_unit": "client",
        "degree": 10,
    }
    base.update(over)
    return RoundTerms(**base)


def eps_of(t: RoundTerms, count: int | None = None, delta: float = 1e-5) -> float:
    eps, why = run_epsilon(t.dp_event, count or t.rounds, "rdp", delta)
    assert why is None
    return eps


@pytest.fixture
def node(tmp_path: Path) -> Callable[..., tuple[NodeGuard, Ledger, Path]]:
    """A guard over a fresh node ledger; its key lives outside the ledger's directory."""
    (tmp_path / "node").mkdir()
    key = tmp_path / "keys" / "node.pem"

    def make(policy: NodePolicy | None = None) -> tuple[NodeGuard, Ledger, Path]:
        ledger = open_node_ledger(tmp_path / "node" / "ledger.sqlite", key)
        return NodeGuard(policy or NodePolicy(), ledger), ledger, key

    return make


# --------------------------------------------------------------------------- the policy file
def test_default_file_is_the_default_policy() -> None:
    pol = NodePolicy.load(POLICIES / "node_default.toml")
    assert dataclasses.replace(pol, description="") == NodePolicy()
    assert NodePolicy() == NodePolicy.from_dict({})
    assert pol.allowed_aggregations == {"secagg", "secagg+"}  # plain is an opt-in
    assert pol.allowed_dp == {"distributed", "local"}  # central and none are opt-ins
    assert pol.threat_model.value == "malicious"


def test_strict_file_loads_and_round_trips() -> None:
    pol = NodePolicy.load(POLICIES / "node_strict.toml")
    assert pol.allowed_aggregations == {"secagg+"} and pol.accountant == "rdp"
    assert NodePolicy.from_dict(pol.to_dict()) == pol
    assert pol.sha256() == NodePolicy.from_dict(pol.to_dict()).sha256() != NodePolicy().sha256()


@pytest.mark.parametrize(
    ("data", "parameter"),
    [
        ({"max_epsilon": 1.0}, "max_epsilon"),  # a budget-policy key: unknown here
        ({"kind": "budget"}, "kind"),
        ({"max_epsilon_per_run": -1}, "max_epsilon_per_run"),
        ({"max_epsilon_per_run": math.nan}, "max_epsilon_per_run"),
        ({"max_epsilon_total": math.inf}, "max_epsilon_total"),
        ({"delta_max": 0.9}, "delta_max"),
        ({"delta_max": True}, "delta_max"),
        ({"min_threshold": 1}, "min_threshold"),
        ({"min_threshold": 2.5}, "min_threshold"),
        ({"min_threshold_fraction": 1.5}, "min_threshold_fraction"),
        ({"threat_model": "honest"}, "threat_model"),
        ({"allowed_aggregations": ["secagg", "tee"]}, "allowed_aggregations"),
        ({"allowed_aggregations": "secagg"}, "allowed_aggregations"),
        ({"allowed_dp": ["laplace"]}, "allowed_dp"),
        ({"min_noise_multiplier": -0.1}, "min_noise_multiplier"),
        ({"max_clip": 0}, "max_clip"),
        ({"accountant": "moments"}, "accountant"),
        ({"name": 3}, "name"),
    ],
)
def test_bad_policies_are_refused(data: dict[str, Any], parameter: str) -> None:
    with pytest.raises(NodePolicyError) as info:
        NodePolicy.from_dict(data)
    assert info.value.parameter == parameter


def test_policy_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('kind = "node"\nmin_threshold = [\n')
    with pytest.raises(NodePolicyError, match="not valid TOML"):
        NodePolicy.load(bad)
    bad.write_text('kind = "node"\nmax_epsilon_per_run = nan\n')
    with pytest.raises(NodePolicyError) as info:
        NodePolicy.load(bad)
    assert info.value.parameter == "max_epsilon_per_run"
    with pytest.raises(NodePolicyError):
        NodePolicy.load(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- terms and wire
def test_terms_round_trip_and_hash() -> None:
    t = terms()
    assert RoundTerms.from_wire(t.to_wire()) == t
    assert RoundTerms.from_dict(t.to_dict()) == t
    assert hash(t) == hash(RoundTerms.from_wire(t.to_wire()))
    assert len(t.sha256) == 64 and t.neighbours == 10
    assert terms(degree=None).neighbours == 19  # complete graph: n - 1


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"run_id": ""}, "run_id"),
        ({"run_id": "a\nb"}, "run_id"),
        ({"round_index": 10}, "round_index"),  # rounds = 10: indices 0..9
        ({"rounds": 0}, "rounds"),
        ({"aggregation": "plaintext"}, "aggregation"),
        ({"dp": "gaussian"}, "dp"),
        ({"dp_event": {"type": "laplace"}}, "dp_event"),
        ({"dp_event": {"type": "gaussian", "noise_multiplier": -1.0}}, "dp_event"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": True}, "noise_multiplier"),
        ({"clip": -1.0}, "clip"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "moments"}, "accountant"),
        ({"threat_model": "semi-malicious"}, "threat_model"),  # aliases are not canonical
        ({"threshold": None}, "threshold"),
        ({"threshold": 11}, "threshold"),  # more than the 10 neighbours
        ({"cohort_size": 0}, "cohort_size"),
        ({"privacy_unit": "record"}, "privacy_unit"),
        ({"aggregation": "secagg"}, "degree"),  # secagg is the complete graph
        ({"aggregation": "ckks"}, "threshold"),
    ],
)
def test_bad_terms_name_the_field(over: dict[str, Any], field: str) -> None:
    good = json.loads(terms().to_wire())
    with pytest.raises(TermsError) as local:  # a local error when built in-process
        RoundTerms(**{**{k: v for k, v in good.items() if k != "v"}, **over})
    assert local.value.parameter == field
    wire = json.dumps({**good, **over}, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(MalformedTermsError) as remote:
        RoundTerms.from_wire(wire)
    assert remote.value.field == field
    assert isinstance(remote.value, MalformedMessageError | RemoteProtocolError)


def test_wire_refuses_non_canonical_oversized_and_unknown() -> None:
    good = terms().to_wire()
    d = json.loads(good)
    with pytest.raises(MalformedTermsError, match="canonical"):
        RoundTerms.from_wire(json.dumps(d, indent=1, sort_keys=True).encode())
    with pytest.raises(MalformedTermsError) as info:
        RoundTerms.from_wire(json.dumps({**d, "epsilon": 0.1}).encode())
    assert info.value.field == "epsilon"
    with pytest.raises(MalformedTermsError) as info:
        RoundTerms.from_wire(json.dumps({**d, "v": 2}).encode())
    assert info.value.field == "v"
    with pytest.raises(MalformedTermsError) as info:
        RoundTerms.from_wire(b" " * (MAX_TERMS_BYTES + 1))
    assert info.value.field == "wire"
    nan = good.replace(b'"clip":1.0', b'"clip":NaN')
    with pytest.raises(MalformedTermsError) as info:
        RoundTerms.from_wire(nan)
    assert info.value.field == "wire"
    deep = b'{"v":1,"dp_event":' + b"[" * 200 + b"]" * 200 + b"}"
    with pytest.raises(MalformedTermsError):
        RoundTerms.from_wire(deep)


_events = st.sampled_from(
    [
        EVENT,
        PoissonSampledEvent(0.05, GaussianEvent(1.1)).to_dict(),
        SampledWithoutReplacementEvent(100, 10, GaussianEvent(0.9)).to_dict(),
        DistributedDiscreteGaussianEvent(100.0, 8, 300.0, 5000.0, 1000).to_dict(),
        NonPrivateEvent().to_dict(),
    ]
)
_finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _terms(draw: st.DrawFn) -> RoundTerms:
    rounds = draw(st.integers(1, 10_000))
    n = draw(st.integers(3, 5000))  # SecAgg needs t >= 2 of n - 1 >= 2 neighbours
    agg = draw(st.sampled_from(["plain", "secagg", "secagg+", "ckks"]))
    degree = draw(st.none() | st.integers(2, 5000)) if agg == "secagg+" else None
    even = None if degree is None else degree + degree % 2
    k = n - 1 if even is None or even >= n - 1 else even
    secure = agg in ("secagg", "secagg+")
    return RoundTerms(
        run_id=draw(st.text(min_size=1, max_size=40).filter(str.isprintable)),
        round_index=draw(st.integers(0, rounds - 1)),
        rounds=rounds,
        aggregation=agg,
        dp=draw(st.sampled_from(["none", "central", "distributed", "local"])),
        dp_event=draw(_events),
        noise_multiplier=draw(st.none() | _finite),
        clip=draw(st.none() | _finite),
        delta=draw(st.floats(min_value=1e-12, max_value=0.5)),
        accountant=draw(st.sampled_from(["rdp", "prv", "pld"])),
        threat_model=draw(st.sampled_from(["malicious", "semi-honest"])),
        threshold=draw(st.integers(2, max(2, k))) if secure and k >= 2 else None,
        cohort_size=n,
        privacy_unit=draw(st.sampled_from(["example", "client"])),
        degree=degree,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_terms())
def test_wire_round_trip_property(t: RoundTerms) -> None:
    wire = t.to_wire()
    assert RoundTerms.from_wire(wire) == t
    assert RoundTerms.from_wire(wire).to_wire() == wire


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.builds(lambda b: terms().to_wire()[: len(b)], st.binary()))
def test_random_bytes_raise_only_the_typed_error(data: bytes) -> None:
    with contextlib.suppress(MalformedTermsError):  # and nothing else
        RoundTerms.from_wire(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_flipped_bytes_raise_only_the_typed_error(pos: int, value: int) -> None:
    wire = bytearray(terms().to_wire())
    wire[pos % len(wire)] = value
    try:
        t = RoundTerms.from_wire(bytes(wire))
    except MalformedTermsError:
        return
    assert t.to_wire() == bytes(wire)  # anything accepted is canonical


# --------------------------------------------------------------------------- the rules
def refused(guard: NodeGuard, t: RoundTerms) -> list[str]:
    with pytest.raises(NodePolicyRefusal) as info:
        guard.admit(t)
    assert isinstance(info.value, UnsafeRequestError)
    return info.value.reasons


def rules(reasons: list[str]) -> set[str]:
    return {r.split(":", 1)[0] for r in reasons}


@pytest.mark.parametrize(
    ("policy", "over", "rule"),
    [
        ({}, {"aggregation": "plain", "threshold": None, "degree": None}, "aggregation"),
        ({}, {"aggregation": "ckks", "threshold": None, "degree": None}, "aggregation"),
        ({}, {"dp": "central"}, "dp"),
        ({}, {"threat_model": "semi-honest"}, "threat_model"),
        ({"min_threshold": 8}, {}, "threshold"),
        ({"min_threshold_fraction": 0.7}, {}, "threshold_fraction"),
        ({"delta_max": 1e-6}, {}, "delta"),
        ({"min_noise_multiplier": 6.0}, {}, "noise_multiplier"),
        ({}, {"noise_multiplier": None}, "noise_multiplier"),
        ({"max_clip": 0.5}, {}, "clip"),
        ({"max_epsilon_per_run": 1.0}, {}, "epsilon_per_run"),
        ({"max_epsilon_total": 1.0}, {}, "epsilon_total"),
    ],
)
def test_each_rule_refuses_and_is_recorded(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
    policy: dict[str, Any],
    over: dict[str, Any],
    rule: str,
) -> None:
    guard, ledger, _ = node(NodePolicy.from_dict(policy))
    reasons = refused(guard, terms(**over))
    assert rule in rules(reasons)
    entries = list(ledger.entries())
    assert [e.kind for e in entries] == ["node_policy", "node_round_refused"]
    rec = parse(entries[-1])
    assert isinstance(rec, NodeRoundRefused) and rec.reasons == reasons
    assert rec.terms == terms(**over).to_dict()
    assert isinstance(parse(entries[0]), NodePolicyRecorded)
    assert ledger.verify().ok


def test_opt_ins_admit_what_the_defaults_refuse(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    loose = NodePolicy.from_dict(
        {
            "allowed_aggregations": ["plain", "ckks", "secagg"],
            "allowed_dp": ["central", "none"],
            "threat_model": "semi-honest",
        }
    )
    guard, ledger, _ = node(loose)
    guard.admit(terms(run_id="p", aggregation="plain", threshold=None, degree=None, dp="central"))
    guard.admit(
        terms(
            run_id="s",
            aggregation="secagg",
            degree=None,
            threshold=10,
            dp="central",
            threat_model="semi-honest",
        )
    )
    assert "aggregation" in rules(refused(guard, terms(run_id="x")))  # secagg+ not listed
    # no DP, explicitly allowed: admitted, recorded without a finite ε ...
    ev = NonPrivateEvent().to_dict()
    none = terms(run_id="n", dp="none", dp_event=ev, noise_multiplier=None, clip=None)
    decision = guard.admit(
        dataclasses.replace(none, aggregation="ckks", threshold=None, degree=None)
    )
    assert decision.epsilon_run is None and decision.epsilon_total is None
    # ... after which no finite total holds, so a DP run is refused on the total rule
    reasons = refused(
        guard, terms(run_id="d", aggregation="secagg", degree=None, threshold=10, dp="central")
    )
    assert rules(reasons) == {"epsilon_total"}
    kinds = [e.kind for e in ledger.entries()]
    assert kinds.count("node_contribution") == 3 and kinds.count("node_round_refused") == 2


def test_node_recomputes_epsilon_from_the_event(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    """The announced noise looks fine, the event says otherwise: the event decides."""
    guard, ledger, _ = node(NodePolicy.from_dict({"min_noise_multiplier": 0.0}))
    tiny = terms(noise_multiplier=5.0, dp_event=GaussianEvent(0.05).to_dict())
    reasons = refused(guard, tiny)
    assert rules(reasons) == {"epsilon_per_run", "epsilon_total"}
    assert eps_of(tiny) > 10.0
    # with a minimum noise, the event's own noise is checked against it too
    guard2 = NodeGuard(NodePolicy(), ledger)
    assert "noise_multiplier" in rules(refused(guard2, tiny))


def test_admission_records_the_spend_first(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    guard, ledger, _ = node()
    t = terms()
    decision = guard.admit(t)
    assert decision.admitted and decision.charged_rounds == 10
    assert decision.epsilon_run == pytest.approx(eps_of(t))
    (entry,) = list(ledger.entries(kind="node_contribution"))
    rec = parse(entry)
    assert isinstance(rec, NodeContribution)
    assert entry.run_id == "run-a" and entry.round_id == 0
    assert rec.terms_sha256 == t.sha256 and rec.planned_rounds == 10
    assert rec.policy_sha256 == NodePolicy().sha256()
    guard.admit(terms(round_index=1))
    assert len(list(ledger.entries(kind="node_policy"))) == 1  # recorded once per policy


def test_terms_changing_mid_run_are_refused(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    guard, ledger, _ = node()
    guard.admit(terms(round_index=0))
    guard.admit(terms(round_index=1, cohort_size=18, threshold=6))  # per-round: may vary
    for over in (
        {"rounds": 5},
        {"dp_event": GaussianEvent(6.0).to_dict()},
        {"aggregation": "secagg", "degree": None},
        {"dp": "local"},
        {"clip": 0.5},
    ):
        reasons = refused(guard, terms(round_index=2, **over))
        assert "terms_changed" in rules(reasons), over
        assert "differ from round 0" in reasons[0]
    guard.admit(terms(round_index=2))  # the pinned terms are still fine
    kinds = [e.kind for e in ledger.entries()]
    assert kinds.count("node_round_refused") == 5 and kinds.count("node_contribution") == 3


def test_round_asked_more_often_than_planned_is_charged(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    guard, _, _ = node()
    t = terms(rounds=2)
    d = [guard.admit(dataclasses.replace(t, round_index=i % 2)) for i in range(3)]
    assert [x.charged_rounds for x in d] == [2, 2, 3]
    assert d[2].epsilon_run == pytest.approx(eps_of(t, 3))


def test_total_budget_across_runs(node: Callable[..., tuple[NodeGuard, Ledger, Path]]) -> None:
    one = eps_of(terms())
    policy = NodePolicy.from_dict({"max_epsilon_total": 2.5 * one})
    guard, ledger, _ = node(policy)
    guard.admit(terms(run_id="a"))
    second = guard.admit(terms(run_id="b"))
    assert second.epsilon_total == pytest.approx(2 * one)
    reasons = refused(guard, terms(run_id="c"))
    assert rules(reasons) == {"epsilon_total"}
    assert "over 3 run(s)" in reasons[0]
    # a new guard (a restarted node) reads the same history from its ledger
    assert rules(refused(NodeGuard(policy, ledger), terms(run_id="c"))) == {"epsilon_total"}
    result = check_node_ledger(ledger, policy)
    assert result.ok, result.violations
    assert result.epsilon_total == pytest.approx(2 * one)
    assert [r["run_id"] for r in result.runs] == ["a", "b"] and result.refusals == 2


def test_malformed_terms_refusal_is_recorded(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    guard, ledger, _ = node()
    try:
        RoundTerms.from_wire(b"{}")
    except MalformedTermsError as exc:
        refusal = guard.refuse_malformed(exc, run_id="run-z")
    assert refusal.reasons[0].startswith("terms:") and refusal.run_id is None
    (e,) = list(ledger.entries(kind="node_round_refused"))
    assert e.run_id == "run-z" and parse(e).terms is None  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- ledger and audit
def test_key_custody(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    key = tmp_path / "keys" / "node.pem"
    ledger = open_node_ledger(tmp_path / "node" / "l.sqlite", key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.with_name("node.pem.pub").is_file()
    ledger.close()
    again = open_node_ledger(tmp_path / "node" / "l.sqlite", key)  # same key, reused
    assert again.verify(key.with_name("node.pem.pub")).ok
    with pytest.raises(ConfigurationError, match="inside the run directory"):
        open_node_ledger(tmp_path / "node" / "l2.sqlite", tmp_path / "node" / "k" / "key.pem")


def _populated(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> tuple[Path, Path]:
    guard, ledger, key = node()
    guard.admit(terms(run_id="a"))
    guard.admit(terms(run_id="a", round_index=1))
    guard.admit(
        terms(
            run_id="b",
            dp_event=PoissonSampledEvent(0.1, GaussianEvent(1.0)).to_dict(),
            noise_multiplier=1.0,
        )
    )
    with pytest.raises(NodePolicyRefusal):
        guard.admit(terms(run_id="c", aggregation="plain", threshold=None, degree=None))
    ledger.close()
    return ledger.path, key.with_name("node.pem.pub")


def test_node_ledger_verifies_checks_and_reports(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]], tmp_path: Path
) -> None:
    path, pub = _populated(node)
    assert verify_ledger(path, pub).ok
    res = runner.invoke(app, ["audit", "verify", str(path), "--public-key", str(pub)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("OK: 5 entries")
    for cmd in ("node-check", "check"):
        default = str(POLICIES / "node_default.toml")
        res = runner.invoke(app, ["audit", cmd, str(path), "-k", str(pub), "-p", default])
        assert res.exit_code == 0, res.output
        assert "node policy node-default: OK (3 contribution(s), 1 refusal(s))" in res.output
        assert "run a: ε = " in res.output and "total ε = " in res.output
    # the strict policy would not have admitted these rounds
    strict = str(POLICIES / "node_strict.toml")
    res = runner.invoke(app, ["audit", "check", str(path), "-k", str(pub), "-p", strict, "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    assert not out["node_policy"]["ok"]
    assert any("epsilon_per_run" in v for v in out["node_policy"]["violations"])
    # the report does not crash, and says what a node ledger is
    rep = build_report(path, public_key=pub)
    assert rep["guarantee"]["statement"].startswith("node ledger: this data holder contributed 3")
    assert "refused 1" in rep["guarantee"]["statement"]
    for write, name in ((write_json, "r.json"), (write_markdown, "r.md"), (write_html, "r.html")):
        assert "node ledger" in write(rep, tmp_path / name).read_text()


def test_tampering_with_a_node_ledger_is_detected(
    node: Callable[..., tuple[NodeGuard, Ledger, Path]],
) -> None:
    path, pub = _populated(node)
    entries = read_entries(path)
    seq = next(e.seq for e in entries if e.kind == "node_contribution")
    payload = entries[seq - 1].payload
    payload["epsilon_run"] = 0.001
    payload["dp_event"] = GaussianEvent(500.0).to_dict()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    conn.execute("UPDATE entries SET payload = ? WHERE seq = ?", (text, seq))
    conn.close()
    result = verify_ledger(path, pub)
    assert not result.ok and any("edited" in e for e in result.errors)
    res = runner.invoke(
        app,
        [
            "audit",
            "node-check",
            str(path),
            "-k",
            str(pub),
            "-p",
            str(POLICIES / "node_default.toml"),
        ],
    )
    assert res.exit_code == 1 and "INVALID ledger" in res.output
