"""Budget policies: validation with typed errors, whole-ledger checks, per-round decisions."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securefl.audit.ledger import Ledger
from securefl.audit.policy import BudgetPolicy, PolicyError, record_policy, record_refusal
from securefl.audit.spend import charged_rounds, compose, epsilon

from .conftest import TS, round_event

REPO = Path(__file__).resolve().parents[2]
MakeLedger = Callable[..., Ledger]


def policy(**over: Any) -> BudgetPolicy:
    d: dict[str, Any] = {
        "name": "test",
        "privacy_unit": "client",
        "adjacency": "add-remove",
        "accountant": "pld",
        "budget": {"max_epsilon": 8.0, "delta": 1e-5},
        "cohort": {"min_cohort": 5, "min_secagg_threshold": 4},
        "allowed": {"mechanisms": ["gaussian"], "aggregation_protocols": ["secagg", "secagg+"]},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return BudgetPolicy.from_dict(d)


def test_example_policies_load() -> None:
    files = sorted((REPO / "audits" / "policies").glob("*.toml"))
    budget_files = [f for f in files if not f.name.startswith("node_")]  # node policies:
    assert len(budget_files) >= 3  # tests/engine/test_node_policy.py
    for f in budget_files:
        p = BudgetPolicy.load(f)
        assert BudgetPolicy.from_dict(p.to_dict()) == p
        assert len(p.sha256) == 64


@pytest.mark.parametrize(
    ("over", "parameter"),
    [
        ({"privacy_unit": "person"}, "privacy_unit"),
        ({"adjacency": "swap"}, "adjacency"),
        ({"accountant": "moments"}, "accountant"),
        ({"budget": {"max_epsilon": -1}}, "budget.max_epsilon"),
        ({"budget": {"max_epsilon": math.nan}}, "budget.max_epsilon"),
        ({"budget": {"delta": 1.0}}, "budget.delta"),
        ({"budget": {"delta": "small"}}, "budget.delta"),
        ({"cohort": {"min_cohort": 0}}, "cohort.min_cohort"),
        ({"cohort": {"min_secagg_threshold": 1}}, "cohort.min_secagg_threshold"),
        (
            {"allowed": {"aggregation_protocols": ["carrier-pigeon"]}},
            "allowed.aggregation_protocols",
        ),
        ({"allowed": {"mechanisms": "gaussian"}}, "allowed.mechanisms"),
        ({"budget": {"max_epsilon": 1, "delta": 1e-5, "typo": 1}}, "budget.typo"),
        ({"extra_field": 1}, "extra_field"),
        ({"scope": "galaxy"}, "scope"),
    ],
)
def test_invalid_policy_names_the_field(over: dict[str, Any], parameter: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(**over)
    assert info.value.parameter == parameter


def test_missing_required_fields() -> None:
    with pytest.raises(PolicyError) as info:
        BudgetPolicy.from_dict({"privacy_unit": "client"})
    assert info.value.parameter == "budget"


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        BudgetPolicy.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(PolicyError):
        BudgetPolicy.load(bad)


def test_check_recomputes_epsilon(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(20, epsilon=0.01)  # the run's own claim is ignored
    res = policy().check(ledger)
    ours = epsilon("pld", compose([round_event()] * 20), 1e-5)
    assert ours is not None
    assert res.ok, res.violations
    assert res.epsilon["ledger"] == pytest.approx(ours)
    assert res.rounds_charged == 20
    tight = policy(budget={"max_epsilon": ours * 0.9}).check(ledger)
    assert not tight.ok
    assert any("exceeds the budget" in v for v in tight.violations)


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"participants": 3}, "3 participants < minimum cohort 5"),
        ({"aggregation": {"protocol": "secagg+", "threshold": 2}}, "threshold 2 < required 4"),
        ({"aggregation": {"protocol": "plaintext"}}, "protocol 'plaintext' is not allowed"),
        ({"dp_event": {"type": "zcdp", "rho": 0.01}}, "mechanism 'zcdp' is not allowed"),
        ({"privacy_unit": "example"}, "privacy unit 'example'"),
        ({"adjacency": "replace-one"}, "adjacency 'replace-one'"),
    ],
)
def test_round_rules_violated(make_ledger: MakeLedger, over: dict[str, Any], fragment: str) -> None:
    res = policy().check(make_ledger(3, **over))
    assert not res.ok
    assert any(fragment in v for v in res.violations), res.violations


def test_unaccountable_events_violate(make_ledger: MakeLedger) -> None:
    res = policy(allowed={"mechanisms": ["non_private"]}).check(
        make_ledger(2, dp_event={"type": "non_private"})
    )
    assert not res.ok and res.epsilon["ledger"] is None


def test_in_flight_round_is_charged(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(3)
    ledger.append("round_projected", {"dp_event": round_event()}, round_id=3, timestamp=TS)
    charged = charged_rounds(ledger.entries())
    assert [c.status for c in charged] == ["completed"] * 3 + ["in_flight"]
    res = policy().check(ledger)
    assert res.rounds_charged == 4 and res.rounds_in_flight == 1
    # A projection that was completed later is charged once.
    ledger.append(
        "round_completed", {"dp_event": round_event(), "participants": 9}, round_id=3, timestamp=TS
    )
    assert [c.status for c in charged_rounds(ledger.entries())] == ["completed"] * 4
    # An abort that released nothing cancels its projection.
    ledger.append("round_projected", {"dp_event": round_event()}, round_id=4, timestamp=TS)
    ledger.append("round_aborted", {"released": False}, round_id=4, timestamp=TS)
    assert len(charged_rounds(ledger.entries())) == 4


def test_scope_run_vs_ledger(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(10)
    for r in range(10):
        ledger.append(
            "round_completed",
            {"dp_event": round_event(), "participants": 10},
            run_id="run-2",
            round_id=r,
            timestamp=TS,
        )
    one = epsilon("pld", compose([round_event()] * 10), 1e-5)
    both = epsilon("pld", compose([round_event()] * 20), 1e-5)
    assert one is not None and both is not None
    budget = (one + both) / 2
    agg = {"aggregation": {"protocol": "secagg+", "threshold": 6}}
    by_run = policy(scope="run", budget={"max_epsilon": budget}).check(ledger)
    by_ledger = policy(scope="ledger", budget={"max_epsilon": budget}).check(ledger)
    assert by_run.epsilon["run-1"] == pytest.approx(one)
    assert not by_ledger.ok and by_ledger.epsilon["ledger"] == pytest.approx(both)
    assert not any("exceeds" in v for v in by_run.violations), by_run.violations
    _ = agg


def test_check_round_projects_and_refusal_is_recorded(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(10)
    p = policy()
    record_policy(ledger, p, timestamp=TS)
    info = {"run_id": "run-1", "round_id": 10, "participants": 10}
    ok = p.check_round(ledger, round_event(), info)
    expected = epsilon("pld", compose([round_event()] * 11), 1e-5)
    assert ok.allowed and ok.reasons == []
    assert ok.projected_epsilon == pytest.approx(expected)
    tight = policy(budget={"max_epsilon": (expected or 0) * 0.99})
    no = tight.check_round(ledger, round_event(), {**info, "participants": 2})
    assert not no.allowed
    assert any("would exceed the budget" in r for r in no.reasons)
    assert any("minimum cohort" in r for r in no.reasons)
    entry = record_refusal(
        ledger, no, info, projected_event=round_event(), policy=tight, timestamp=TS
    )
    assert entry.kind == "round_refused" and entry.round_id == 10
    assert entry.payload["policy_sha256"] == tight.sha256
    assert ledger.verify().ok
    # A refusal charges nothing.
    assert len(charged_rounds(ledger.entries())) == 10
    with pytest.raises(Exception, match="nothing to refuse"):
        record_refusal(ledger, ok, info)


def test_check_round_accepts_event_objects_and_checks_mechanism(make_ledger: MakeLedger) -> None:
    from securefl.dp.events import DiscreteGaussianEvent, PoissonSampledEvent

    ledger = make_ledger(1)
    ev = PoissonSampledEvent(0.1, DiscreteGaussianEvent(100.0, 10.0, 4))
    d = policy().check_round(ledger, ev, {"run_id": "run-1", "participants": 10})
    assert not d.allowed and any("discrete_gaussian" in r for r in d.reasons)


def test_replace_one_adjacency_is_passed_to_the_accountant(make_ledger: MakeLedger) -> None:
    from securefl.dp.events import GaussianEvent, SampledWithoutReplacementEvent

    ev = SampledWithoutReplacementEvent(100, 10, GaussianEvent(1.0)).to_dict()
    ledger = make_ledger(5, dp_event=ev, adjacency="replace-one")
    add_remove = policy().check(ledger)
    assert not add_remove.ok  # fixed-size sampling is not accountable under add-remove
    replace = policy(adjacency="replace-one", accountant="rdp").check(ledger)
    assert replace.epsilon["ledger"] is not None and replace.ok, replace.violations
