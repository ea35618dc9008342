"""Client-level canaries (Andrew et al. 2024) with the one-run test (Steinke et al. 2023),
end to end on a small DP-FedAvg simulation in numpy.

False-failure rate: ``test_noisy_run_stays_below_theory`` fails only if the audit's 95 %
guarantee fails in one of its trials (probability ≤ 5 % each for a correct implementation;
with the noise used the bound is in practice far below the theoretical ε, see the margin
asserted). The no-noise test fails only if an included canary is never sampled in 20 rounds
(about 100 · 2⁻²⁰ ≈ 1e-4) — its score is then pure background — or if an included canary
sampled only a few times is outscored by the background of the other clients: that background
shrinks as 1/√d, so the no-noise test uses d = 40 000 (at d = 4 000 about one run in ten had
one wrong guess; CI caught it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from securefl.audit.canaries import CanaryDesign, max_provable_lower_bound
from securefl.audit.empirical import _CryptoNormal, epsilon_lower_bound
from securefl.errors import ConfigurationError

D, N_REAL, M, ROUNDS, Q, CLIP, DELTA = 4000, 40, 200, 20, 0.5, 1.0, 1e-5
D_CLEAR = 40_000  # the no-noise test: background per canary ≈ 1/√d, see the module docstring


@dataclass(frozen=True)
class Sim:
    final_delta: np.ndarray
    round_deltas: np.ndarray
    epsilon: float | None  # theoretical ε at DELTA (None for z < 0.5)


def dp_fedavg(design: CanaryDesign, z: float, seed: int = 0) -> Sim:
    """Client-level DP-FedAvg (McMahan et al. 2018): Poisson client sampling with rate Q over
    the real clients and the INCLUDED canaries, updates clipped to CLIP, Gaussian noise
    σ = z·CLIP on the sum, fixed denominator Q·N. Coins and noise from a CSPRNG."""
    d = design.dimension
    data = np.random.default_rng(seed)  # the real clients' "data" only
    real = data.normal(size=(N_REAL, d))
    real *= np.minimum(1.0, CLIP / np.linalg.norm(real, axis=1))[:, None]
    canaries = np.stack([design.canary_update(i) for i in design.included_ids()])
    population = np.vstack([real, canaries])
    rand = _CryptoNormal()
    rounds = []
    for _ in range(ROUNDS):
        chosen = rand.uniform(len(population)) < Q
        total = population[chosen].sum(axis=0) + z * CLIP * rand.normal(d)
        rounds.append(total / (Q * len(population)))
    eps = None
    if z >= 0.5:  # (PLD is slow for tiny z; those runs do not need their theoretical ε)
        from securefl.dp.accounting import get_accountant
        from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

        event = SelfComposedEvent(PoissonSampledEvent(Q, GaussianEvent(z)), ROUNDS)
        eps = get_accountant("pld").epsilon(event, DELTA)
    deltas = np.stack(rounds)
    return Sim(deltas.sum(axis=0), deltas, eps)


def test_design_is_fresh_valid_and_recomputable() -> None:
    a, b = CanaryDesign.create(M, D, CLIP), CanaryDesign.create(M, D, CLIP)
    assert a.inclusion != b.inclusion and a.seed != b.seed  # fresh secret coins each time
    assert 0.3 * M < sum(a.inclusion) < 0.7 * M
    u = a.canary_update(3)
    assert u.shape == (D,) and np.linalg.norm(u) == pytest.approx(CLIP)
    assert np.array_equal(u, a.canary_update(3))  # recomputed from the seed, not stored
    assert abs(float(a.direction(3) @ a.direction(4))) < 5 / math.sqrt(D)  # near-orthogonal
    assert a.guesses == 2 * (M // 4)
    assert "seed" not in repr(a) and "inclusion" not in repr(a)
    assert set(a.describe()) >= {"canaries", "k_pos", "k_neg", "dimension"}
    with pytest.raises(ConfigurationError):
        a.included(M)
    with pytest.raises(ConfigurationError):
        a.scores(np.ones(D + 1))
    with pytest.raises(ConfigurationError):
        a.scores(np.full(D, np.nan))
    with pytest.raises(ConfigurationError):
        CanaryDesign.create(10, D, CLIP, k_pos=8, k_neg=8)


def test_max_provable_bound_is_the_all_correct_bound() -> None:
    # the sample report's old design: 1000 canaries, 100 + 100 guesses, δ = 1e-5 → about 4.2
    assert max_provable_lower_bound(1000, 200, 1e-5) == pytest.approx(4.17, abs=0.01)
    assert max_provable_lower_bound(1000, 200, 1e-5) == epsilon_lower_bound(
        1000, 200, 200, delta=1e-5
    )
    assert max_provable_lower_bound(1000, 1000, 1e-5) > max_provable_lower_bound(1000, 200, 1e-5)


def test_no_noise_is_detected() -> None:
    design = CanaryDesign.create(M, D_CLEAR, CLIP)
    sim = dp_fedavg(design, z=0.0)
    for released in (sim.final_delta, sim.round_deltas):
        result = design.audit(released, DELTA, mechanism="DP-FedAvg without noise")
        assert result.correct == result.guesses  # every canary guess right
        assert result.epsilon_lower_bound == pytest.approx(result.max_provable_lower_bound)
        assert result.epsilon_lower_bound > 3.0
        assert result.to_dict()["mechanism"] == "DP-FedAvg without noise"


def test_noisy_run_stays_below_theory() -> None:
    """z = 3 gives ε ≈ 3.4 at δ = 1e-5, just below the most this design can show (≈ 3.49), so
    the audit could refute the claim if the noise, clipping or sampling were wrong."""
    z = 3.0
    for trial in range(3):
        design = CanaryDesign.create(M, D, CLIP)
        sim = dp_fedavg(design, z=z, seed=trial)
        assert sim.epsilon is not None
        result = design.audit(sim.final_delta, DELTA, epsilon_theoretical=sim.epsilon)
        assert result.max_provable_lower_bound is not None
        assert result.max_provable_lower_bound > sim.epsilon  # the test is not vacuous
        assert not result.claim_violated
        assert result.epsilon_lower_bound < sim.epsilon


def test_false_claim_is_refuted() -> None:
    """Almost no noise but a claim of small ε: the audit refutes it (the design's maximum is
    above the claim, so it can)."""
    design = CanaryDesign.create(M, D, CLIP)
    sim = dp_fedavg(design, z=0.02)
    result = design.audit(sim.final_delta, DELTA, epsilon_theoretical=1.0)
    assert result.claim_violated and result.epsilon_lower_bound > 1.0


def test_report_states_what_the_audit_can_show(tmp_path: Path) -> None:
    from securefl.audit.empirical import record_audit
    from securefl.audit.keys import generate_signing_key
    from securefl.audit.ledger import Ledger
    from securefl.audit.render_md import render_markdown
    from securefl.audit.report import build_report

    from .conftest import TS, run_started_payload

    design = CanaryDesign.create(M, D, CLIP)
    sim = dp_fedavg(design, z=1.0)
    what = f"client-level DP-FedAvg, Poisson q = {Q}, z = 1, {ROUNDS} rounds (final model)"
    result = design.audit(sim.final_delta, DELTA, epsilon_theoretical=sim.epsilon, mechanism=what)
    with Ledger(tmp_path / "l.db", generate_signing_key(), run_id="run-1") as ledger:
        ledger.append("run_started", run_started_payload(), timestamp=TS)
        record_audit(ledger, result, details=design.describe(), timestamp=TS)
        record_audit(ledger, result, run_id="other-demo", timestamp=TS)
        rep = build_report(ledger, generated_at=TS, accountants=("rdp",))
    audit = rep["empirical_audits"][0]
    assert audit["mechanism"] == what and audit["canaries"] == M
    assert audit["max_provable_lower_bound"] == pytest.approx(
        max_provable_lower_bound(M, design.guesses, DELTA)
    )
    md = render_markdown(rep)
    assert f"with {M} canaries and {design.guesses} guesses" in md
    assert "This design can show at most ε ≥" in md
    assert any("other-demo is not a training run in this ledger" in c for c in rep["caveats"])
