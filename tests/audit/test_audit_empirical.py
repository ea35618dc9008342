"""One-run empirical audit (Steinke, Nasr, Jagielski 2023): the bound's arithmetic, and real
training runs — non-private is caught, DP-SGD stays below its theoretical ε, a false claim fails.

False-failure rates: ``test_dp_run_lower_bound_below_theory`` can fail only if the audit's
(1−β) guarantee fails, i.e. with probability ≤ β = 1 % for a correct DP-SGD implementation;
the non-private and false-claim tests use deterministic data and gradient descent (no noise).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from securefl.audit.empirical import (
    AuditResult,
    DemoConfig,
    audit,
    epsilon_lower_bound,
    guesses,
    p_value,
    record_audit,
    run_demo,
)
from securefl.audit.ledger import Ledger
from securefl.audit.report import build_report
from securefl.errors import ConfigurationError


def test_p_value_pure_dp_is_binomial_tail() -> None:
    for eps in (0.0, 0.5, 2.0):
        q = math.exp(eps) / (1 + math.exp(eps))
        direct = sum(math.comb(50, k) * q**k * (1 - q) ** (50 - k) for k in range(40, 51))
        assert p_value(100, 50, 40, eps) == pytest.approx(direct, rel=1e-9)


def test_p_value_delta_term_matches_definition() -> None:
    m, r, v, eps, delta = 200, 60, 45, 1.0, 1e-4
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    alpha = max(sum(stats.binom.pmf(j, r, q) for j in range(v - i, v)) / i for i in range(1, v + 1))
    assert p_value(m, r, v, eps, delta) == pytest.approx(tail + 2 * m * delta * alpha, rel=1e-9)
    assert p_value(m, r, v, eps, delta) >= p_value(m, r, v, eps, 0.0)


def test_lower_bound_properties() -> None:
    # All r guesses right: p = q^r, so the bound solves q^r = β exactly.
    lb = epsilon_lower_bound(1000, 200, 200, confidence=0.95)
    q = 0.05 ** (1 / 200)
    assert lb == pytest.approx(math.log(q / (1 - q)), rel=1e-6)
    assert epsilon_lower_bound(1000, 200, 100) == 0.0  # chance level proves nothing
    assert epsilon_lower_bound(1000, 200, 180) < epsilon_lower_bound(1000, 200, 190)
    assert epsilon_lower_bound(1000, 200, 190, confidence=0.99) < epsilon_lower_bound(
        1000, 200, 190, confidence=0.9
    )
    assert epsilon_lower_bound(1000, 200, 190, delta=1e-3) <= epsilon_lower_bound(1000, 200, 190)
    lb = epsilon_lower_bound(1000, 200, 190)
    assert p_value(1000, 200, 190, lb) < 0.05 <= p_value(1000, 200, 190, lb + 1e-6)


def test_guesses_and_validation() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    included = np.array([True, False, True, True, False])
    assert guesses(scores, included, k_pos=2, k_neg=2) == (4, 3)
    with pytest.raises(ConfigurationError):
        guesses(scores, included, k_pos=4, k_neg=2)
    with pytest.raises(ConfigurationError):
        guesses(np.array([np.nan, 1, 2, 3, 4]), included, k_pos=1, k_neg=1)
    with pytest.raises(ConfigurationError):
        p_value(10, 5, 6, 1.0)


def test_non_private_run_has_high_lower_bound() -> None:
    result, details = run_demo(DemoConfig(private=False, steps=100, learning_rate=20.0))
    assert details["train_accuracy_real"] > 0.9
    assert result.correct >= 195 and result.epsilon_lower_bound > 3.5
    assert result.epsilon_theoretical is None and not result.claim_violated


def test_dp_run_lower_bound_below_theory() -> None:
    cfg = DemoConfig(
        private=True, noise_multiplier=1.5, sampling_rate=0.1, steps=100, confidence=0.99
    )
    result, details = run_demo(cfg)
    assert result.epsilon_theoretical is not None and 2.0 < result.epsilon_theoretical < 6.0
    assert result.epsilon_lower_bound <= result.epsilon_theoretical
    assert not result.claim_violated
    assert details["train_accuracy_real"] > 0.85  # the DP model still learned the task


def test_false_claim_is_flagged(tmp_path: Path) -> None:
    """A run with almost no noise that CLAIMS the ε of z = 1.5 is caught by the audit."""
    from securefl.dp.accounting import get_accountant
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

    cfg = DemoConfig(private=True, noise_multiplier=0.05, sampling_rate=1.0, steps=30)
    honest, _ = run_demo(cfg)
    claimed = get_accountant("pld").epsilon(
        SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(1.5)), 100), 1e-5
    )
    lying = dataclasses.replace(honest, epsilon_theoretical=claimed)
    assert lying.epsilon_lower_bound > claimed and lying.claim_violated
    from securefl.audit.keys import generate_signing_key

    with Ledger(tmp_path / "l2.db", generate_signing_key(), run_id="run-x") as ledger:
        record_audit(ledger, lying, details={"note": "deliberately false claim"})
        rep = build_report(ledger, accountants=("rdp",))
    assert rep["empirical_audits"][0]["claim_violated"] is True
    assert any("claim FAILS" in c for c in rep["caveats"])


def test_audit_result_roundtrip() -> None:
    r = audit(
        [3.0, 2.0, 1.0, 0.0],
        [True, True, False, False],
        k_pos=1,
        k_neg=1,
        delta=0.0,
        epsilon_theoretical=math.inf,
    )
    assert isinstance(r, AuditResult) and r.epsilon_theoretical is None
    assert r.to_dict()["correct"] == 2
