"""The whole job over the engine's transport, in process: orchestrator at the server, training,
encoding and SecAgg(+) at each node (securefl.engine.job). Flower itself: test_engine_flower_job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.audit.ledger import Ledger
from securefl.encoding import error_bound, plan_ring
from securefl.engine.builtin import BuiltinTraining, server_model
from securefl.engine.identity import NodeIdentity, generate_identity
from securefl.engine.job import JobNode, JobTerms, run_job
from securefl.engine.local import InProcessTransport
from securefl.errors import ConfigurationError, MalformedMessageError, UnsafeRequestError
from securefl.fl import checkpoint as ckpt_mod
from securefl.fl.config import RunConfig
from securefl.fl.run import run_simulation
from securefl.secagg import ClientPolicy
from securefl.vocabulary import ThreatModel

N = 6
BASE: dict[str, Any] = {
    "model": "tiny",
    "synthetic_examples": 96,
    "n_clients": N,
    "rounds": 2,
    "sampling": "fixed",
    "clients_per_round": 5,
    "dropout_rate": 0.0,
    "local_epochs": 1,
    "max_length": 16,
    "clip": 1.0,
    "aggregation": "secagg+",
}


def _identities(tmp: Path) -> dict[int, NodeIdentity]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {u: generate_identity(tmp / f"node{u}.key", u) for u in range(1, N + 1)}


def _cluster(
    tmp: Path, *, training: Any = None, **transport_kw: Any
) -> tuple[InProcessTransport, dict[int, bytes]]:
    ids = _identities(tmp)
    registry = {u: ident.public for u, ident in ids.items()}
    train = training or BuiltinTraining()
    nodes = {
        100 + u: JobNode(
            ident, train, registry=registry, policy=ClientPolicy(threat_model=ThreatModel.MALICIOUS)
        )
        for u, ident in ids.items()
    }
    return InProcessTransport(nodes, **transport_kw), registry


def _cfg(tmp: Path, name: str, **kw: Any) -> RunConfig:
    return RunConfig(**{**BASE, "out": str(tmp / name), "key_dir": str(tmp / "keys"), **kw})


def test_distributed_dp_job_records_the_same_events_as_the_simulation(tmp_path: Path) -> None:
    transport, registry = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "engine", dp="distributed")
    info, evaluate = server_model(cfg)
    res = run_job(transport, cfg, info, registry=registry, evaluate=evaluate, stage_timeout=5)
    sim = run_simulation(_cfg(tmp_path, "sim", dp="distributed"))
    assert res.rounds_completed == 2 and not transport.errors
    assert res.epsilon == pytest.approx(sim.epsilon, rel=1e-12)
    with (
        Ledger(tmp_path / "engine" / "ledger.sqlite") as a,
        Ledger(tmp_path / "sim" / "ledger.sqlite") as b,
    ):
        ev_a = [e.payload["dp_event"] for e in a.entries() if e.kind == "round_completed"]
        ev_b = [e.payload["dp_event"] for e in b.entries() if e.kind == "round_completed"]
        assert a.verify().ok
    assert ev_a == ev_b and len(ev_a) == 2
    done = [m for m in res.metrics if m["n_participants"]]
    assert len(done) == 2 and all(m["n_participants"] == 5 for m in done)
    assert (tmp_path / "engine" / "report.html").exists()


def test_sum_over_survivors_is_exact_and_a_dropped_node_is_recorded(tmp_path: Path) -> None:
    """No DP, one node vanishes after masking: the new global model is the initial one plus the
    mean of the survivors' own updates (recomputed here), within the fixed-point bound."""
    transport, registry = _cluster(tmp_path, drop_at={101: 3})  # client 1 gone at unmask
    cfg = _cfg(tmp_path, "exact", dp="none", rounds=1, sampling_rate=1.0, sampling="poisson")
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    m = res.metrics[0]
    assert m["participants"] == [0, 1, 2, 3, 4, 5]  # masked inputs of all six were summed
    train = BuiltinTraining()
    deltas = [train(cfg, info.initial, c, 0).delta for c in range(N)]
    expected = info.initial + cfg.effective_server_lr * np.mean(deltas, axis=0)
    bound = error_bound(plan_ring(N, cfg.update_bound, cfg.frac_bits, max_weight=1.0), N)
    assert np.max(np.abs(res.global_flat - expected)) <= bound * cfg.effective_server_lr + 1e-12

    transport2, registry2 = _cluster(tmp_path / "b", drop_at={102: 2})  # gone before masking
    tmp_b = tmp_path / "b"
    cfg2 = RunConfig(**{**cfg.to_dict(), "out": str(tmp_b / "run"), "key_dir": str(tmp_b / "k")})
    res2 = run_job(transport2, cfg2, info, registry=registry2, stage_timeout=5)
    m2 = res2.metrics[0]
    assert m2["participants"] == [0, 2, 3, 4, 5]
    assert 1 in m2["dropped"]["masked_input"]
    deltas2 = [d for c, d in enumerate(deltas) if c != 1]
    expected2 = info.initial + np.sum(deltas2, axis=0) / 5.0
    assert np.max(np.abs(res2.global_flat - expected2)) <= bound + 1e-12


def test_a_node_refuses_terms_whose_event_does_not_match_their_config(tmp_path: Path) -> None:
    """A server announcing a weaker noise than its DP event says (or another event) is refused
    by every node before it trains, and the refusals are in the server's ledger."""
    calls: list[int] = []

    def training(cfg: RunConfig, flat: Any, client: int, r: int) -> Any:
        calls.append(client)
        return BuiltinTraining()(cfg, flat, client, r)

    transport, registry = _cluster(tmp_path, training=training)
    cfg = _cfg(tmp_path, "lie", dp="distributed", rounds=1)
    info, _ = server_model(cfg, with_evaluation=False)
    orig = JobTerms.to_text

    def lying(self: JobTerms) -> str:  # what a cheating server would send
        doc = json.loads(orig(self))
        doc["noise_multiplier"] = doc["noise_multiplier"] / 10
        return json.dumps(doc)

    JobTerms.to_text = lying  # type: ignore[method-assign]
    try:
        res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    finally:
        JobTerms.to_text = orig  # type: ignore[method-assign]
    assert calls == []
    assert res.metrics[0]["n_participants"] == 0
    assert all("DP event" in why for why in transport.errors.values())
    with Ledger(tmp_path / "lie" / "ledger.sqlite") as led:
        refusals = [e.payload for e in led.entries() if e.kind == "node_refusal"]
    assert len(refusals) == 5 and all("DP event" in r["reason"] for r in refusals)


class _ServerDies(Exception):
    pass


def test_resume_after_the_server_dies_charges_no_round_twice(tmp_path: Path) -> None:
    """The server process dies as round 1 begins (its first request never leaves); started
    again on the same run directory it finishes, with the ε and the events of a run that was
    never interrupted, and no round recorded twice."""
    transport, registry = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "r", dp="distributed", rounds=3)
    info, _ = server_model(cfg, with_evaluation=False)
    real_exchange = transport.exchange

    def dying(requests: Any, *, timeout: float, round_index: int) -> Any:
        if round_index == 1:
            raise _ServerDies
        return real_exchange(requests, timeout=timeout, round_index=round_index)

    transport.exchange = dying  # type: ignore[method-assign]
    with pytest.raises(_ServerDies):
        run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    transport.exchange = real_exchange  # type: ignore[method-assign]
    assert ckpt_mod.load(Path(cfg.out or "")).rounds_done == 1  # type: ignore[union-attr]
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    other, registry_u = _cluster(tmp_path / "u")
    full = run_job(
        other,
        cfg.replace(out=str(tmp_path / "u" / "run"), key_dir=str(tmp_path / "u" / "k")),
        info,
        registry=registry_u,
        stage_timeout=5,
    )
    assert res.rounds_completed == 3 and full.rounds_completed == 3
    assert res.epsilon == pytest.approx(full.epsilon, rel=1e-12)
    events = {}
    for name, path in (("resumed", tmp_path / "r"), ("full", tmp_path / "u" / "run")):
        with Ledger(path / "ledger.sqlite") as led:
            assert led.verify().ok
            done = [e for e in led.entries() if e.kind == "round_completed"]
            events[name] = [(e.round_id, e.payload["dp_event"]) for e in done]
    assert [r for r, _ in events["resumed"]] == [0, 1, 2]
    assert events["resumed"] == events["full"]


def test_job_terms_round_trip_and_reject_garbage(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "t")
    t = JobTerms("run-1", 3, cfg, 1.25, 10, bytes(32), {"kind": "x"})
    back = JobTerms.from_text(t.to_text())
    assert back.round_index == 3 and back.noise_multiplier == 1.25
    assert back.config.digest() == cfg.digest()
    assert "out" not in json.loads(t.to_text())["config"]  # server paths stay at the server
    for bad in ("", "[]", '{"v": 1}', t.to_text().replace('"round":3', '"round":-1')):
        with pytest.raises(MalformedMessageError):
            JobTerms.from_text(bad)
    with pytest.raises((MalformedMessageError, UnsafeRequestError)):
        JobTerms.from_text(t.to_text().replace('"n_clients":6', '"n_clients":"6"'))


def test_node_policies_admit_or_refuse_and_each_node_keeps_its_ledger(tmp_path: Path) -> None:
    """Five nodes whose own policy admits the run record their contribution; the sixth allows
    ε ≤ 1 per run and refuses before training: in its own signed ledger and in the server's."""
    from securefl.engine.node_job import node_guard
    from securefl.engine.node_policy import NodePolicy, check_node_ledger

    ids = _identities(tmp_path)
    registry = {u: ident.public for u, ident in ids.items()}
    nodes, guards = {}, {}
    (tmp_path / "ledgers").mkdir()
    for u, ident in ids.items():
        policy = tmp_path / f"policy{u}.toml"
        eps = 1.0 if u == N else 20.0
        policy.write_text(f'kind = "node"\nmax_epsilon_per_run = {eps}\n')
        guard, terms_of = node_guard(
            policy, tmp_path / "ledgers" / f"{u}.sqlite", tmp_path / f"k{u}"
        )
        guards[u] = guard
        nodes[100 + u] = JobNode(
            ident, BuiltinTraining(), registry=registry, guard=guard, terms_of=terms_of
        )
    transport = InProcessTransport(nodes)
    cfg = _cfg(tmp_path, "pol", dp="distributed", rounds=2, clients_per_round=6)
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    assert [m["participants"] for m in res.metrics] == [[0, 1, 2, 3, 4]] * 2
    assert set(transport.errors) == {100 + N}
    assert "NodePolicyRefusal" in transport.errors[100 + N]
    with Ledger(tmp_path / "pol" / "ledger.sqlite") as led:
        refused = [e for e in led.entries() if e.kind == "node_refusal"]
    assert [e.round_id for e in refused] == [0, 1]
    for u, guard in guards.items():
        guard.ledger.close()
        with Ledger(tmp_path / "ledgers" / f"{u}.sqlite") as led:
            assert led.verify().ok
            kinds = [e.kind for e in led.entries()]
        if u == N:
            assert kinds.count("node_round_refused") == 2 and "node_contribution" not in kinds
        else:
            assert kinds.count("node_contribution") == 2
            result = check_node_ledger(
                tmp_path / "ledgers" / f"{u}.sqlite", NodePolicy.load(tmp_path / f"policy{u}.toml")
            )
            assert result.ok, result


def test_two_dropouts_in_a_sparse_graph_abort_cleanly(tmp_path: Path) -> None:
    """n = 6 under SecAgg+ (k = 4, t = 3): a node refusing at the first stage and another gone
    before masking leave some client two live neighbours, so the round aborts; nothing is
    released, the model does not move, and the projected round stays charged."""
    transport, registry = _cluster(tmp_path, fail_at={106: 0}, drop_at={103: 2})
    cfg = _cfg(tmp_path, "abort", dp="distributed", rounds=1, sampling="poisson")
    cfg = cfg.replace(sampling_rate=1.0)
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    m = res.metrics[0]
    assert m["participants"] == [] and m["dropped"] == {"aborted": [0, 1, 2, 3, 4, 5]}
    assert np.array_equal(res.global_flat, info.initial)
    assert res.epsilon > 0
    with Ledger(tmp_path / "abort" / "ledger.sqlite") as led:
        done = [e.payload for e in led.entries() if e.kind == "round_completed"]
    assert "surviving neighbours" in done[0]["aggregation"]["aborted"]


def test_local_dpsgd_job_is_accounted_per_example_like_the_simulation(tmp_path: Path) -> None:
    """Cross-silo: DP-SGD on each node inside SecAgg+. With the sites' dataset sizes declared
    the events equal the simulation's (the worst client's); declared sizes whose worst event is
    below what some node's own DP-SGD would spend make those nodes refuse before they train
    (ε is not monotone in the size: more examples, more steps)."""
    from securefl.fl.run import load_data

    cfg = _cfg(tmp_path, "silo", dp="local", rounds=1, clients_per_round=6, delta=1e-6)
    sizes = [len(c) for c in load_data(cfg)[0]]
    transport, registry = _cluster(tmp_path / "a")
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(
        transport, cfg, info, registry=registry, stage_timeout=5, client_examples=tuple(sizes)
    )
    sim = run_simulation(cfg.replace(out=str(tmp_path / "sim")))
    assert not transport.errors and res.metrics[0]["n_participants"] == 6
    assert res.epsilon == pytest.approx(sim.epsilon, rel=1e-12)
    with Ledger(tmp_path / "silo" / "ledger.sqlite") as led:
        started = next(e.payload for e in led.entries() if e.kind == "run_started")
    assert started["privacy_unit"] == "example"

    from securefl.fl import privacy
    from securefl.fl.local_dp import client_event

    def eps(n: int, z: float) -> float:
        return privacy.epsilon_of(cfg, [client_event(n, cfg.local_epochs, cfg.batch_size, z)])

    z1 = res.noise_multiplier or 0.0
    declared = (min(sizes, key=lambda n: eps(n, z1)),)  # the cheapest site only
    transport2, registry2 = _cluster(tmp_path / "b")
    cfg2 = cfg.replace(out=str(tmp_path / "b" / "run"), key_dir=str(tmp_path / "b" / "k"))
    res2 = run_job(
        transport2, cfg2, info, registry=registry2, stage_timeout=5, client_examples=declared
    )
    z2 = res2.noise_multiplier or 0.0
    worst = eps(declared[0], z2)
    over = {101 + c for c, n in enumerate(sizes) if eps(n, z2) > worst * (1 + 1e-9)}
    assert over and set(transport2.errors) == over
    assert all("spends more" in transport2.errors[n] for n in over)
    with pytest.raises(ConfigurationError):
        run_job(transport2, cfg2, info, registry=registry2, stage_timeout=5)
