"""Client-level DP-FedAvg: fixed denominator, weights, grid noise, and the end-to-end path
through secure aggregation (same noise draw ⇒ equal up to the encoding error)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import DiscreteGaussianEvent
from securefl.dp.fedavg import (
    DpFedAvgConfig,
    add_grid_noise,
    dp_fedavg_round,
    release,
    to_grid,
)
from securefl.dp.sampling import CryptoRandom

KEY = b"fedavg-noise".ljust(32, b"\0")


def _updates(n: int, d: int, seed: int = 0) -> dict[int, np.ndarray]:
    g = np.random.default_rng(seed)  # synthetic client updates (test data, not noise)
    return {i: g.normal(0, 0.5, size=d) for i in range(1, n + 1)}


def test_denominator_is_fixed_not_the_number_of_replies() -> None:
    cfg = DpFedAvgConfig(clip=1.0, noise_multiplier=1.0, expected_cohort=10.0)
    ups = _updates(10, 50)
    few = {k: ups[k] for k in (1, 2, 3)}
    r_all = dp_fedavg_round(ups, cfg, rng=CryptoRandom(KEY))
    r_few = dp_fedavg_round(few, cfg, rng=CryptoRandom(KEY))
    for r in (r_all, r_few):
        assert np.array_equal(r.average, release(r.noisy_grid_sum, cfg))
        np.testing.assert_allclose(r.average * 10.0 * 2.0**16, r.noisy_grid_sum, rtol=1e-14)
    assert (
        r_few.params["participants"] == 3 and r_few.params["denominator"] == "fixed_expected_cohort"
    )


def test_released_values_lie_on_the_grid() -> None:
    """Mironov mitigation: the output is a deterministic function of an integer (noisy) sum,
    so every released coordinate is an exact multiple of 2^−f/m — no low-order float bits."""
    cfg = DpFedAvgConfig(clip=1.0, noise_multiplier=0.5, expected_cohort=4.0, frac_bits=12)
    r = dp_fedavg_round(_updates(4, 1000), cfg, rng=CryptoRandom(KEY))
    scaled = r.average * 4.0 * 2.0**12
    assert np.array_equal(scaled, np.round(scaled))
    assert r.noisy_grid_sum.dtype == np.int64


def test_noise_scale_and_event() -> None:
    """Noise std σ_grid = ⌈z·(C·W·2^f + √d)⌉ within 5 SE of the sample std (rate 6e-7)."""
    d = 20_000
    cfg = DpFedAvgConfig(clip=0.5, noise_multiplier=2.0, expected_cohort=5.0, max_weight=2.0)
    delta_grid = 0.5 * 2.0 * 2**16 + math.sqrt(d)
    sigma = math.ceil(2.0 * delta_grid)
    assert cfg.grid_sigma(d) == sigma
    assert cfg.round_event(d) == DiscreteGaussianEvent(float(sigma), delta_grid, d)
    noise = add_grid_noise(np.zeros(d, dtype=np.int64), cfg, rng=CryptoRandom(KEY))
    assert abs(noise.std() - sigma) <= 5 * sigma / math.sqrt(2 * d)
    assert cfg.round_event(d).sigma / cfg.round_event(d).l2_sensitivity >= 2.0


def test_replace_one_doubles_sensitivity_and_weights_multiply_it() -> None:
    a = DpFedAvgConfig(clip=1.0, noise_multiplier=1.0, expected_cohort=3.0)
    b = DpFedAvgConfig(
        clip=1.0, noise_multiplier=1.0, expected_cohort=3.0, neighboring="replace_one"
    )
    c = DpFedAvgConfig(clip=1.0, noise_multiplier=1.0, expected_cohort=3.0, max_weight=3.0)
    assert b.l2_sensitivity == 2 * a.l2_sensitivity
    assert c.l2_sensitivity == 3 * a.l2_sensitivity


def test_validation() -> None:
    cfg = DpFedAvgConfig(clip=1.0, noise_multiplier=1.0, expected_cohort=3.0, max_weight=1.0)
    with pytest.raises(InvalidParameterError) as info:
        dp_fedavg_round(_updates(2, 5), cfg, weights={1: 1.5})
    assert info.value.parameter == "weight"
    with pytest.raises(InvalidParameterError) as info:
        dp_fedavg_round({1: np.array([1.0, math.nan])}, cfg)
    assert info.value.parameter == "flat"
    with pytest.raises(InvalidParameterError):
        dp_fedavg_round({1: np.ones(3), 2: np.ones(4)}, cfg)
    for field, value in (("clip", 0.0), ("noise_multiplier", -1.0), ("expected_cohort", math.inf)):
        kwargs = {"clip": 1.0, "noise_multiplier": 1.0, "expected_cohort": 3.0, field: value}
        with pytest.raises(InvalidParameterError) as info:
            DpFedAvgConfig(**kwargs)  # type: ignore[arg-type]
        assert info.value.parameter == field


def test_to_grid_rejects_non_finite() -> None:
    with pytest.raises(InvalidParameterError):
        to_grid(np.array([math.inf]), 16)


def test_end_to_end_over_secure_aggregation_matches_plaintext() -> None:
    """Clip → encode (securefl.encoding) → SecAgg round (securefl.secagg.simulate.run_round)
    → decode → the SAME discrete noise draw → release, versus plaintext DP-FedAvg. The two
    differ only by encoding error: < n·2^−f (stochastic rounding of n encodings) + ½·2^−f
    (nearest rounding of the plaintext sum), divided by the fixed denominator."""
    from securefl.encoding import decode_sum, encode, plan_ring
    from securefl.secagg.simulate import SimulatedIdentities, run_round, simulation_config

    n, d, f = 5, 64, 16
    cfg = DpFedAvgConfig(clip=1.0, noise_multiplier=0.7, expected_cohort=float(n), frac_bits=f)
    ups = _updates(n, d, seed=7)
    plain = dp_fedavg_round(ups, cfg, rng=CryptoRandom(KEY))

    from securefl.dp.fedavg import clip_and_weight

    plan = plan_ring(n, cfg.clip, f)
    encoded = {
        i: encode(clip_and_weight(u, cfg)[0], plan, rng_key=bytes([i]) * 16).values
        for i, u in ups.items()
    }
    ident = SimulatedIdentities()
    config = simulation_config(
        list(ups),
        threshold=3,
        bits=plan.bits,
        dimension=d,
        identities=ident,
        model_digest=b"\x07" * 32,
    )
    result = run_round(encoded, config, identities=ident)
    assert result.survivors == frozenset(ups)
    grid_sum = np.rint(decode_sum(result.total, plan) * 2.0**f).astype(np.int64)
    secure = release(add_grid_noise(grid_sum, cfg, rng=CryptoRandom(KEY)), cfg)
    bound = (n * 2.0**-f + 0.5 * 2.0**-f) / n
    assert float(np.max(np.abs(secure - plain.average))) <= bound
