"""Adaptive clipping and DP-FTRL in the round loop (protocols/fl.md "Adaptive clipping",
"DP-FTRL"; securefl.fl.mechanisms): config refusals, accounting against closed forms, tiny-model
runs of every supported combination with ledger verification, FTRL resume, quantile tracking."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.audit import spend
from securefl.audit.ledger import Ledger
from securefl.dp.accounting import get_accountant
from securefl.dp.events import (
    ComposedEvent,
    GaussianEvent,
    TreeIncrementEvent,
    ZCDPEvent,
)
from securefl.dp.ftrl import DpFtrlConfig, DpFtrlServer
from securefl.errors import ConfigurationError
from securefl.fl import checkpoint as ckpt_mod
from securefl.fl import orchestrator as orch_mod
from securefl.fl.client import ClientUpdate
from securefl.fl.config import RunConfig, from_mapping
from securefl.fl.errors import ResumeError, UnsupportedCombinationError
from securefl.fl.mechanisms import (
    AdaptiveClipLoop,
    count_noise_std,
    ftrl_config,
    ftrl_events,
    ftrl_noise_multiplier,
    joint_clip,
    mechanism_config,
    mechanism_event,
)
from securefl.fl.orchestrator import ModelInfo, Orchestrator
from securefl.fl.privacy import compose
from securefl.fl.run import run_simulation
from securefl.tensors import TensorLayout

KEY = bytes(range(32))
TINY: dict[str, Any] = {
    "model": "tiny",
    "synthetic_examples": 96,
    "n_clients": 6,
    "rounds": 3,
    "sampling_rate": 1.0,
    "dropout_rate": 0.0,
    "batch_size": 8,
    "max_length": 16,
    "allow_large_delta": True,
}
ADAPTIVE: dict[str, Any] = {
    "clip_mode": "adaptive",
    "noise_multiplier": 1.0,
    "clip_count_noise_std": 2.0,
    "target_epsilon": 50.0,
}


def _cfg(out: Path, **kw: Any) -> RunConfig:
    out.mkdir(parents=True, exist_ok=True)
    return RunConfig(**{**TINY, "out": str(out), **kw})


def _verified_entries(run_dir: Path) -> list[Any]:
    with Ledger(run_dir / "ledger.sqlite") as led:
        assert led.verify().ok
        return list(led.entries())


# ------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("kw", "parameter"),
    [
        ({"clip_mode": "adaptive", "aggregation": "plain", "dp": "none"}, "clip_mode"),
        ({"clip_mode": "adaptive", "aggregation": "plain", "dp": "local"}, "clip_mode"),
        (
            {"clip_mode": "adaptive", "aggregation": "plain", "dp": "central", "mechanism": "ftrl"},
            "clip_mode",
        ),
        (
            {"clip_mode": "adaptive", "aggregation": "plain", "dp": "central", "audit_canaries": 8},
            "clip_mode",
        ),
        ({"mechanism": "ftrl", "aggregation": "secagg+", "dp": "distributed"}, "mechanism"),
        ({"mechanism": "ftrl", "aggregation": "he", "dp": "central"}, "mechanism"),
        ({"mechanism": "ftrl", "aggregation": "plain", "dp": "none"}, "mechanism"),
    ],
)
def test_unsupported_combinations_are_refused_with_a_typed_error(
    kw: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(UnsupportedCombinationError) as info:
        RunConfig(**{**TINY, **kw})
    assert info.value.parameter == parameter


@pytest.mark.parametrize(
    ("kw", "parameter"),
    [
        ({"clip_mode": "sometimes"}, "clip_mode"),
        ({"mechanism": "dp-sgd"}, "mechanism"),
        ({"clip_target_quantile": 1.0}, "clip_target_quantile"),
        ({"clip_target_quantile": 0.0}, "clip_target_quantile"),
        ({"clip_lr": 0.0}, "clip_lr"),
        ({"clip_count_noise_std": -1.0}, "clip_count_noise_std"),
        ({"ftrl_max_participations": 0}, "ftrl_max_participations"),
        ({"ftrl_min_separation": 0}, "ftrl_min_separation"),
    ],
)
def test_option_ranges_are_checked(kw: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RunConfig(**{**TINY, "aggregation": "plain", "dp": "central", **kw})
    assert info.value.parameter == parameter


@pytest.mark.parametrize(
    ("aggregation", "dp", "extra"),
    [
        ("plain", "central", {"clip_mode": "adaptive"}),
        ("secagg", "central", {"clip_mode": "adaptive"}),
        ("secagg+", "distributed", {"clip_mode": "adaptive"}),
        ("he", "central", {"clip_mode": "adaptive"}),
        ("plain", "central", {"mechanism": "ftrl"}),
        ("secagg+", "central", {"mechanism": "ftrl"}),
    ],
)
def test_supported_combinations_build(aggregation: str, dp: str, extra: dict[str, Any]) -> None:
    cfg = RunConfig(**{**TINY, "aggregation": aggregation, "dp": dp, **extra})
    assert cfg.clip_mode == extra.get("clip_mode", "fixed")
    assert from_mapping(cfg.to_dict()).digest() == cfg.digest()


def test_defaults_keep_the_config_digest_of_earlier_runs() -> None:
    # digests computed by main at a8b6993 (before these options existed): old runs resume
    assert RunConfig().digest() == (
        "97ad97990ac076a6a3e3ad3de90b016d4c3b0835b2be7080c0e5719a6c5ee009"
    )
    assert RunConfig(model="tiny", aggregation="plain", dp="central").digest() == (
        "a4c6bad211acf1c61f49936ae73fd75100afaee739d17369ae9a0dcbd24f1109"
    )
    assert RunConfig(clip_mode="adaptive").digest() != RunConfig().digest()


def test_count_noise_too_small_for_the_noise_multiplier_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        joint_clip(2.0, 1.0)
    assert info.value.parameter == "clip_count_noise_std"
    cfg = RunConfig(
        **{**TINY, "aggregation": "plain", "dp": "central", **ADAPTIVE, "noise_multiplier": 5.0}
    )
    model = ModelInfo(TensorLayout.from_tensors({"w": np.zeros(4)}), np.zeros(4), {"name": "t"})
    with pytest.raises(ConfigurationError) as info:
        Orchestrator(cfg.replace(out=str(tmp_path / "r")), model)
    assert info.value.parameter == "clip_count_noise_std"


def test_engine_refuses_the_new_options() -> None:
    from securefl.engine.job import check_engine_config

    for kw in ({"clip_mode": "adaptive"}, {"mechanism": "ftrl", "dp": "central"}):
        with pytest.raises(UnsupportedCombinationError):
            check_engine_config(RunConfig(**{**TINY, "aggregation": "secagg+", **kw}))


# ------------------------------------------------------------------------- accounting


@settings(max_examples=60, deadline=None)
@given(
    z=st.floats(0.3, 5.0),
    ratio=st.floats(0.51, 20.0),
)
def test_adaptive_split_is_andrew_et_al_section_3_1(z: float, ratio: float) -> None:
    """The joint vector's noise, read back, gives the update z_Δ = z·c_J and the count σ_b,
    and (z_Δ⁻² + (2σ_b)⁻²)^(−½) = z: RDP of update ∘ count equals RDP of one Gaussian at z."""
    sigma_b = ratio * z
    c = joint_clip(z, sigma_b)
    kappa = math.sqrt(c * c - 1.0)
    z_update = z * c
    sigma_count = z * c / (2.0 * kappa)
    assert sigma_count == pytest.approx(sigma_b, rel=1e-9)
    assert (z_update**-2 + (2.0 * sigma_count) ** -2) ** -0.5 == pytest.approx(z, rel=1e-9)
    acc = get_accountant("rdp")
    split = ComposedEvent((GaussianEvent(z_update), GaussianEvent(2.0 * sigma_count)))
    assert acc.epsilon(split, 1e-5) == pytest.approx(acc.epsilon(GaussianEvent(z), 1e-5), rel=1e-6)


@pytest.mark.parametrize(("aggregation", "dp"), [("plain", "central"), ("secagg+", "distributed")])
def test_adaptive_records_the_joint_mechanism_event(
    tmp_path: Path, aggregation: str, dp: str
) -> None:
    cfg = RunConfig(**{**TINY, "aggregation": aggregation, "dp": dp, **ADAPTIVE})
    layout = TensorLayout.from_tensors({"w": np.zeros(6)})
    model = ModelInfo(layout, np.zeros(6), {"name": "t"})
    with Orchestrator(cfg.replace(out=str(tmp_path / "r")), model) as orch:
        plan = orch.next_round()
        assert plan is not None and plan.clip == cfg.clip
        joint = mechanism_config(cfg, 1.0)
        assert joint.clip == pytest.approx(joint_clip(1.0, count_noise_std(cfg)))
        assert plan.event == mechanism_event(joint, 7)  # d + 1 coordinates, clip c_J
        assert orch.backend.dimension == 7


@settings(max_examples=40, deadline=None)
@given(rounds=st.integers(1, 40), z=st.floats(0.5, 4.0))
def test_ftrl_events_compose_to_kmsttx_theorem_4_1(rounds: int, z: float) -> None:
    """One participation: after every t the recorded events compose (RDP) to ρ-zCDP with
    ρ = ⌈log₂(t + 1)⌉·Δ²/(2σ²) — the closed form of KMSTTX Thm 4.1 — and to the tree's
    cumulative event."""
    cfg = RunConfig(
        **{**TINY, "aggregation": "plain", "dp": "central", "mechanism": "ftrl", "rounds": rounds}
    )
    d = 5
    conf = ftrl_config(cfg, z)
    events = ftrl_events(conf, d, rounds)
    grows = [e.load_increment for e in events if isinstance(e, TreeIncrementEvent)]
    assert len(grows) == rounds  # one node per round, flat rounds included
    assert sum(g > 0 for g in grows) == rounds.bit_length()
    acc = get_accountant("rdp")
    sigma, delta_grid = conf.grid_sigma(d), conf.grid_sensitivity(d)
    for t in (1, rounds // 2 or 1, rounds):
        rho = math.ceil(math.log2(t + 1)) * delta_grid**2 / (2.0 * sigma**2)
        composed = compose(events[:t])
        assert acc.epsilon(composed, 1e-5) == pytest.approx(
            acc.epsilon(ZCDPEvent(rho), 1e-5), rel=1e-9
        )
        assert acc.epsilon(composed, 1e-5) == pytest.approx(
            acc.epsilon(conf.event(t, d), 1e-5), rel=1e-9
        )


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.integers(1, 48),
    k=st.integers(1, 6),
    b=st.integers(1, 8),
)
def test_ftrl_increments_never_undercount(rounds: int, k: int, b: int) -> None:
    """Σ of recorded sensitivity² over the first t rounds ≥ S_t for every t (sound prefix)."""
    conf = DpFtrlConfig(
        clip=1.0, noise_multiplier=1.0, expected_cohort=4, min_separation=b, max_participations=k
    )
    events = ftrl_events(conf, 3, rounds)
    unit = conf.grid_sensitivity(3) ** 2 / (2.0 * conf.grid_sigma(3) ** 2)
    total = 0.0
    for t, e in enumerate(events, start=1):
        assert isinstance(e, TreeIncrementEvent)
        total += e.rho / unit
        assert total >= conf.node_load(t) * (1 - 1e-12)


# ------------------------------------------------------------------------- loop runs


@pytest.mark.parametrize(
    ("aggregation", "dp"),
    [("plain", "central"), ("secagg+", "central"), ("secagg+", "distributed"), ("he", "central")],
)
def test_adaptive_clipping_end_to_end(tmp_path: Path, aggregation: str, dp: str) -> None:
    res = run_simulation(_cfg(tmp_path / "run", aggregation=aggregation, dp=dp, **ADAPTIVE))
    assert res.rounds_completed >= 2
    clips = [m["adaptive_clip"] for m in res.metrics]
    for before, after in itertools.pairwise(clips):
        assert after["clip"] == before["next_clip"]  # the announced clip is the one used
    entries = _verified_entries(tmp_path / "run")
    started = next(e for e in entries if e.kind == "run_started")
    assert started.payload["dp"]["adaptive_clipping"]["target_quantile"] == 0.5
    projected = [e for e in entries if e.kind == "round_projected"]
    completed = [e for e in entries if e.kind == "round_completed"]
    for p, c, m in zip(projected, completed, clips, strict=True):
        assert p.payload["aggregation"]["adaptive_clip"]["clip"] == m["clip"]
        assert c.payload["aggregation"]["adaptive_clip"]["next_clip"] == m["next_clip"]
        assert c.payload["dp_event"] == p.payload["dp_event"]


@pytest.mark.parametrize(
    ("aggregation", "accountant"), [("plain", "rdp"), ("secagg+", "rdp"), ("plain", "pld")]
)
def test_ftrl_end_to_end(tmp_path: Path, aggregation: str, accountant: str) -> None:
    cfg = _cfg(
        tmp_path / "run",
        aggregation=aggregation,
        dp="central",
        mechanism="ftrl",
        noise_multiplier=1.0,
        target_epsilon=50.0,
        ftrl_max_participations=4,
        accountant=accountant,
    )
    res = run_simulation(cfg)
    assert res.rounds_completed == 3
    entries = _verified_entries(tmp_path / "run")
    started = next(e for e in entries if e.kind == "run_started")
    assert started.payload["dp"]["mechanism"]["mechanism"].startswith("dp_ftrl")
    events = [e.payload["dp_event"] for e in entries if e.kind == "round_completed"]
    conf = ftrl_config(cfg, 1.0)
    assert events == [e.to_dict() for e in ftrl_events(conf, 1168, 3)]
    whole = {
        name: get_accountant(name).epsilon(conf.event(3, 1168), cfg.delta)
        for name in ("rdp", "pld")
    }
    assert res.epsilon == pytest.approx(whole[accountant], rel=1e-9)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["guarantee"]["epsilon"]["rdp"] == pytest.approx(whole["rdp"], rel=1e-12)
    # The ledger accounted with PLD/PRV: the release is one Gaussian (dp.md §3.2), below RDP
    # and equal to the tree's cumulative event.
    pld = spend.epsilon_of_events(events, "pld", cfg.delta, "add-remove")
    prv = spend.epsilon_of_events(events, "prv", cfg.delta, "add-remove")
    assert pld[1] is None and prv[1] is None
    assert pld[0] < 0.97 * whole["rdp"] and prv[0] < whole["rdp"]
    assert pld[0] == pytest.approx(whole["pld"], rel=1e-12)
    assert report["guarantee"]["epsilon"]["pld"] == pytest.approx(pld[0], rel=1e-9)
    assert any("central noise" in t for t in report["threat_model"]["dp"]["trust"])


def test_ftrl_calibrated_with_pld_needs_less_noise() -> None:
    """The loop calibrates the per-node z with the run's accountant (RunConfig.accountant):
    for the same target ε, PLD's z is smaller, and it meets the target under PLD only."""
    d = 1168
    base = {**TINY, "aggregation": "plain", "dp": "central", "mechanism": "ftrl", "rounds": 10}
    z = {
        name: ftrl_noise_multiplier(RunConfig(**{**base, "accountant": name}), d)
        for name in ("rdp", "pld", "prv")
    }
    assert z["pld"] < 0.96 * z["rdp"] and z["prv"] < z["rdp"]
    events = compose(ftrl_events(ftrl_config(RunConfig(**base), z["pld"]), d, 10))
    assert get_accountant("pld").epsilon(events, 1e-5) <= 8.0
    assert get_accountant("rdp").epsilon(events, 1e-5) > 8.0


def test_old_zcdp_ledgers_account_as_before() -> None:
    """Ledgers written before the tree event hold zcdp/noop round events: RDP gives the same
    ε as the new events; PLD/PRV still refuse them (no dominating pair is recorded)."""
    conf = DpFtrlConfig(
        clip=0.5, noise_multiplier=1.0, expected_cohort=4, min_separation=1, max_participations=1
    )
    d = 50
    sigma, sens = float(conf.grid_sigma(d)), conf.grid_sensitivity(d)
    old = [
        ZCDPEvent(sens * sens * g / (2.0 * sigma * sigma)).to_dict() if g > 0 else {"type": "noop"}
        for g in (conf.node_load(t) - conf.node_load(t - 1) for t in range(1, 11))
    ]
    new = [e.to_dict() for e in ftrl_events(conf, d, 10)]
    assert spend.epsilon_of_events(old, "rdp", 1e-5, "add-remove") == (
        spend.epsilon_of_events(new, "rdp", 1e-5, "add-remove")
    )
    for name in ("pld", "prv"):
        eps, why = spend.epsilon_of_events(old, name, 1e-5, "add-remove")
        assert math.isinf(eps) and why is not None


class _Crash(Exception):
    pass


def test_ftrl_resume_neither_loses_nor_repeats_tree_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = {
        "aggregation": "plain",
        "dp": "central",
        "mechanism": "ftrl",
        "noise_multiplier": 1.0,
        "target_epsilon": 50.0,
        "rounds": 4,
        "ftrl_max_participations": 4,
    }
    ref = run_simulation(_cfg(tmp_path / "ref", **kw))
    out = tmp_path / "crash"
    cfg = _cfg(out, **kw)
    real_save = ckpt_mod.save

    def crash_at_round_2(run_dir: Path, ck: ckpt_mod.Checkpoint) -> None:
        if ck.rounds_done == 3:  # tree state of round 2 written, checkpoint not
            raise _Crash
        real_save(run_dir, ck)

    monkeypatch.setattr(orch_mod.ckpt_mod, "save", crash_at_round_2)
    with pytest.raises(_Crash):
        run_simulation(cfg)
    monkeypatch.setattr(orch_mod.ckpt_mod, "save", real_save)
    ck = ckpt_mod.load(out)
    assert ck is not None and ck.rounds_done == 2
    assert ck.mechanism_state is not None and ck.mechanism_state["ftrl_rounds"] == 2
    assert '"noisy"' not in (out / "checkpoint.json").read_text()  # only n and a digest
    res = run_simulation(cfg)
    assert res.resumed_from == 2 and res.rounds_completed == 4
    assert res.epsilon == pytest.approx(ref.epsilon, rel=1e-12)
    ck = ckpt_mod.load(out)
    assert ck is not None and ck.mechanism_state is not None
    assert ck.mechanism_state["ftrl_rounds"] == 4  # not 5: the crashed round was not kept
    entries = _verified_entries(out)
    kinds = [(e.kind, e.round_id) for e in entries]
    assert ("round_aborted", 2) in kinds
    assert [r for k, r in kinds if k == "round_completed"] == [0, 1, 2, 3]
    # the secret tree lives in the key directory, never in the run directory
    assert not list(out.glob("*ftrl*"))


def test_ftrl_resume_without_the_secret_tree_state_is_refused(tmp_path: Path) -> None:
    kw: dict[str, Any] = {
        "aggregation": "plain",
        "dp": "central",
        "mechanism": "ftrl",
        "noise_multiplier": 1.0,
        "target_epsilon": 50.0,
        "rounds": 1,
        "ftrl_max_participations": 4,
        "key_dir": str(tmp_path / "keys"),
    }
    cfg = _cfg(tmp_path / "run", **kw)
    res = run_simulation(cfg)
    states = list((tmp_path / "keys").glob("*.ftrl.*.json"))
    assert states and all(f.stat().st_mode & 0o077 == 0 for f in states)  # owner-only
    for f in states:
        f.unlink()
    with pytest.raises(ResumeError):
        run_simulation(cfg.replace(rounds=2))
    assert res.rounds_completed == 1


def test_ftrl_state_roundtrip_continues_the_same_prefix() -> None:
    conf = DpFtrlConfig(
        clip=1.0, noise_multiplier=1.0, expected_cohort=2, min_separation=1, max_participations=9
    )
    a = DpFtrlServer(conf, 3)
    for t in range(5):
        a.add(np.full(3, 0.1 * t), participants=[t % 2])
    b = DpFtrlServer.restore(conf, 3, a.state())
    assert b.rounds == 5 and np.array_equal(b.noisy_prefix_mean(), a.noisy_prefix_mean())
    assert b.eligible(0) and not DpFtrlServer.restore(
        DpFtrlConfig(
            clip=1.0,
            noise_multiplier=1.0,
            expected_cohort=2,
            min_separation=1,
            max_participations=2,
        ),
        3,
        a.state(),
    ).eligible(0)


# ------------------------------------------------------------------ quantile tracking


def test_adaptive_clip_moves_to_the_target_quantile(tmp_path: Path) -> None:
    """Synthetic norms: client i's update has norm r_i (r spread 0.1 … 5); starting far away
    (C = 20), the clip the loop uses converges near the target quantile of the r_i."""
    n, d, target = 40, 8, 0.3
    norms = np.geomspace(0.1, 5.0, n)
    cfg = RunConfig(
        name="quantile",
        model="tiny",
        n_clients=n,
        rounds=60,
        sampling_rate=1.0,
        dropout_rate=0.0,
        aggregation="plain",
        dp="central",
        clip=20.0,
        clip_mode="adaptive",
        clip_target_quantile=target,
        clip_lr=0.3,
        noise_multiplier=0.5,
        epsilon_budget=1e9,
        target_epsilon=1e9,
        allow_large_delta=True,
        out=str(tmp_path / "q"),
    )
    layout = TensorLayout.from_tensors({"w": np.zeros(d)})
    rng = np.random.default_rng(0)
    with Orchestrator(cfg, ModelInfo(layout, np.zeros(d), {"name": "synthetic"})) as orch:
        digest = layout.digest()
        while (plan := orch.next_round()) is not None:
            assert plan.clip is not None
            updates = {}
            for c in plan.cohort:
                u = rng.standard_normal(d)
                u *= norms[c] / np.linalg.norm(u)
                scale = min(1.0, plan.clip / norms[c])
                updates[c] = ClientUpdate(
                    c, plan.index, digest, u * scale, 1, 0.0, 1, int(norms[c] <= plan.clip)
                )
            orch.complete_round(plan, updates)
        final = orch.adaptive.clip if orch.adaptive is not None else math.nan
        orch.finish()
    fraction_below = float(np.mean(norms <= final))
    assert abs(fraction_below - target) < 0.15
    assert final < 5.0  # moved far from the initial 20
    _verified_entries(tmp_path / "q")


def test_adaptive_loop_refuses_a_missing_bit_or_an_overlong_update() -> None:
    cfg = RunConfig(**{**TINY, "aggregation": "plain", "dp": "central", **ADAPTIVE})
    loop = AdaptiveClipLoop(cfg, 3, 1.0)
    with pytest.raises(ConfigurationError) as info:
        loop.encode(0, np.zeros(3), None)
    assert info.value.parameter == "clip_indicator"
    with pytest.raises(ConfigurationError) as info:
        loop.encode(0, np.full(3, 1.0), 1)
    assert info.value.parameter == "delta"
    v = loop.encode(0, np.array([0.3, 0.0, 0.0]), 1)
    assert float(np.linalg.norm(v)) <= loop.c_joint + 1e-12


# ------------------------------------------------------------------ public API


def test_federation_api_runs_adaptive_clipping_and_dp_ftrl(tmp_path: Path) -> None:
    from securefl.api import DPFTRL, AdaptiveClip, CentralDP, Federation, Plain, Poisson
    from securefl.audit.ledger import verify_ledger

    rng = np.random.default_rng(1)
    for name, privacy in (
        (
            "adaptive",
            CentralDP(
                clip=1.0,
                noise_multiplier=2.0,
                adaptive_clip=AdaptiveClip(target_quantile=0.9, count_noise_std=2.0),
            ),
        ),
        ("ftrl", CentralDP(clip=1.0, noise_multiplier=3.0, ftrl=DPFTRL(max_participations=3))),
    ):
        fed = Federation(
            population=8,
            rounds=3,
            run_dir=tmp_path / name,
            aggregation=Plain(),
            privacy=privacy,
            sampling=Poisson(1.0),
            allow_large_delta=True,
        )
        clips = []
        for rnd in fed.rounds({"w": np.zeros(4)}):
            clips.append(rnd.clip)
            for c in rnd.cohort:
                rnd.submit(c, {"w": rng.standard_normal(4) * 3.0})
            rnd.finish()
        assert fed.result is not None and fed.result.rounds_completed == 3
        assert verify_ledger(tmp_path / name / "ledger.sqlite").ok
        if name == "adaptive":
            assert clips[0] == 1.0 and clips[1] != clips[0]  # all clipped: the clip grows
            assert fed.cfg.clip_mode == "adaptive"
        else:
            assert clips == [1.0, 1.0, 1.0] and fed.cfg.mechanism == "ftrl"


def test_adaptive_clip_survives_resume(tmp_path: Path) -> None:
    """The clip is checkpointed with the round that produced it: a resumed run announces
    exactly the next_clip its last completed round recorded."""
    d = 4
    cfg = RunConfig(
        **{
            **TINY,
            **ADAPTIVE,
            "aggregation": "plain",
            "dp": "central",
            "rounds": 2,
            "out": str(tmp_path / "r"),
        }
    )
    layout = TensorLayout.from_tensors({"w": np.zeros(d)})
    model = ModelInfo(layout, np.zeros(d), {"name": "synthetic"})

    def run(c: RunConfig) -> list[dict[str, Any]]:
        with Orchestrator(c, model) as orch:
            while (plan := orch.next_round()) is not None:
                assert plan.clip is not None
                ups = {
                    i: ClientUpdate(
                        i, plan.index, layout.digest(), np.full(d, plan.clip / 2), 1, 0.0, 1, 1
                    )
                    for i in plan.cohort
                }
                orch.complete_round(plan, ups)
            return [dict(m["adaptive_clip"]) for m in orch.metrics]

    first = run(cfg)
    assert len(first) == 2
    more = run(cfg.replace(rounds=3))
    assert more[2]["clip"] == first[1]["next_clip"]
    ck = ckpt_mod.load(tmp_path / "r")
    assert ck is not None and ck.mechanism_state is not None
    assert ck.mechanism_state["adaptive_clip"] == more[2]["next_clip"]
