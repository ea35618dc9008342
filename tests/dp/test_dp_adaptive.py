"""Adaptive clipping (Andrew et al. 2021): converges to the quantile; its cost is accounted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securefl.dp.accounting import get_accountant
from securefl.dp.adaptive import (
    AdaptiveClipConfig,
    AdaptiveClipper,
    round_event,
    update_noise_multiplier,
)
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import ComposedEvent, GaussianEvent, PoissonSampledEvent, SelfComposedEvent
from securefl.dp.sampling import CryptoRandom


@pytest.mark.parametrize(("quantile", "initial"), [(0.5, 0.05), (0.8, 20.0)])
def test_converges_to_the_target_quantile(quantile: float, initial: float) -> None:
    """Norms ~ LogNormal(0, 0.5); after 300 rounds of m = 200 the clip is within 12 % of
    the true quantile (noise σ_b = m/20 as in the paper; the geometric step η = 0.2)."""
    m = 200
    cfg = AdaptiveClipConfig(initial_clip=initial, target_quantile=quantile, expected_cohort=m)
    clipper = AdaptiveClipper(cfg, rng=CryptoRandom(b"adaptive".ljust(32, b"\0")))
    data = np.random.default_rng(5)  # synthetic norms (test data, not noise)
    for _ in range(300):
        norms = data.lognormal(0.0, 0.5, size=m)
        clipper.update(AdaptiveClipper.client_bit(float(x), clipper.clip) for x in norms)
    from scipy.stats import norm as normal

    truth = math.exp(0.5 * normal.ppf(quantile))
    assert abs(clipper.clip - truth) <= 0.12 * truth


def test_noise_split_matches_the_paper_and_is_accounted() -> None:
    z, sigma_b = 1.0, 5.0
    z_delta = update_noise_multiplier(z, sigma_b)
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z)
    assert z_delta > z  # the update query needs MORE noise once the count is released
    # composing the two Gaussian queries is exactly the Gaussian with the target z
    both = ComposedEvent((GaussianEvent(z_delta), GaussianEvent(2 * sigma_b)))
    for name in ("rdp", "pld"):
        acc = get_accountant(name)
        a = acc.epsilon(SelfComposedEvent(PoissonSampledEvent(0.1, both), 100), 1e-5)
        b = acc.epsilon(SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(z)), 100), 1e-5)
        assert a == pytest.approx(b, rel=1e-6)
    with pytest.raises(InvalidParameterError) as info:
        update_noise_multiplier(3.0, 1.0)
    assert info.value.parameter == "count_noise_std"


def test_round_event_includes_the_count_query() -> None:
    cfg = AdaptiveClipConfig(initial_clip=1.0, target_quantile=0.5, expected_cohort=100)
    update = GaussianEvent(1.2)
    ev = round_event(update, cfg)
    assert ev.events[0] == update and ev.events[1] == cfg.count_event()
    rdp = get_accountant("rdp")
    assert rdp.epsilon(ev, 1e-5) > rdp.epsilon(update, 1e-5)  # not free
    # count noise on the grid: std 2σ_b·2^g for sensitivity 2^g (multiplier 2σ_b = 10)
    assert cfg.count_event().sigma / cfg.count_event().l2_sensitivity == pytest.approx(10.0)


def test_validation() -> None:
    for kwargs, parameter in (
        ({"target_quantile": 1.0}, "target_quantile"),
        ({"initial_clip": -1.0}, "initial_clip"),
        ({"learning_rate": math.nan}, "learning_rate"),
    ):
        args = {"initial_clip": 1.0, "target_quantile": 0.5, "expected_cohort": 10.0} | kwargs
        with pytest.raises(InvalidParameterError) as info:
            AdaptiveClipConfig(**args)  # type: ignore[arg-type]
        assert info.value.parameter == parameter
    clipper = AdaptiveClipper(AdaptiveClipConfig(1.0, 0.5, 10.0))
    with pytest.raises(InvalidParameterError):
        clipper.update([0, 1, 2])


# ------------------------------------------------------------------ orchestrator interface


def _sim_round(
    ac: object, norms: np.ndarray, z: float, data: np.random.Generator, dim: int = 3
) -> float:
    """One round through the real central mechanism: clip to C_t, append the extra
    coordinate, DP-FedAvg on the joint vector with the mechanism clip, read the count back."""
    from securefl.dp.adaptive import AdaptiveClipping
    from securefl.dp.clipping import clip_l2
    from securefl.dp.fedavg import DpFedAvgConfig, dp_fedavg_round

    assert isinstance(ac, AdaptiveClipping)
    m = ac.config.expected_cohort
    updates = {}
    for i, n in enumerate(norms):
        direction = data.normal(size=dim)
        upd = direction / np.linalg.norm(direction) * n
        clipped, _ = clip_l2(upd, ac.clip)
        updates[i] = np.append(clipped, ac.client_extra(float(n)))
    cfg = DpFedAvgConfig(
        clip=ac.mechanism_clip,
        noise_multiplier=ac.mechanism_noise_multiplier,
        expected_cohort=m,
        frac_bits=12,
    )
    res = dp_fedavg_round(updates, cfg)
    return ac.server_update(float(res.average[-1]) * m)


@pytest.mark.parametrize(("quantile", "initial"), [(0.5, 0.05), (0.8, 20.0)])
def test_joint_mode_converges_through_the_real_mechanism(quantile: float, initial: float) -> None:
    """Norms ~ LogNormal(0, 0.5), m = 100, z = 1, σ_b = m/20: after 150 rounds through
    DP-FedAvg on [clip_C(Δ), λ(b − ½)] the clip is within 12 % of the true quantile."""
    from scipy.stats import norm as normal

    from securefl.dp.adaptive import AdaptiveClipping

    m = 100
    cfg = AdaptiveClipConfig(initial_clip=initial, target_quantile=quantile, expected_cohort=m)
    ac = AdaptiveClipping(cfg, noise_multiplier=1.0)
    data = np.random.default_rng(11)  # synthetic norms (test data, not noise)
    for _ in range(150):
        _sim_round(ac, data.lognormal(0.0, 0.5, size=m), 1.0, data)
    truth = math.exp(0.5 * normal.ppf(quantile))
    assert abs(ac.clip - truth) <= 0.12 * truth
    assert ac.rounds == 150 and ac.to_dict()["mode"] == "joint"


def test_joint_mode_noise_split_is_andrews() -> None:
    """The joint vector's noise z·C·√(1+κ²) gives the update z_Δ and the count σ_b exactly,
    and the joint Gaussian is the composition of the two queries (same ε under RDP/PLD)."""
    from securefl.dp.adaptive import AdaptiveClipping

    z, m = 0.9, 100.0
    cfg = AdaptiveClipConfig(initial_clip=2.0, target_quantile=0.5, expected_cohort=m)
    ac = AdaptiveClipping(cfg, z)
    noise_std = z * ac.mechanism_clip
    assert noise_std / ac.clip == pytest.approx(ac.update_noise_multiplier)
    assert noise_std / ac.count_scale == pytest.approx(cfg.sigma_b)
    # the extra coordinate fits the joint clip: ‖(clip_C(Δ), λ(b − ½))‖ ≤ mechanism clip
    assert math.hypot(ac.clip, ac.client_extra(0.1)) == pytest.approx(ac.mechanism_clip)
    joint = GaussianEvent(z)
    split = ComposedEvent(
        (GaussianEvent(ac.update_noise_multiplier), GaussianEvent(2 * cfg.sigma_b))
    )
    for name in ("rdp", "pld"):
        acc = get_accountant(name)
        a = acc.epsilon(SelfComposedEvent(PoissonSampledEvent(0.2, joint), 50), 1e-5)
        b = acc.epsilon(SelfComposedEvent(PoissonSampledEvent(0.2, split), 50), 1e-5)
        assert a == pytest.approx(b, rel=1e-6)
    assert ac.round_event(joint) is joint


def test_noisy_count_estimate_has_the_stated_noise() -> None:
    """Joint mode through the real mechanism: the read-back Σ(bᵢ − ½) has std ≈ σ_b."""
    from securefl.dp.adaptive import AdaptiveClipping
    from securefl.dp.fedavg import DpFedAvgConfig, dp_fedavg_round

    m = 40.0
    cfg = AdaptiveClipConfig(initial_clip=1.0, target_quantile=0.5, expected_cohort=m)
    ac = AdaptiveClipping(cfg, 1.0)
    mech = DpFedAvgConfig(clip=ac.mechanism_clip, noise_multiplier=1.0, expected_cohort=m)
    extra = ac.client_extra(0.5)  # b = 1: exact Σ(bᵢ − ½) = 0.5·m_real
    reads = []
    for _ in range(400):
        res = dp_fedavg_round({i: np.array([0.0, extra]) for i in range(10)}, mech)
        reads.append(float(res.average[-1]) * m / ac.count_scale)
    r = np.asarray(reads) - 5.0
    from scipy.stats import chi2

    stat = float((r**2).sum()) / cfg.sigma_b**2
    # grid slack makes the noise slightly larger than σ_b (never smaller): one-sided + 5 %
    assert chi2.ppf(1e-6, r.size) < stat < chi2.ppf(1 - 1e-6, r.size) * 1.05


def test_separate_mode_composes_the_count_event() -> None:
    from securefl.dp.adaptive import AdaptiveClipping

    cfg = AdaptiveClipConfig(initial_clip=1.0, target_quantile=0.5, expected_cohort=10)
    ac = AdaptiveClipping(cfg, 0.5, mode="separate", rng=CryptoRandom(b"s" * 32))
    assert ac.client_extra(2.0) == -0.5 and ac.client_extra(0.5) == 0.5
    assert ac.mechanism_noise_multiplier == pytest.approx(update_noise_multiplier(0.5, 0.5))
    upd = GaussianEvent(ac.mechanism_noise_multiplier)
    assert ac.round_event(upd) == ComposedEvent((upd, cfg.count_event()))
    noisy = ac.noisy_count(3.0)
    assert abs(noisy - 3.0) < 10 * cfg.sigma_b
    with pytest.raises(InvalidParameterError):
        ac.noisy_count(0.3)
    before = ac.clip
    assert ac.server_update(5.0) < before  # everyone under the clip → shrink
    with pytest.raises(InvalidParameterError):
        AdaptiveClipping(cfg, 0.5).noisy_count(1.0)  # joint mode: the mechanism noises it
    with pytest.raises(InvalidParameterError) as info:
        AdaptiveClipping(cfg, 3.0)  # 2σ_b = 1 ≤ z
    assert info.value.parameter == "count_noise_std"
    with pytest.raises(InvalidParameterError):
        ac.server_update(math.nan)
