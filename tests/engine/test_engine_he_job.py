"""CKKS (key holder as its own node) and plain aggregation of the whole job over the engine's
transport, in process (securefl.engine.he_job). Flower itself: test_engine_flower_he_job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.audit.ledger import Ledger
from securefl.engine.builtin import BuiltinTraining, server_model
from securefl.engine.he_job import (
    KEYHOLDER_ROLE,
    KeyHolderNode,
    init_key_holder,
    receipt_message,
)
from securefl.engine.identity import NodeIdentity, generate_identity
from securefl.engine.job import (
    KEYHOLDER_DECRYPT,
    KEYHOLDER_OPEN,
    JobNode,
    JobTerms,
    job_backend,
    run_job,
)
from securefl.engine.local import InProcessTransport
from securefl.engine.wire import ENGINE_WIRE_VERSION, HELLO
from securefl.errors import ConfigurationError, SecureFLError
from securefl.fl import checkpoint as ckpt_mod
from securefl.fl.config import RunConfig
from securefl.fl.run import run_simulation

N = 6
KH = 999
Z = 1.1  # a stated noise multiplier: calibrating it to target_epsilon is not under test here
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
    "aggregation": "he",
}


def _cfg(tmp: Path, name: str, **kw: Any) -> RunConfig:
    return RunConfig(**{**BASE, "out": str(tmp / name), "key_dir": str(tmp / "keys"), **kw})


class Recording(InProcessTransport):
    """The in-process transport, keeping every bytes field the server received."""

    def __init__(self, nodes: Mapping[int, Any], **kw: Any) -> None:
        super().__init__(nodes, **kw)
        self.received: list[bytes] = []

    def exchange(
        self, requests: Mapping[int, Mapping[str, Any]], *, timeout: float, round_index: int
    ) -> dict[int, Mapping[str, Any]]:
        out = super().exchange(requests, timeout=timeout, round_index=round_index)
        for reply in out.values():
            self.received += [v for v in reply.values() if isinstance(v, bytes)]
        return out


def _cluster(
    tmp: Path, *, pin: bool = True, kh_allow_without_dp: bool = False, **kw: Any
) -> tuple[Recording, dict[int, bytes], dict[int, NodeIdentity]]:
    """N client nodes and one key-holder node whose secret key lives outside any run dir."""
    (tmp / "sites").mkdir(parents=True, exist_ok=True)
    ids = {u: generate_identity(tmp / "sites" / f"node{u}.key", u) for u in range(1, N + 1)}
    registry = {u: ident.public for u, ident in ids.items()}
    (tmp / "keyholder").mkdir()
    fp = init_key_holder(tmp / "keyholder" / "ckks.secret")
    pinned = fp if pin else None
    nodes: dict[int, Any] = {
        100 + u: JobNode(ident, BuiltinTraining(), registry=registry, key_holder=pinned)
        for u, ident in ids.items()
    }
    nodes[KH] = KeyHolderNode(
        tmp / "keyholder" / "ckks.secret",
        registry=registry,
        allow_without_dp=kh_allow_without_dp,
    )
    return Recording(nodes, **kw), registry, ids


def _events(path: Path) -> list[Any]:
    with Ledger(path / "ledger.sqlite") as led:
        assert led.verify().ok
        return [e.payload["dp_event"] for e in led.entries() if e.kind == "round_completed"]


def _started(path: Path) -> dict[str, Any]:
    with Ledger(path / "ledger.sqlite") as led:
        return next(e.payload for e in led.entries() if e.kind == "run_started")


def test_he_job_records_the_simulations_events_and_the_server_never_gets_the_key(
    tmp_path: Path,
) -> None:
    """CKKS with central DP (dp auto): events and ε equal the in-process simulation's; every
    context the server received is public; the key holder added the noise; the server's
    run and key directories hold no secret context."""
    from securefl.he.context import ROLE_PUBLIC, unpack_context

    transport, registry, _ = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "engine", noise_multiplier=Z)
    assert cfg.dp == "central"
    info, evaluate = server_model(cfg)
    res = run_job(transport, cfg, info, registry=registry, evaluate=evaluate, stage_timeout=5)
    sim = run_simulation(_cfg(tmp_path, "sim", noise_multiplier=Z))
    assert res.rounds_completed == 2 and not transport.errors
    assert res.epsilon == pytest.approx(sim.epsilon, rel=1e-12)
    assert _events(tmp_path / "engine") == _events(tmp_path / "sim")
    a, b = _started(tmp_path / "engine"), _started(tmp_path / "sim")
    assert a["dp"] == b["dp"] and a["aggregation"] == b["aggregation"]
    assert all(m["n_participants"] == 5 for m in res.metrics)
    with Ledger(tmp_path / "engine" / "ledger.sqlite") as led:
        done = [e.payload for e in led.entries() if e.kind == "round_completed"]
    release = done[0]["aggregation"]["release"]
    assert "key_holder" in release["central_noise"] and release["contributions"] == "5"
    assert done[0]["aggregation"]["key_holder"] == "own node"
    import tenseal as ts

    contexts = [v for v in transport.received if v[:4] == b"SFHC"]
    assert len(contexts) == 2  # one per round, from the key holder
    for data in contexts:
        _preset, role, ts_bytes = unpack_context(data, allow_insecure=False)
        assert role == ROLE_PUBLIC and not ts.context_from(ts_bytes).is_private()
    for d in (tmp_path / "engine", tmp_path / "keys"):
        for f in d.rglob("*"):
            if f.is_file():
                assert b"SFHC" not in f.read_bytes()[:8], f
    assert (tmp_path / "engine" / "report.html").exists()


def test_he_sum_is_right_and_a_dropped_client_is_not_in_it(tmp_path: Path) -> None:
    """No DP, one client gone before it uploads: the new model is the initial one plus the
    mean of the four survivors' own updates (recomputed here), within the CKKS release bound."""
    transport, registry, _ = _cluster(tmp_path, drop_at={102: 0}, kh_allow_without_dp=True)
    cfg = _cfg(tmp_path, "exact", dp="none", rounds=1, allow_he_without_dp=True)
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    m = res.metrics[0]
    members = sorted(m["participants"] + m["dropped"].get("upload", []))
    assert len(members) == 5 and 1 in members and m["dropped"] == {"upload": [1]}
    train = BuiltinTraining()
    deltas = [train(cfg, info.initial, c, 0).delta for c in m["participants"]]
    expected = info.initial + cfg.effective_server_lr * np.mean(deltas, axis=0)
    with Ledger(tmp_path / "exact" / "ledger.sqlite") as led:
        done = next(e.payload for e in led.entries() if e.kind == "round_completed")
    assert done["aggregation"]["weakened_threat_model"]["key_holder_checks_sum"] is False
    report = json.loads((tmp_path / "exact" / "report.json").read_text())
    assert "key_holder_checks_sum" in json.dumps(report["threat_model"]["aggregation"])
    he_tm = next(a for a in report["threat_model"]["aggregation"] if a["protocol"] == "he-ckks")
    assert he_tm["does_not_protect_against"][0].startswith("WEAKENED BY A RECORDED OPT-IN")
    row = next(r for r in report["threat_model"]["trust_model"] if r["aggregation"] == "he-ckks")
    assert row["sees_updates"].startswith("the server, one update of its choice")
    bound = float(done["aggregation"]["release"]["released_error_bound"])
    assert 0 < bound < 1e-3
    err = np.max(np.abs(res.global_flat - expected))
    assert err <= (bound / 4) * cfg.effective_server_lr + 1e-12


def test_plain_job_is_the_recorded_weak_mode_with_the_simulations_events(tmp_path: Path) -> None:
    """Plain + central DP: the server sees each update and the ledger says so exactly as the
    in-process run does; events and ε equal; without DP the sum is the survivors' exact mean
    (float32 wire)."""
    transport, registry, _ = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "plain", aggregation="plain", dp="central", rounds=1, noise_multiplier=Z)
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    sim = run_simulation(
        _cfg(tmp_path, "psim", aggregation="plain", dp="central", rounds=1, noise_multiplier=Z)
    )
    assert not transport.errors and res.epsilon == pytest.approx(sim.epsilon, rel=1e-12)
    assert _events(tmp_path / "plain") == _events(tmp_path / "psim")
    a, b = _started(tmp_path / "plain"), _started(tmp_path / "psim")
    assert a["dp"] == b["dp"]
    assert a["dp"]["server_sees_individual_updates"] is True
    assert a["dp"]["noiseless_sum_seen_by"] == ["server"]
    with Ledger(tmp_path / "plain" / "ledger.sqlite") as led:
        done = next(e.payload for e in led.entries() if e.kind == "round_completed")
    assert done["aggregation"]["server_sees_individual_updates"] is True

    cfg2 = _cfg(tmp_path, "plain0", aggregation="plain", dp="none", rounds=1)
    res2 = run_job(transport, cfg2, info, registry=registry, stage_timeout=5)
    part = res2.metrics[0]["participants"]
    deltas = [BuiltinTraining()(cfg2, info.initial, c, 0).delta for c in part]
    expected = info.initial + cfg2.effective_server_lr * np.mean(deltas, axis=0)
    assert np.max(np.abs(res2.global_flat - expected)) <= 1e-6


def test_clients_refuse_without_a_pinned_key_holder(tmp_path: Path) -> None:
    """A node that cannot tell the key holder's public key from the server's refuses."""
    transport, registry, _ = _cluster(tmp_path, pin=False, kh_allow_without_dp=True)
    cfg = _cfg(tmp_path, "nopin", dp="none", rounds=1, allow_he_without_dp=True)
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    assert res.metrics[0]["n_participants"] == 0
    assert len(transport.errors) == 5
    assert all("pinned key holder" in why for why in transport.errors.values())


def test_he_without_dp_is_refused_unless_the_server_and_the_key_holder_opt_in(
    tmp_path: Path,
) -> None:
    """The key holder cannot check that what it decrypts is the receipted sum: without DP a
    malicious server could get one client's update decrypted per round. The server refuses
    such a run unless ``allow_he_without_dp``; the key holder, which does not trust the
    server's config, refuses to open its rounds unless its own config opts in, and the
    refusal is in the server's ledger. (Both opted in: test_he_sum_is_right_…, which checks
    the weakened threat model is recorded.) The in-process run is unchanged."""
    transport, registry, _ = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "nodp", dp="none", rounds=1)
    info, _ = server_model(cfg, with_evaluation=False)
    with pytest.raises(ConfigurationError) as refused:
        run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    assert refused.value.parameter == "dp" and "allow_he_without_dp" in str(refused.value)
    assert not (tmp_path / "nodp").exists()  # refused before anything was written

    opted = cfg.replace(out=str(tmp_path / "half"), allow_he_without_dp=True)
    res = run_job(transport, opted, info, registry=registry, stage_timeout=5)
    assert res.metrics[0]["n_participants"] == 0
    assert np.array_equal(res.global_flat, info.initial)
    assert set(transport.errors) == {KH} and "he-allow-without-dp" in transport.errors[KH]
    with Ledger(tmp_path / "half" / "ledger.sqlite") as led:
        assert led.verify().ok
        refusals = [e.payload for e in led.entries() if e.kind == "node_refusal"]
        started = next(e.payload for e in led.entries() if e.kind == "run_started")
    assert [r["node"] for r in refusals] == [KH]
    assert started["config"]["allow_he_without_dp"] is True  # the opt-in is recorded
    # in process, server and key holder are one trusted process: no opt-in needed
    assert RunConfig(**{**BASE, "dp": "none"}).allow_he_without_dp is False


def test_a_cohort_below_three_is_skipped_uncharged_and_the_run_goes_on(tmp_path: Path) -> None:
    """Two sampled clients cannot make a CKKS round (the key holder decrypts no sum of fewer
    than 3): nobody is asked, nothing is released or charged, the ledger says so, and the
    run goes on to the next round (here: every round, then the end of the run)."""
    transport, registry, _ = _cluster(tmp_path)
    cfg = _cfg(tmp_path, "small", rounds=2, clients_per_round=2, noise_multiplier=Z)
    info, _ = server_model(cfg, with_evaluation=False)
    asked: list[int] = []
    real = transport.exchange

    def counting(requests: Any, *, timeout: float, round_index: int) -> Any:
        asked.extend(r["stage"] for r in requests.values())
        return real(requests, timeout=timeout, round_index=round_index)

    transport.exchange = counting  # type: ignore[method-assign]
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    assert set(asked) == {HELLO} and not transport.errors  # no round request left the server
    assert res.epsilon == 0.0 and np.array_equal(res.global_flat, info.initial)
    with Ledger(tmp_path / "small" / "ledger.sqlite") as led:
        assert led.verify().ok
        entries = list(led.entries())
    aborted = [e for e in entries if e.kind == "round_aborted"]
    assert [e.round_id for e in aborted] == [0, 1]
    assert all(e.payload["released"] is False and "below" in e.payload["reason"] for e in aborted)
    assert not [e for e in entries if e.kind == "round_completed"]
    assert any(e.kind == "run_finished" for e in entries)


class _ServerDies(Exception):
    pass


def test_resume_under_he_after_the_server_dies_charges_no_round_twice(tmp_path: Path) -> None:
    """The ServerApp dies twice: between rounds 0 and 1 (round 1's open never leaves), then
    inside round 1 after the uploads (the decrypt request never leaves; the key holder holds
    round 1 open). Started again each time on the same run directory it finishes with the
    ε and the events of an uninterrupted run; each round is recorded and released once."""
    transport, registry, _ = _cluster(tmp_path / "a")
    cfg = _cfg(tmp_path, "r", noise_multiplier=Z)
    info, _ = server_model(cfg, with_evaluation=False)
    real = transport.exchange

    def dies_at(at_round: int, stage: int) -> Any:
        def exchange(requests: Any, *, timeout: float, round_index: int) -> Any:
            if round_index == at_round and any(q["stage"] == stage for q in requests.values()):
                raise _ServerDies
            return real(requests, timeout=timeout, round_index=round_index)

        return exchange

    for stage in (KEYHOLDER_OPEN, KEYHOLDER_DECRYPT):
        transport.exchange = dies_at(1, stage)  # type: ignore[method-assign]
        with pytest.raises(_ServerDies):
            run_job(transport, cfg, info, registry=registry, stage_timeout=5)
        assert ckpt_mod.load(tmp_path / "r").rounds_done == 1  # type: ignore[union-attr]
    transport.exchange = real  # type: ignore[method-assign]
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5)
    other, registry_u, _ = _cluster(tmp_path / "u")
    full = run_job(
        other,
        cfg.replace(out=str(tmp_path / "u" / "run"), key_dir=str(tmp_path / "u" / "k")),
        info,
        registry=registry_u,
        stage_timeout=5,
    )
    assert res.rounds_completed == 2 and full.rounds_completed == 2
    assert not transport.errors and not other.errors
    assert res.epsilon == pytest.approx(full.epsilon, rel=1e-12)
    events = {}
    for name, path in (("resumed", tmp_path / "r"), ("full", tmp_path / "u" / "run")):
        with Ledger(path / "ledger.sqlite") as led:
            assert led.verify().ok
            done = [e for e in led.entries() if e.kind == "round_completed"]
            events[name] = [(e.round_id, e.payload["dp_event"]) for e in done]
    assert [r for r, _ in events["resumed"]] == [0, 1]
    assert events["resumed"] == events["full"]
    state = json.loads((tmp_path / "a" / "keyholder" / "ckks.secret.rounds.json").read_text())
    assert [run["released"] for run in state.values()] == [[0, 1]]


def test_local_dpsgd_under_he_runs_on_the_engine(tmp_path: Path) -> None:
    """Cross-silo DP-SGD inside each node, CKKS aggregation: the key holder releases the sum
    without adding noise of its own (each update is already example-level DP), the event is
    the worst declared site's, as the run's backend computes it."""
    from securefl.fl import privacy
    from securefl.fl.run import load_data

    cfg = _cfg(tmp_path, "silo", dp="local", rounds=1, delta=1e-6)
    sizes = tuple(len(c) for c in load_data(cfg)[0])
    transport, registry, _ = _cluster(tmp_path / "c")
    info, _ = server_model(cfg, with_evaluation=False)
    res = run_job(transport, cfg, info, registry=registry, stage_timeout=5, client_examples=sizes)
    assert not transport.errors and res.metrics[0]["n_participants"] == 5
    event = job_backend(cfg, res.noise_multiplier, info.layout.size, sizes).round_event()
    assert res.epsilon == pytest.approx(privacy.epsilon_of(cfg, [event]), rel=1e-12)
    with Ledger(tmp_path / "silo" / "ledger.sqlite") as led:
        assert led.verify().ok
        started = next(e.payload for e in led.entries() if e.kind == "run_started")
        done = next(e.payload for e in led.entries() if e.kind == "round_completed")
    assert started["privacy_unit"] == "example"
    assert done["aggregation"]["key_holder"] == "own node"
    assert "central_noise" not in done["aggregation"]["release"]
    assert "weakened_threat_model" not in done["aggregation"]


# ------------------------------------------------------------------ the key holder alone
def _terms(cfg: RunConfig, round_index: int, d: int = 8) -> str:
    event = job_backend(cfg, 1.0, d).round_event().to_dict()
    return JobTerms("run-x", round_index, cfg, 1.0, d, bytes(32), event).to_text()


def _req(stage: int, **kw: Any) -> dict[str, Any]:
    return {"v": ENGINE_WIRE_VERSION, "stage": stage, **kw}


def test_key_holder_decrypts_only_an_aggregate_of_the_round_it_opened(tmp_path: Path) -> None:
    from securefl.he import HEClient, HEServer

    (tmp_path / "s").mkdir()
    ids = {u: generate_identity(tmp_path / "s" / f"{u}.key", u) for u in range(1, N + 1)}
    registry = {u: i.public for u, i in ids.items()}
    init_key_holder(tmp_path / "kh.secret")
    kh = KeyHolderNode(tmp_path / "kh.secret", registry=registry)
    cfg = _cfg(tmp_path, "k", dp="central")
    text0, text1 = _terms(cfg, 0), _terms(cfg, 1)
    assert kh.handle(_req(HELLO), {}) == {"role": KEYHOLDER_ROLE}
    rng = np.random.default_rng(1)
    xs = {u: rng.uniform(-0.1, 0.1, 8) for u in range(1, N + 1)}

    def uploads(ctx: bytes, text: str, who: list[int]) -> tuple[list[bytes], str]:
        client = HEClient(ctx)
        cts = [client.encrypt({"delta": xs[u], "weight": np.ones(1)}) for u in who]
        import hashlib

        receipts = [
            [
                u,
                hashlib.sha256(ct).hexdigest(),
                ids[u]
                .key.sign(
                    receipt_message(text, client.info.fingerprint, hashlib.sha256(ct).digest())
                )
                .hex(),
            ]
            for u, ct in zip(who, cts, strict=True)
        ]
        return cts, json.dumps(receipts)

    def decrypt(text: str, aggregate: bytes, receipts: str) -> dict[str, Any]:
        return kh.handle(
            _req(KEYHOLDER_DECRYPT, plan=text, cohort=5, aggregate=aggregate, receipts=receipts),
            {},
        )

    with pytest.raises(SecureFLError, match="did not open"):  # nothing opened yet
        decrypt(text0, b"x", "[]")
    ctx = kh.handle(_req(KEYHOLDER_OPEN, plan=text0, cohort=5), {})["context"]
    server = HEServer(ctx)
    cts, receipts = uploads(ctx, text0, [1, 2, 3])
    # one client's ciphertext, however many receipts come with it, is not an aggregate
    with pytest.raises(SecureFLError):
        decrypt(text0, cts[0], receipts)
    # an aggregate of two is below the minimum
    cts2, receipts2 = uploads(ctx, text0, [1, 2])
    with pytest.raises(SecureFLError, match="below"):
        decrypt(text0, server.aggregate(cts2), receipts2)
    # receipts signed for another round, or a round that was not opened
    _, receipts_r1 = uploads(ctx, text1, [1, 2, 3])
    with pytest.raises(SecureFLError, match="does not verify"):
        decrypt(text0, server.aggregate(cts), receipts_r1)
    with pytest.raises(SecureFLError, match="did not open"):
        decrypt(text1, server.aggregate(cts), receipts_r1)
    # three receipts for an aggregate the server claims holds two contributions more
    with pytest.raises(SecureFLError, match="contribution count"):
        decrypt(text0, server.aggregate(cts + cts2), receipts)
    out = decrypt(text0, server.aggregate(cts), receipts)
    released = np.frombuffer(out["delta"], dtype="<f8")
    noise_sd = float(json.loads(out["metadata"])["noise_grid_sigma"]) * 2.0**-cfg.frac_bits
    assert np.max(np.abs(released - (xs[1] + xs[2] + xs[3]))) < 8 * noise_sd
    assert out["weight"] == pytest.approx(3.0, abs=1e-3)
    # released once: the same round again (re-opened or not) is refused
    with pytest.raises(SecureFLError, match="already released"):
        decrypt(text0, server.aggregate(cts), receipts)
    with pytest.raises(SecureFLError, match="already released"):
        kh.handle(_req(KEYHOLDER_OPEN, plan=text0, cohort=5), {})
    # a state file it cannot read makes it refuse, never forget
    kh.state_path.write_text("{broken")
    with pytest.raises(SecureFLError, match="unreadable"):
        kh.handle(_req(KEYHOLDER_OPEN, plan=text1, cohort=5), {})
