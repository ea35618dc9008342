"""DDGauss: rotation, conditional rounding, encode → (secure) sum → decode, worst-case event."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from securefl.dp.accounting import get_accountant
from securefl.dp.clipping import clip_l2
from securefl.dp.distributed import (
    DDGaussConfig,
    client_encode,
    conditional_round,
    padded_dimension,
    rotate,
    rotation_signs,
    server_decode,
    suggest_bits,
    sum_mod,
    unrotate,
)
from securefl.dp.errors import InvalidParameterError
from securefl.dp.sampling import CryptoRandom
from securefl.secagg.config import SecAggConfig
from securefl.secagg.simulate import (
    DropoutPlan,
    SimulatedIdentities,
    run_round,
    simulation_config,
)

SEED = b"rotation-seed".ljust(32, b"\0")


def _updates(n: int, d: int, scale: float = 0.05) -> list[np.ndarray]:
    g = np.random.default_rng(11)  # synthetic client updates (test data, not noise)
    return [g.normal(0, scale, size=d) for _ in range(n)]


def _clipped_mean(ups: list[np.ndarray], clip: float) -> np.ndarray:
    return np.mean([clip_l2(u, clip)[0] for u in ups], axis=0)


def test_rotation_is_orthonormal_and_invertible() -> None:
    x = np.random.default_rng(0).normal(size=300)
    signs = rotation_signs(SEED, padded_dimension(300))
    y = rotate(x, signs)
    assert y.shape == (512,)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(unrotate(y, signs, 300), x, atol=1e-12)
    # the rotation flattens a spike (what makes modular clipping rare, KLS §4)
    spike = np.zeros(300)
    spike[0] = 1.0
    assert np.max(np.abs(rotate(spike, signs))) == pytest.approx(1 / math.sqrt(512))


def test_conditional_rounding_respects_the_bound() -> None:
    rng = CryptoRandom(b"round".ljust(32, b"\0"))
    x = np.random.default_rng(1).normal(size=256) * 3
    bound = float(np.linalg.norm(x)) + 4.0
    for _ in range(50):
        z = conditional_round(x, bound, rng)
        assert float(np.linalg.norm(z)) <= bound
        assert np.all(np.abs(z - x) < 1)


def test_encode_sum_decode_recovers_the_mean_within_stated_error() -> None:
    """Per coordinate the decoded mean has error = rotated rounding + noise, variance
    ≤ n(σ² + ¼)γ²/m² (orthonormal rotation preserves it); RMSE ≤ 1.2× that std
    (d = 1024 coordinates: the RMSE concentrates to within a few %)."""
    n, d = 8, 1000
    cfg = DDGaussConfig(
        dimension=d,
        clip=1.0,
        granularity=2e-3,
        client_sigma=3,
        bits=20,
        min_contributors=6,
        expected_cohort=float(n),
    )
    ups = _updates(n, d)
    enc = [
        client_encode(u, cfg, rotation_seed=SEED, rng=CryptoRandom(bytes([i + 1]) * 32))
        for i, u in enumerate(ups)
    ]
    assert all(e.dtype == np.uint32 and e.shape == (1024,) for e in enc)
    assert all(int(e.max()) < 2**20 for e in enc)
    out = server_decode(sum_mod(enc, cfg), cfg, rotation_seed=SEED)
    true = _clipped_mean(ups, 1.0)
    std = math.sqrt(n * (cfg.client_sigma**2 + 0.25)) * cfg.granularity / n
    assert float(np.sqrt(np.mean((out - true) ** 2))) <= 1.2 * std


def _encoded_cohort(
    n: int, d: int, *, min_contributors: int
) -> tuple[DDGaussConfig, list[np.ndarray], dict[int, np.ndarray]]:
    """n clients' DDGauss-encoded updates (z = 0.5, C = 1), keyed by SecAgg ids 1..n."""
    cfg = DDGaussConfig.for_noise_multiplier(
        0.5,
        dimension=d,
        clip=1.0,
        granularity=1e-2,
        bits=24,
        min_contributors=min_contributors,
        expected_cohort=float(n),
    )
    ups = _updates(n, d)
    inputs = {i + 1: client_encode(u, cfg, rotation_seed=SEED) for i, u in enumerate(ups)}
    return cfg, ups, inputs


def _secagg_config(
    cfg: DDGaussConfig, inputs: dict[int, Any], ident: SimulatedIdentities, **options: Any
) -> SecAggConfig:
    """A malicious-server SecAgg round (t = 3, bound to a model hash) over the encoded inputs."""
    return simulation_config(
        list(inputs),
        threshold=3,
        bits=cfg.bits,
        dimension=cfg.padded_dimension,
        identities=ident,
        model_digest=b"\x07" * 32,  # the default malicious-server round binds a model hash
        **options,
    )


def test_output_is_a_secure_aggregation_input() -> None:
    """The client vector goes straight into securefl.secagg.simulate.run_round."""
    n = 4
    cfg, ups, inputs = _encoded_cohort(n, 100, min_contributors=3)
    ident = SimulatedIdentities()
    config = _secagg_config(cfg, inputs, ident)
    result = run_round(inputs, config, identities=ident)
    expected = sum_mod(list(inputs.values()), cfg)
    assert np.array_equal(result.total.astype(np.uint64), expected.astype(np.uint64))
    out = server_decode(result.total, cfg, rotation_seed=SEED)
    per_coord = math.sqrt(n * (cfg.client_sigma**2 + 0.25)) * cfg.granularity / n
    assert float(np.sqrt(np.mean((out - _clipped_mean(ups, 1.0)) ** 2))) <= 1.3 * per_coord


def test_dropouts_leave_the_survivors_noise_and_the_fixed_denominator() -> None:
    """A client dropping before its masked input: the sum holds only survivors' vectors (and
    noise: n_min = 4 contributors is what the event assumed), the denominator stays m = 5."""
    n = 5
    cfg, ups, inputs = _encoded_cohort(n, 60, min_contributors=4)
    ident = SimulatedIdentities()
    config = _secagg_config(cfg, inputs, ident, min_cohort=4)
    drop = DropoutPlan(masked_input=frozenset({5}))
    result = run_round(inputs, config, dropouts=drop, identities=ident)
    assert result.survivors == frozenset({1, 2, 3, 4})
    survivors_sum = sum_mod([inputs[u] for u in (1, 2, 3, 4)], cfg)
    assert np.array_equal(result.total.astype(np.uint64), survivors_sum.astype(np.uint64))
    out = server_decode(result.total, cfg, rotation_seed=SEED)
    truth = np.sum([clip_l2(u, 1.0)[0] for u in ups[:4]], axis=0) / n  # fixed denominator
    per_coord = math.sqrt(4 * (cfg.client_sigma**2 + 0.25)) * cfg.granularity / n
    assert float(np.sqrt(np.mean((out - truth) ** 2))) <= 1.3 * per_coord
    assert cfg.event().min_contributors == 4


def test_event_uses_worst_case_dropouts_and_rounding_slack() -> None:
    cfg = DDGaussConfig.for_noise_multiplier(
        1.0,
        dimension=1000,
        clip=1.0,
        granularity=1e-3,
        bits=32,
        min_contributors=8,
        expected_cohort=10.0,
    )
    ev = cfg.event()
    assert ev.min_contributors == 8 and ev.dimension == 1024
    assert ev.l2_sensitivity > cfg.clip / cfg.granularity  # rounding slack included
    assert ev.l1_sensitivity == pytest.approx(min(ev.l2_sensitivity**2, 32 * ev.l2_sensitivity))
    rdp = get_accountant("rdp")
    more_drops = DDGaussConfig(
        1000, 1.0, 1e-3, cfg.client_sigma, 32, min_contributors=4, expected_cohort=10.0
    )
    assert rdp.epsilon(more_drops.event(), 1e-5) > rdp.epsilon(ev, 1e-5)
    pld = get_accountant("pld")  # KLS sum bound + smoothing (protocols/dp.md §3.1)
    assert pld.supports(ev)
    assert pld.epsilon(more_drops.event(), 1e-5) > pld.epsilon(ev, 1e-5)
    assert cfg.to_dict()["privacy_unit"] == "client"


def test_too_few_bits_wrap_and_suggest_bits_avoids_it() -> None:
    n, d = 6, 256
    base = DDGaussConfig(d, 1.0, 1e-3, 20, 64, 5, float(n))
    bits = suggest_bits(base, n)
    ok = DDGaussConfig(d, 1.0, 1e-3, 20, bits, 5, float(n))
    bad = DDGaussConfig(d, 1.0, 1e-3, 20, 5, 5, float(n))
    ups = _updates(n, d, scale=0.2)
    true = _clipped_mean(ups, 1.0)
    std = math.sqrt(n * (20**2 + 0.25)) * 1e-3 / n  # stated per-coordinate error
    errs = []
    for cfg in (ok, bad):
        enc = [client_encode(u, cfg, rotation_seed=SEED) for u in ups]
        err = server_decode(sum_mod(enc, cfg), cfg, rotation_seed=SEED) - true
        errs.append(float(np.sqrt(np.mean(err**2))))
    assert errs[0] <= 1.2 * std  # suggested width: noise-limited
    assert errs[1] > 2 * std  # 5 bits: modular wrap-around dominates the error


def test_validation() -> None:
    with pytest.raises(InvalidParameterError) as info:
        DDGaussConfig(10, 1.0, 0.0, 1, 16, 2, 3.0)
    assert info.value.parameter == "granularity"
    with pytest.raises(InvalidParameterError) as info:
        DDGaussConfig(10, 1.0, 1e-3, 1, 16, 0, 3.0)
    assert info.value.parameter == "min_contributors"
    cfg = DDGaussConfig(10, 1.0, 1e-3, 1, 16, 2, 3.0)
    with pytest.raises(InvalidParameterError):
        client_encode(np.ones(11), cfg, rotation_seed=SEED)
    with pytest.raises(InvalidParameterError):
        client_encode(np.ones(10), cfg, rotation_seed=b"short")


@pytest.mark.parametrize("d", [1, 3, 300, 1024, 1025, 65537, 100_000, 10**6, 10**7])
def test_blockwise_rotation_pads_little(d: int) -> None:
    """Wire version 2: d' is a multiple of a power-of-two block, not the next power of two
    (d = 10^5 masked 131,072 coordinates, ×1.31 on the wire)."""
    from securefl.dp.distributed import MAX_BLOCKS, MIN_BLOCK, rotation_block

    block, padded = rotation_block(d), padded_dimension(d)
    assert block & (block - 1) == 0 and padded % block == 0 and padded >= d
    assert padded - d < max(MIN_BLOCK, 2 * d / MAX_BLOCKS)
    assert padded // block <= MAX_BLOCKS
    if d <= MIN_BLOCK:  # small vectors: one block, exactly KLS's power of two
        assert padded == block == 1 << (d - 1).bit_length()


def test_blockwise_rotation_is_orthonormal_per_block() -> None:
    """H = I ⊗ H_B: norms kept (so Δ₂ and every DP bound hold), inverse exact, each block
    flattens its own spike to 1/√B."""
    from securefl.dp.distributed import rotation_block

    d = 100_000
    block, padded = rotation_block(d), padded_dimension(d)
    assert (block, padded) == (2048, 100_352)
    signs = rotation_signs(SEED, padded)
    x = np.random.default_rng(3).normal(size=d)
    y = rotate(x, signs, block)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(unrotate(y, signs, d, block), x, atol=1e-10)
    spike = np.zeros(d)
    spike[5 * block + 7] = 1.0
    flat = rotate(spike, signs, block)
    np.testing.assert_allclose(np.abs(flat[5 * block : 6 * block]), 1 / math.sqrt(block))
    assert not flat[: 5 * block].any() and not flat[6 * block :].any()
    with pytest.raises(InvalidParameterError, match="power of two"):
        rotate(x, signs, 3000)


def test_event_dimension_is_the_encoded_length() -> None:
    """The accounting counts the coordinates actually noised (d'), smaller than the old power
    of two: Δ₂ and Δ₁ can only shrink, so ε is no larger than under wire version 1."""
    cfg = DDGaussConfig.for_noise_multiplier(
        1.0,
        dimension=100_000,
        clip=1.0,
        granularity=2**-16,
        bits=24,
        min_contributors=3,
        expected_cohort=5,
    )
    assert cfg.event().dimension == cfg.padded_dimension == 100_352
    old_d = 131_072
    assert cfg.rounding_bound <= min(
        math.sqrt(
            2**32
            + old_d / 4
            + math.sqrt(2 * math.log(1 / cfg.beta)) * (2**16 + math.sqrt(old_d) / 2)
        ),
        2**16 + math.sqrt(old_d),
    )
    assert cfg.to_dict()["rotation_block"] == 2048
