"""Cryptographic samplers: exactness checked statistically against the exact pmf/cdf.

Keys are fixed, so each test is deterministic; the stated false-failure rate is what the
test would have if the key were drawn at random (i.e. how unlucky a fixed key can be).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from securefl.dp import sampling as S
from securefl.dp.errors import InvalidParameterError
from securefl.dp.sampling import (
    CryptoRandom,
    discrete_gaussian,
    discrete_gaussian_pmf,
    discrete_laplace,
    uniform_integers,
)

Z5 = 5.0  # 5-sigma thresholds: two-sided false-failure rate 5.7e-7 per check


def _exact_moments(sigma: float) -> tuple[float, float, float]:
    """E[Y²], P(|Y| > 2σ) and P(Y = 0) of N_Z(0, σ²) from the exact pmf."""
    bound = int(40 * sigma + 10)
    ys = np.arange(-bound, bound + 1)
    p = discrete_gaussian_pmf(ys, sigma)
    return float((ys**2 * p).sum()), float(p[np.abs(ys) > 2 * sigma].sum()), float(p[bound])


@pytest.mark.parametrize(
    ("sigma", "n", "method"),
    [
        (1, 200_000, "fast"),
        (3, 200_000, "fast"),
        (100, 400_000, "fast"),
        (70_000, 100_000, "fast"),
        (300_000, 50_000, "fast"),
        (3, 40_000, "integer"),
        (100, 40_000, "integer"),
        (1.5, 4_000, "fast"),
    ],
)
def test_discrete_gaussian_moments_and_tails(sigma: float, n: int, method: str) -> None:
    """Mean, second moment, tail mass and P(0) within 5 standard errors (rate ≤ 2.3e-6)."""
    y = discrete_gaussian(n, sigma, rng=CryptoRandom(b"moments".ljust(32, b"\0")), method=method)
    assert y.dtype == np.int64 and y.shape == (n,)
    m2, tail, p0 = _exact_moments(float(sigma))
    assert abs(y.mean()) <= Z5 * math.sqrt(m2 / n)
    sd_m2 = math.sqrt((3 * m2**2) / n)  # Var(Y²) ≤ E[Y⁴] ≈ 3σ⁴
    assert abs(float(np.mean(y.astype(np.float64) ** 2)) - m2) <= Z5 * sd_m2
    emp_tail = float(np.mean(np.abs(y) > 2 * sigma))
    assert abs(emp_tail - tail) <= Z5 * math.sqrt(tail * (1 - tail) / n)
    emp0 = float(np.mean(y == 0))
    assert abs(emp0 - p0) <= Z5 * math.sqrt(p0 * (1 - p0) / n)


@pytest.mark.parametrize("method", ["fast", "integer"])
def test_discrete_gaussian_chi_square_small_sigma(method: str) -> None:
    """Pearson χ² against the exact pmf of N_Z(0, 2²), bins |y| ≤ 8 plus two tails.
    Fails if p < 1e-6 (false-failure rate 1e-6)."""
    n, sigma = 100_000, 2.0
    y = discrete_gaussian(n, 2, rng=CryptoRandom(b"chi2".ljust(32, b"\0")), method=method)
    edges = np.arange(-8, 9)
    p = discrete_gaussian_pmf(edges, sigma)
    p_low = float(discrete_gaussian_pmf(np.arange(-200, -8), sigma).sum())
    expected = np.concatenate([[p_low], p, [p_low]]) * n
    observed = np.concatenate(
        [[np.sum(y < -8)], [np.sum(y == k) for k in edges], [np.sum(y > 8)]]
    ).astype(np.float64)
    _, pvalue = stats.chisquare(observed, expected * observed.sum() / expected.sum())
    assert pvalue > 1e-6


def test_discrete_gaussian_ks_large_sigma() -> None:
    """Kolmogorov distance to the exact cdf of N_Z(0, 100²) below the DKW bound
    ε = √(ln(2/α)/(2n)) with α = 1e-6 (false-failure rate ≤ 1e-6, valid for discrete F)."""
    n, sigma = 1 << 18, 100
    y = np.sort(discrete_gaussian(n, sigma, rng=CryptoRandom(b"ks".ljust(32, b"\0"))))
    support = np.arange(-4000, 4001)
    cdf = np.cumsum(discrete_gaussian_pmf(support, sigma))
    emp = np.searchsorted(y, support, side="right") / n
    assert float(np.max(np.abs(emp - cdf))) <= math.sqrt(math.log(2 / 1e-6) / (2 * n))


def test_discrete_laplace_chi_square() -> None:
    """χ² against P(y) = (1−e^{−1/t})/(1+e^{−1/t})·e^{−|y|/t}, t = 3 (false-failure 1e-6)."""
    n, t = 100_000, 3
    y = discrete_laplace(n, t, rng=CryptoRandom(b"dlap".ljust(32, b"\0")))
    r = math.exp(-1 / t)
    ks = np.arange(-15, 16)
    p = (1 - r) / (1 + r) * np.exp(-np.abs(ks) / t)
    tail = (1 - p.sum()) / 2
    expected = np.concatenate([[tail], p, [tail]]) * n
    observed = np.concatenate(
        [[np.sum(y < -15)], [np.sum(y == k) for k in ks], [np.sum(y > 15)]]
    ).astype(np.float64)
    _, pvalue = stats.chisquare(observed, expected)
    assert pvalue > 1e-6


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(7, 2)])
def test_bernoulli_exp_paths_agree_with_exp(gamma: Fraction) -> None:
    """Both vectorised Bernoulli(exp(−γ)) paths within 5 SE of e^{−γ} (rate 1.2e-6)."""
    n = 60_000
    rng = CryptoRandom(b"bern".ljust(32, b"\0"))
    num = np.full(n, gamma.numerator, dtype=np.int64)
    p = math.exp(-float(gamma))
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    fast = S._bern_exp_fast(rng, num, gamma.denominator).mean()
    whole = S._bern_exp_int(rng, num // gamma.denominator)
    frac = S._bern_exp_frac(rng, num % gamma.denominator, gamma.denominator)
    assert abs(fast - p) <= Z5 * se + 1e-12
    assert abs((whole & frac).mean() - p) <= Z5 * se + 1e-12


def test_certified_comparison_settles_exactly_near_the_threshold() -> None:
    """r placed right at ⌊e^{−γ}·2^64⌋ is ambiguous for floats; the exact path decides it
    and agrees with a 60-digit computation; far-away r are decided as expected."""
    rng = CryptoRandom(b"edge".ljust(32, b"\0"))
    gamma = Fraction(5, 7)
    with localcontext() as ctx:
        ctx.prec = 60
        edge = int((-(Decimal(5) / Decimal(7))).exp() * Decimal(2**64))
    assert S._exact_less_than_exp(edge - 5, gamma, rng)
    assert not S._exact_less_than_exp(edge + 5, gamma, rng)
    # u < 2^−64 vs e^−1000 ≈ 2^−1443: needs ~22 more words; True only w.p. e^−1000
    assert not S._exact_less_than_exp(0, Fraction(1000), rng)
    # u ≥ 1 − 2^−64 > e^(−10⁻⁶): certainly not below
    assert not S._exact_less_than_exp(2**64 - 1, Fraction(1, 10**6), rng)


def test_float_exp_accuracy_assumption() -> None:
    """The fast path assumes float64 exp(−num/den) is within 2^−40 relative of the truth
    (the margin is 2^−20); check it against Decimal on spread-out arguments."""
    rng = np.random.default_rng(0)  # test inputs only, not noise
    nums = rng.integers(0, 45 * 10**6, size=300)
    den = 10**6 + 3
    p = np.exp(-(nums.astype(np.float64) / den))
    with localcontext() as ctx:
        ctx.prec = 40
        for num, approx in zip(nums, p, strict=True):
            exact = (-(Decimal(int(num)) / Decimal(den))).exp()
            assert abs(Decimal(float(approx)) - exact) <= exact * Decimal(2) ** -40


def test_uniform_integers_have_no_modulo_bias() -> None:
    """χ² for [0, 7) (not a power of two) with n = 70 000 (false-failure 1e-6)."""
    x = uniform_integers(70_000, 0, 7, rng=CryptoRandom(b"unif".ljust(32, b"\0")))
    assert x.min() == 0 and x.max() == 6
    _, pvalue = stats.chisquare(np.bincount(x, minlength=7))
    assert pvalue > 1e-6
    y = uniform_integers(10, -5, -3, rng=CryptoRandom())
    assert set(y.tolist()) <= {-5, -4}


def test_keys_make_streams_reproducible_and_default_is_fresh() -> None:
    k = b"k" * 32
    a = discrete_gaussian(1000, 10, rng=CryptoRandom(k))
    b = discrete_gaussian(1000, 10, rng=CryptoRandom(k))
    c = discrete_gaussian(1000, 10, rng=CryptoRandom(b"j" * 32))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(discrete_gaussian(1000, 10), discrete_gaussian(1000, 10))


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: discrete_gaussian(10, 0), "sigma"),
        (lambda: discrete_gaussian(10, -1.0), "sigma"),
        (lambda: discrete_gaussian(10, math.nan), "sigma"),
        (lambda: discrete_gaussian(10, math.inf), "sigma"),
        (lambda: discrete_gaussian(-1, 1), "size"),
        (lambda: discrete_gaussian(10, 1, method="float"), "method"),
        (lambda: discrete_laplace(10, 0), "scale"),
        (lambda: uniform_integers(10, 3, 3), "high"),
        (lambda: CryptoRandom(b"short"), "key"),
    ],
)
def test_sampler_parameters_are_validated(call: object, parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        call()  # type: ignore[operator]
    assert info.value.parameter == parameter


class _RiggedRandom(CryptoRandom):
    """First uint64 draw forced to given words (edge cases of the lazy uniform); the rest of
    the stream is the real keystream."""

    def __init__(self, first: list[int]) -> None:
        super().__init__(b"rigged".ljust(32, b"\0"))
        self._first: list[int] | None = first

    def uint64(self, n: int) -> np.ndarray:
        if self._first is not None and n == len(self._first):
            out = np.array(self._first, dtype=np.uint64)
            self._first = None
            return out
        return super().uint64(n)


def test_geometric_inversion_exact_fallback_on_edge_words() -> None:
    """u with top word 0 (u < 2^−64: X is huge) and words at the boundaries e^{−x/t}·2^64
    go through the exact path and still give the exact X = #{x ≥ 1 : u < e^{−x/t}}."""
    t = 3
    with localcontext() as ctx:
        ctx.prec = 60
        edge2 = int((-(Decimal(2) / Decimal(t))).exp() * Decimal(2**64))
    words = [0, edge2 - 1, edge2 + 1, 2**64 - 1]
    x, _ = S._geometric_inversion(_RiggedRandom(words), len(words), t)
    assert x[0] >= 44 * t - 1  # u < 2^−64 = e^{−44.36}
    assert x[1] == 2  # u just below e^{−2/3}: exactly 2 thresholds above u
    assert x[2] == 1
    assert x[3] == 0
