"""Continuous Gaussians that dominate the discrete noise the loop adds (``protocols/dp.md`` §3.1).

Theorem (smoothing; proof in ``protocols/dp.md`` §3.1). Let t ∈ (0, σ), s = √(σ² − t²) and
θ(t) = 2·Σ_{k≥1} exp(−2π²t²k²). For any integer query f with ‖f(D) − f(D')‖₂ ≤ Δ, the
discrete Gaussian mechanism f(D) + N_Z(0, σ²)^d is pointwise within a factor e^{±η} of a
post-processing of the *continuous* Gaussian mechanism f(D) + N(0, s² I), with
η = d·log((1 + θ)/(1 − θ)). (The post-processing rounds each coordinate y to a draw of the
discrete Gaussian N_Z(y, t²) centred at y; by Poisson summation its normaliser is
√(2π)·t·(1 ± θ), so the output pmf is ∝ e^{−x²/2σ²} up to (1 ± θ).)

Consequences used by the accountants: any adaptive composition of (Poisson- or fixed-size-)
sampled rounds is, round by round, within e^{±η_r} of a post-processing of the same composition
with the continuous Gaussian of noise multiplier z' = s/Δ; with η = Σ_r η_r,

* (ε, δ):  δ_discrete(ε) ≤ e^{η}·δ_continuous(ε − 2η), so ε_discrete(δ) ≤ ε_cont(δ·e^{−η}) + 2η;
* Rényi:   D_α(discrete round) ≤ D_α(continuous round) + (2α − 1)/(α − 1)·η_r.

For the distributed discrete Gaussian (sum of n ≥ 1 independent N_Z(0, σ²)^d), KLS 2021
(Prop. "sum of discrete Gaussians", the τ of their Thm 1) gives a per-coordinate pointwise
bound of the sum against N_Z(0, nσ²) with τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²k/(k+1)) (σ ≥ ½);
we charge −log(1 − τ) ≥ max(τ, log(1 + τ)) per coordinate (conservative under either reading
of their statement). When that is unusable (σ < ½ or τ ≥ 1) the n−1 other clients' noise is
treated as post-processing (n = 1), which is always sound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import DiscreteGaussianEvent, DistributedDiscreteGaussianEvent

#: Smoothing widths t tried (grid units). Any t ∈ (0, σ) is sound; the grid only trades the
#: loss in z' (≈ t²/2σ² relative) against η (≈ 4dθ(t)).
SMOOTHING_GRID: tuple[float, ...] = (
    0.5,
    0.75,
    1.0,
    1.125,
    1.25,
    1.375,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    4.0,
)


@dataclass(frozen=True)
class GaussianDomination:
    """A continuous Gaussian (multiplier ``noise_multiplier``) within e^{±eta} of a discrete round.

    ``smoothing`` is the t of the theorem; ``contributors`` the number of DDGauss noise terms
    used (1 for the central discrete Gaussian).
    """

    noise_multiplier: float
    eta: float
    smoothing: float
    contributors: int = 1


def smoothing_theta(t: float) -> float:
    """θ(t) = 2·Σ_{k≥1} exp(−2π²t²k²): the relative ripple of Σ_x exp(−(x−y)²/2t²) in y."""
    t = v.positive("t", t)
    total = 0.0
    k = 1
    while True:
        term = math.exp(-2.0 * math.pi**2 * t * t * k * k)
        total += term
        if term <= 1e-18 * total or term == 0.0 or k > 10_000:
            break
        k += 1
    return 2.0 * total


def closeness_eta(t: float) -> float:
    """Per-coordinate η(t) = log((1 + θ)/(1 − θ)) (∞ when θ ≥ 1)."""
    theta = smoothing_theta(t)
    if theta >= 1.0:
        return math.inf
    return math.log1p(theta) - math.log1p(-theta)


def kls_tau(sigma: float, contributors: int) -> float:
    """τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)) (KLS 2021, Thm 1)."""
    n = v.count("contributors", contributors, minimum=1)
    s2 = v.positive("sigma", sigma) ** 2
    if n == 1:
        return 0.0
    # terms decrease towards exp(−2π²σ²); sum exactly for small n, bound the tail otherwise
    head = min(n - 1, 1000)
    tau = sum(math.exp(-2.0 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, head + 1))
    if n - 1 > head:
        tau += (n - 1 - head) * math.exp(-2.0 * math.pi**2 * s2 * head / (head + 1))
    return 10.0 * tau


def _kls_eta(sigma: float, contributors: int) -> float:
    if contributors == 1:
        return 0.0
    if sigma < 0.5:
        return math.inf
    tau = kls_tau(sigma, contributors)
    return math.inf if tau >= 1.0 else -math.log1p(-tau)


def dominate(
    event: DiscreteGaussianEvent | DistributedDiscreteGaussianEvent,
    t: float,
    *,
    contributors: int | None = None,
) -> GaussianDomination | None:
    """The continuous Gaussian of the theorem for smoothing width ``t`` (None if t ≥ σ_total).

    For DDGauss, ``contributors`` (default: ``min_contributors``) is how many clients' noise is
    credited; fewer is always sound (the rest is post-processing).
    """
    t = v.positive("t", t)
    if isinstance(event, DiscreteGaussianEvent):
        n, sigma_total, kls = 1, event.sigma, 0.0
    else:
        n = event.min_contributors if contributors is None else contributors
        n = v.count("contributors", n, minimum=1)
        if n > event.min_contributors:
            raise InvalidParameterError(
                "cannot credit more than min_contributors", parameter="contributors"
            )
        kls = _kls_eta(event.sigma, n)
        sigma_total = event.sigma * math.sqrt(n)
    if not t < sigma_total or math.isinf(kls):
        return None
    s = math.sqrt(sigma_total**2 - t * t)
    eta = event.dimension * (closeness_eta(t) + kls)
    if not math.isfinite(eta):
        return None
    return GaussianDomination(s / event.l2_sensitivity, eta, t, n)


def candidates(
    event: DiscreteGaussianEvent | DistributedDiscreteGaussianEvent,
) -> list[GaussianDomination]:
    """Every domination from :data:`SMOOTHING_GRID` (and t = σ_total/2), both DDGauss credits."""
    ns: Iterable[int] = (
        (1,) if isinstance(event, DiscreteGaussianEvent) else sorted({1, event.min_contributors})
    )
    out: list[GaussianDomination] = []
    for n in ns:
        sigma_total = event.sigma * (1.0 if n == 1 else math.sqrt(n))
        for t in (*SMOOTHING_GRID, sigma_total / 2.0):
            dom = dominate(event, t, contributors=n) if t > 0 else None
            if dom is not None:
                out.append(dom)
    return out


def default_domination(
    event: DiscreteGaussianEvent | DistributedDiscreteGaussianEvent,
) -> GaussianDomination | None:
    """The one domination the (ε, δ) accountants use: the smallest ``eta + (1 − z'/z_max)²``-ish
    proxy, i.e. the largest z' whose η is negligible; None if no t works (σ far below 1)."""
    cands = candidates(event)
    if not cands:
        return None
    z_max = max(c.noise_multiplier for c in cands)

    def cost(c: GaussianDomination) -> float:
        return c.eta + 2.0 * (1.0 - c.noise_multiplier / z_max)

    return min(cands, key=cost)
