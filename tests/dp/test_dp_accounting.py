"""Accountants against dp-accounting on a grid of (q, σ, T, δ); calibration; honesty."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest

from securefl.dp.accounting import (
    RdpAccountant,
    calibrate_noise_multiplier,
    ddgauss_concentrated_epsilon,
    get_accountant,
)
from securefl.dp.errors import InvalidParameterError, UnsupportedEventError
from securefl.dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
)
from securefl.dp.participation import FixedSizeSampling, PoissonSampling

#: The test grid (also used by benchmarks/dp_bench.py for pld_vs_reference_rel_err).
GRID = [
    (0.01, 0.8, 10, 1e-5),
    (0.01, 0.8, 500, 1e-5),
    (0.01, 2.0, 500, 1e-5),
    (0.2, 0.8, 10, 1e-5),
    (0.2, 2.0, 10, 1e-5),
    (0.2, 2.0, 500, 1e-5),
    (1.0, 2.0, 1, 1e-5),
    (1.0, 5.0, 100, 1e-5),
    (0.05, 1.0, 200, 1e-7),
    (0.01, 1.0, 2000, 1e-6),
]


def _ours(q: float, sigma: float, t: int) -> SelfComposedEvent:
    return SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(sigma)), t)


def _theirs(q: float, sigma: float, t: int) -> dpa.DpEvent:
    return dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), t)


def _ref_pld(q: float, sigma: float, t: int, delta: float) -> float:
    acc = dpa.pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(_theirs(q, sigma, t))
    return float(acc.get_epsilon(delta))


def _ref_rdp(q: float, sigma: float, t: int, delta: float) -> float:
    acc = dpa.rdp.RdpAccountant()
    acc.compose(_theirs(q, sigma, t))
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(("q", "sigma", "t", "delta"), GRID)
def test_epsilon_matches_dp_accounting(q: float, sigma: float, t: int, delta: float) -> None:
    """Tolerances: PLD within 1 % of dp-accounting's PLD at interval 1e-4 (ours: 1e-3);
    PRV within its eps_error (0.01) + 1 %; RDP never above dp-accounting's RDP by more than
    2 % (different order grids; dp-accounting drops orders whose series does not converge,
    which only makes it looser) and within 2 % where ε < 20; RDP is never below the
    reference PLD (it is the looser bound)."""
    ref = _ref_pld(q, sigma, t, delta)
    pld = get_accountant("pld").epsilon(_ours(q, sigma, t), delta)
    prv = get_accountant("prv").epsilon(_ours(q, sigma, t), delta)
    rdp = get_accountant("rdp").epsilon(_ours(q, sigma, t), delta)
    assert abs(pld - ref) <= 0.01 * ref
    assert pld >= ref * (1 - 1e-9)  # pessimistic discretisation: an upper bound
    assert abs(prv - ref) <= 0.01 + 0.01 * ref
    ref_rdp = _ref_rdp(q, sigma, t, delta)
    assert rdp <= ref_rdp * 1.02
    if ref_rdp < 20:
        assert abs(rdp - ref_rdp) <= 0.02 * ref_rdp
    assert rdp >= ref


@pytest.mark.parametrize("name", ["pld", "prv", "rdp"])
def test_delta_of_epsilon_inverts_epsilon_of_delta(name: str) -> None:
    acc = get_accountant(name)
    event = _ours(0.05, 1.0, 100)
    eps = acc.epsilon(event, 1e-5)
    # δ(ε(δ)) ≤ δ up to the accountant's own error, and a bit less ε needs more δ
    assert acc.delta(event, eps) <= 1.1e-5
    assert acc.delta(event, 0.8 * eps) > 1e-5


def test_composition_and_noop() -> None:
    pld = get_accountant("pld")
    a = _ours(0.1, 1.0, 20)
    both = ComposedEvent((a, NoOpEvent(), a))
    assert pld.epsilon(both, 1e-5) == pytest.approx(
        pld.epsilon(SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(1.0)), 40), 1e-5),
        rel=1e-6,
    )
    for name in ("pld", "prv", "rdp"):
        acc = get_accountant(name)
        assert acc.epsilon(ComposedEvent((a, NonPrivateEvent())), 1e-5) == math.inf
        assert acc.epsilon(NoOpEvent(), 1e-5) == 0.0


def test_sampling_without_replacement_needs_replace_one_rdp() -> None:
    event = SelfComposedEvent(SampledWithoutReplacementEvent(1000, 50, GaussianEvent(1.0)), 100)
    assert not get_accountant("pld").supports(event)
    assert not get_accountant("prv").supports(event)
    assert not get_accountant("rdp").supports(event)  # add/remove: no fixed-size analysis
    rdp = get_accountant("rdp", neighboring="replace_one")
    ref = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    ref.compose(
        dpa.SelfComposedDpEvent(
            dpa.SampledWithoutReplacementDpEvent(1000, 50, dpa.GaussianDpEvent(1.0)), 100
        )
    )
    assert rdp.epsilon(event, 1e-5) == pytest.approx(ref.get_epsilon(1e-5), rel=0.02)
    with pytest.raises(UnsupportedEventError):
        get_accountant("pld").epsilon(event, 1e-5)


def test_discrete_gaussian_accounting() -> None:
    one_d = DiscreteGaussianEvent(sigma=3.0, l2_sensitivity=1.0, dimension=1)
    pld = get_accountant("pld")
    assert pld.supports(one_d)
    ref = dpa.pld.privacy_loss_distribution.from_discrete_gaussian_mechanism(
        3.0, sensitivity=1, value_discretization_interval=1e-4
    )
    assert pld.epsilon(one_d, 1e-5) == pytest.approx(ref.get_epsilon_for_delta(1e-5), rel=0.01)
    multi = DiscreteGaussianEvent(sigma=300.0, l2_sensitivity=100.0, dimension=1000)
    assert pld.supports(multi) and get_accountant("prv").supports(multi)
    rdp = get_accountant("rdp")
    # CKS Thm 14: ρ = Δ²/(2σ²) — the same RDP curve as the Gaussian with z = σ/Δ
    assert rdp.epsilon(multi, 1e-5) == pytest.approx(rdp.epsilon(GaussianEvent(3.0), 1e-5))
    sampled = SelfComposedEvent(PoissonSampledEvent(0.1, multi), 50)
    gauss = SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(3.0)), 50)
    # the smoothing theorem (protocols/dp.md §3.1): z' = √(σ² − t²)/Δ, η negligible at σ = 300
    for name in ("rdp", "pld", "prv"):
        acc = get_accountant(name)
        assert acc.epsilon(sampled, 1e-5) == pytest.approx(acc.epsilon(gauss, 1e-5), rel=1e-3)
        assert acc.epsilon(sampled, 1e-5) >= acc.epsilon(gauss, 1e-5)


def test_zhu_wang_bound_dominates_exact_sampled_gaussian_curve() -> None:
    acc = RdpAccountant()
    orders = np.arange(2.0, 64.0)
    for q, z in ((0.01, 1.0), (0.2, 0.8), (0.5, 3.0)):
        general = acc._poisson_general(q, GaussianEvent(z), orders)
        exact = acc._rdp(PoissonSampledEvent(q, GaussianEvent(z)), orders)
        assert np.all(general >= exact * (1 - 1e-9))


def test_ddgauss_formula() -> None:
    e = DistributedDiscreteGaussianEvent(
        sigma=2.0, min_contributors=4, l2_sensitivity=10.0, l1_sensitivity=40.0, dimension=64
    )
    tau = 10 * sum(math.exp(-2 * math.pi**2 * 4.0 * k / (k + 1)) for k in range(1, 4))
    expect = min(math.sqrt(100 / (4 * 4.0) + 0.5 * tau * 64), 40 / (2 * 2.0) + tau * math.sqrt(64))
    assert ddgauss_concentrated_epsilon(e) == pytest.approx(expect)
    fewer = DistributedDiscreteGaussianEvent(2.0, 2, 10.0, 40.0, 64)
    rdp = get_accountant("rdp")
    assert rdp.epsilon(fewer, 1e-5) > rdp.epsilon(e, 1e-5)  # fewer contributors, less noise


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrated_sigma_meets_target(accountant: str) -> None:
    target, delta, rounds, tol = 2.0, 1e-5, 300, 1e-3
    sigma = calibrate_noise_multiplier(
        target, delta, rounds=rounds, sampling=0.05, accountant=accountant, tolerance=tol
    )
    acc = get_accountant(accountant)
    assert acc.epsilon(_ours(0.05, sigma, rounds), delta) <= target
    assert acc.epsilon(_ours(0.05, sigma - tol, rounds), delta) > target


def test_calibration_with_schemes() -> None:
    z_poisson = calibrate_noise_multiplier(
        3.0, 1e-5, rounds=50, sampling=PoissonSampling(0.1), tolerance=0.05
    )
    z_all = calibrate_noise_multiplier(3.0, 1e-5, rounds=50, sampling=None, tolerance=0.05)
    assert z_all > z_poisson  # no amplification without sampling
    z_fixed = calibrate_noise_multiplier(
        3.0,
        1e-5,
        rounds=50,
        sampling=FixedSizeSampling(100, 10),
        accountant="rdp",
        neighboring="replace_one",
        tolerance=0.05,
    )
    assert 0 < z_fixed < z_all


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": math.nan}, "target_epsilon"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"rounds": 0}, "rounds"),
        ({"sampling": 1.5}, "sampling"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_calibration_validates(kwargs: dict[str, object], parameter: str) -> None:
    args: dict[str, object] = {"target_epsilon": 1.0, "delta": 1e-5, "rounds": 10}
    args |= kwargs
    with pytest.raises(InvalidParameterError) as info:
        calibrate_noise_multiplier(
            args.pop("target_epsilon"),  # type: ignore[arg-type]
            args.pop("delta"),  # type: ignore[arg-type]
            **args,  # type: ignore[arg-type]
        )
    assert info.value.parameter == parameter


@pytest.mark.parametrize("name", ["pld", "prv", "rdp"])
def test_epsilon_and_delta_validate(name: str) -> None:
    acc = get_accountant(name)
    for bad in (0.0, 1.0, -0.1, math.nan, math.inf):
        with pytest.raises(InvalidParameterError) as info:
            acc.epsilon(GaussianEvent(1.0), bad)
        assert info.value.parameter == "delta"
    with pytest.raises(InvalidParameterError) as info:
        acc.delta(GaussianEvent(1.0), -1.0)
    assert info.value.parameter == "epsilon"
    with pytest.raises(InvalidParameterError):
        get_accountant(name, neighboring="swap")  # type: ignore[arg-type]
