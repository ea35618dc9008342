"""Empirical privacy audit in ONE training run (Steinke, Nasr, Jagielski, NeurIPS 2023).

m canaries are each included in the training set independently with probability 1/2; after a
single training run the auditor scores every canary, guesses "in" for the k₊ highest scores and
"out" for the k₋ lowest, and abstains on the rest. If the training algorithm is (ε, δ)-DP, the
number of correct guesses W out of r = k₊ + k₋ is stochastically dominated as in the paper's
Theorem 3 (with the δ term of its Appendix D):

    P[W ≥ v] ≤ P[Bin(r, e^ε/(1+e^ε)) ≥ v] + 2mδ · max_{1≤i≤v} P[v−i ≤ Bin(r, ·) < v] / i.

So the largest ε whose bound stays below β is a lower bound on the true ε with confidence
1 − β. A lower bound above the theoretical ε means the claimed guarantee is FALSE (a bug in
clipping, noise, sampling or accounting). The converse is not evidence of privacy: one-run
black-box audits are far from tight for realistic ε (paper §6).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.audit.ledger import Entry, Ledger
from securefl.crypto.drbg import CtrDrbg
from securefl.errors import ConfigurationError

EMPIRICAL_AUDIT = "empirical_audit"
FloatArray = npt.NDArray[np.float64]


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Probability of ≥ v correct out of r guesses under an (ε, δ)-DP null hypothesis."""
    from scipy import stats

    if not 0 <= v <= r <= m:
        raise ConfigurationError("need 0 <= v <= r <= m", parameter="v")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ConfigurationError("must be finite and >= 0", parameter="epsilon")
    if not 0 <= delta <= 1:
        raise ConfigurationError("must be in [0, 1]", parameter="delta")
    q = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    below = stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - 1 - i, r, q)
    alpha = float(np.max(below / i))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.95
) -> float:
    """Largest ε such that ``p_value(m, r, v, ε, δ) < 1 − confidence`` (0 if none)."""
    if not 0 < confidence < 1:
        raise ConfigurationError("must be in (0, 1)", parameter="confidence")
    beta = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return lo
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guesses(
    scores: npt.ArrayLike, included: npt.ArrayLike, *, k_pos: int, k_neg: int
) -> tuple[int, int]:
    """(r, v): guess "in" for the ``k_pos`` highest scores and "out" for the ``k_neg`` lowest."""
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ConfigurationError(
            "scores and included must be 1-D of equal length", parameter="scores"
        )
    if not np.all(np.isfinite(s)):
        raise ConfigurationError("scores must be finite", parameter="scores")
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > s.size:
        raise ConfigurationError("need k_pos + k_neg <= number of canaries", parameter="k_pos")
    order = np.argsort(s, kind="stable")
    out_idx = order[:k_neg]
    in_idx = order[s.size - k_pos :] if k_pos else order[:0]
    v = int(inc[in_idx].sum() + (~inc[out_idx]).sum())
    return k_pos + k_neg, v


@dataclass(frozen=True)
class AuditResult:
    """ε lower bound of one audit next to the theoretical ε it tests."""

    canaries: int
    guesses: int
    correct: int
    confidence: float
    delta: float
    epsilon_lower_bound: float
    epsilon_theoretical: float | None  # None = no finite claim (non-private)
    method: str = "steinke-nasr-jagielski-2023-one-run"
    mechanism: str | None = None  # what was audited, in words (for the report)
    max_provable_lower_bound: float | None = None  # the bound if every guess were correct

    @property
    def claim_violated(self) -> bool:
        th = self.epsilon_theoretical
        return th is not None and self.epsilon_lower_bound > th

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mechanism": self.mechanism,
            "max_provable_lower_bound": self.max_provable_lower_bound,
            "canaries": self.canaries,
            "guesses": self.guesses,
            "correct": self.correct,
            "confidence": self.confidence,
            "delta": self.delta,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon_theoretical": self.epsilon_theoretical,
            "claim_violated": self.claim_violated,
        }


def audit(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    k_pos: int,
    k_neg: int,
    delta: float,
    confidence: float = 0.95,
    epsilon_theoretical: float | None = None,
) -> AuditResult:
    """Score-based audit; ``k_pos``/``k_neg`` must be fixed BEFORE looking at the scores."""
    inc = np.asarray(included, dtype=bool)
    r, v = guesses(scores, inc, k_pos=k_pos, k_neg=k_neg)
    lb = epsilon_lower_bound(inc.size, r, v, delta=delta, confidence=confidence)
    th = (
        None
        if epsilon_theoretical is None or not math.isfinite(epsilon_theoretical)
        else (float(epsilon_theoretical))
    )
    best = epsilon_lower_bound(inc.size, r, r, delta=delta, confidence=confidence) if r else 0.0
    return AuditResult(inc.size, r, v, confidence, delta, lb, th, max_provable_lower_bound=best)


def record_audit(
    ledger: Ledger,
    result: AuditResult,
    *,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
    timestamp: datetime | str | None = None,
) -> Entry:
    """Append an ``empirical_audit`` entry (reports show it next to the theoretical ε)."""
    payload = {**result.to_dict(), **({"details": details} if details else {})}
    return ledger.append(EMPIRICAL_AUDIT, payload, run_id=run_id, timestamp=timestamp)


# --------------------------------------------------------------------------- demonstration


class _CryptoNormal:
    """Uniforms and Box–Muller normals from the AES-256-CTR DRBG (key from ``os.urandom``).

    DP noise and Poisson coins must come from a cryptographic source (project rule); this is
    floating-point Gaussian noise, adequate for an audit demonstration (Mironov 2012 applies
    to production mechanisms, which use :mod:`securefl.dp.sampling`).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._drbg = CtrDrbg(key or os.urandom(32))

    def uniform(self, n: int) -> FloatArray:
        words = self._drbg.uint64(n)
        return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n: int) -> FloatArray:
        half = (n + 1) // 2
        u1, u2 = self.uniform(half), self.uniform(half)
        rad = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)])
        return z[:n]


@dataclass(frozen=True)
class DemoConfig:
    """Logistic regression on synthetic data plus m "Dirac" canaries.

    Canary i is ``scale·e_i`` on a coordinate no real example uses, with a random label: the
    strongest input-space canary for a linear model (Steinke et al. §7 use the same idea in
    gradient space), so a non-private run is caught with near certainty."""

    private: bool = True
    n_real: int = 500
    canaries: int = 1000
    canary_scale: float = 3.0
    steps: int = 200
    sampling_rate: float = 0.2
    noise_multiplier: float = 1.0
    clip: float = 1.0
    learning_rate: float = 2.0
    delta: float = 1e-5
    k_pos: int = 100
    k_neg: int = 100
    confidence: float = 0.95
    seed: int = 0  # data and canary selection only; noise/sampling use a fresh CSPRNG key


def run_demo(
    cfg: DemoConfig, *, noise_key: bytes | None = None
) -> tuple[AuditResult, dict[str, Any]]:
    """Train once (DP-SGD with per-example clipping and Poisson sampling, or plain GD when
    ``private=False``), then audit. Returns the result and training details for the ledger."""
    rng = np.random.default_rng(cfg.seed)  # data generation only (not a secret)
    m = cfg.canaries
    d = 10 + m
    beta = np.zeros(d)
    beta[:10] = rng.normal(size=10)
    x_real = np.zeros((cfg.n_real, d))
    x_real[:, :10] = rng.normal(size=(cfg.n_real, 10))
    y_real = (x_real @ beta > 0).astype(np.float64)
    x_can = np.zeros((m, d))
    x_can[np.arange(m), 10 + np.arange(m)] = cfg.canary_scale
    y_can = rng.integers(0, 2, size=m).astype(np.float64)
    included = rng.random(m) < 0.5  # the audit's coin flips (independent of training)
    x = np.vstack([x_real, x_can[included]])
    y = np.concatenate([y_real, y_can[included]])
    n = x.shape[0]
    w = np.zeros(d)
    rand = _CryptoNormal(noise_key)
    q = cfg.sampling_rate if cfg.private else 1.0
    for _ in range(cfg.steps):
        if cfg.private:
            batch = rand.uniform(n) < q
            xb, yb = x[batch], y[batch]
        else:
            xb, yb = x, y
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grads = (p - yb)[:, None] * xb
        if cfg.private:
            norms = np.linalg.norm(grads, axis=1)
            grads *= np.minimum(1.0, cfg.clip / np.maximum(norms, 1e-12))[:, None]
            total = grads.sum(axis=0) + cfg.noise_multiplier * cfg.clip * rand.normal(d)
            g = total / (q * n)  # fixed denominator: the expected batch size
        else:
            g = grads.mean(axis=0)
        w -= cfg.learning_rate * g
    margin = (2 * y_can - 1) * (x_can @ w)
    scores = -np.logaddexp(0.0, -margin)  # −loss of each canary's own label
    accuracy = float(np.mean(((x_real @ w) > 0) == (y_real > 0.5)))
    theoretical: float | None = None
    if cfg.private:
        from securefl.dp.accounting import get_accountant
        from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

        event = SelfComposedEvent(
            PoissonSampledEvent(cfg.sampling_rate, GaussianEvent(cfg.noise_multiplier)), cfg.steps
        )
        theoretical = get_accountant("pld").epsilon(event, cfg.delta)
    result = audit(
        scores,
        included,
        k_pos=cfg.k_pos,
        k_neg=cfg.k_neg,
        delta=cfg.delta if cfg.private else 0.0,
        confidence=cfg.confidence,
        epsilon_theoretical=theoretical,
    )
    details = {
        "private": cfg.private,
        "model": "logistic regression, synthetic data, Dirac canaries with random labels",
        "steps": cfg.steps,
        "sampling_rate": q,
        "noise_multiplier": cfg.noise_multiplier if cfg.private else None,
        "clip": cfg.clip if cfg.private else None,
        "dimension": d,
        "train_accuracy_real": accuracy,
        "canaries_included": int(included.sum()),
        "accountant": "pld" if cfg.private else None,
    }
    return result, details
