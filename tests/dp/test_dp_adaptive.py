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
