"""Fixed-point encoding: exact sums within the stated error bound, no wrap, unbiased rounding."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.encoding import EncodedVector, decode_sum, encode, error_bound, plan_ring
from securefl.errors import ConfigurationError

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Any, ...]:
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 40))
    clip = draw(st.sampled_from([0.01, 0.5, 1.0, 3.0, 100.0]))
    frac_bits = draw(st.integers(0, 24))
    max_weight = draw(st.sampled_from([0.25, 1.0, 7.5]))
    xs = [
        draw(st.lists(finite | st.sampled_from([clip, -clip]), min_size=d, max_size=d))
        for _ in range(n)
    ]
    weights = [draw(st.floats(0.0, max_weight)) for _ in range(n)]
    return n, clip, frac_bits, max_weight, xs, weights


def _ring_sum(parts: list[EncodedVector], bits: int, dtype: Any) -> np.ndarray[Any, Any]:
    total = np.zeros(parts[0].values.shape[0], dtype=dtype)
    for p in parts:
        total += p.values
    return total & dtype((1 << bits) - 1) if bits < 8 * np.dtype(dtype).itemsize else total


@given(scenarios())
def test_decoded_sum_is_within_the_error_bound(case: tuple[Any, ...]) -> None:
    n, clip, frac_bits, max_weight, xs, weights = case
    plan = plan_ring(n, clip, frac_bits, max_weight)
    parts = [
        encode(np.array(x), plan, weight=w, rng_key=os.urandom(16))
        for x, w in zip(xs, weights, strict=True)
    ]
    for part, x in zip(parts, xs, strict=True):
        assert part.values.dtype == plan.dtype
        assert int(part.values.max()) < plan.modulus
        assert part.clipped == sum(abs(v) > clip for v in x)
    decoded = decode_sum(_ring_sum(parts, plan.bits, plan.dtype), plan)
    exact = sum(w * np.clip(np.array(x), -clip, clip) for x, w in zip(xs, weights, strict=True))
    bound = error_bound(plan, n)
    assert np.all(np.abs(decoded - exact) < bound * (1 + 1e-9))


@given(
    n=st.integers(1, 3000),
    clip=st.sampled_from([0.001, 1.0, 8.0, 1e3]),
    frac_bits=st.integers(0, 30),
    sign=st.sampled_from([1.0, -1.0]),
)
def test_extreme_sums_never_wrap_when_planned(
    n: int, clip: float, frac_bits: int, sign: float
) -> None:
    """n clients all at ±clip with the maximum weight: the worst case for wrap-around."""
    try:
        plan = plan_ring(n, clip, frac_bits, 2.0)
    except ConfigurationError:
        return  # needs > 64 bits: refused, tested elsewhere
    one = encode(np.full(4, sign * clip * 10), plan, weight=2.0, rng_key=bytes(16))
    assert one.clipped == 4
    # The sum of n copies mod 2^b, computed exactly in Python integers.
    total = np.array([(int(v) * n) % plan.modulus for v in one.values], dtype=plan.dtype)
    decoded = decode_sum(total, plan)
    # A wrap would be off by about 2^b·2^-f, far beyond the rounding bound.
    assert np.all(np.abs(decoded - sign * 2.0 * clip * n) < error_bound(plan, n) * (1 + 1e-9))


def test_too_few_bits_would_wrap_and_are_refused() -> None:
    plan = plan_ring(100, 1.0, 16)
    with pytest.raises(ConfigurationError, match="wrap"):
        plan_ring(100, 1.0, 16, bits=plan.bits - 1)
    # What the refused ring would have done: 100 clients at +clip wrap to a negative sum.
    small = plan.bits - 1
    value = 2**16  # encoding of +1.0
    wrapped = (100 * value) % 2**small
    signed = wrapped - 2**small if wrapped >= 2 ** (small - 1) else wrapped
    assert signed != 100 * value


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected_with_their_position(bad: float) -> None:
    plan = plan_ring(3, 1.0, 8)
    x = np.zeros(10)
    x[7] = bad
    with pytest.raises(ConfigurationError, match="index 7"):
        encode(x, plan)


@pytest.mark.parametrize("weight", [-0.1, 2.0, float("nan"), float("inf")])
def test_weights_outside_the_plan_are_rejected(weight: float) -> None:
    plan = plan_ring(3, 1.0, 8, max_weight=1.5)
    with pytest.raises(ConfigurationError, match="weight"):
        encode(np.zeros(3), plan, weight=weight)


def test_input_validation() -> None:
    plan = plan_ring(3, 1.0, 8)
    with pytest.raises(ConfigurationError):
        encode(np.zeros((2, 2)), plan)
    with pytest.raises(ConfigurationError):
        encode([0.0, 1.0], plan)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="rng_key"):
        encode(np.zeros(3), plan, rng_key=bytes(8))
    with pytest.raises(ConfigurationError, match="total"):
        decode_sum(np.array([plan.modulus], dtype=np.uint32), plan)
    with pytest.raises(ConfigurationError, match="total"):
        decode_sum(np.zeros(3, dtype=np.int64), plan)
    with pytest.raises(ConfigurationError):
        error_bound(plan, 4)
    assert encode(np.zeros(0), plan).values.shape == (0,)


def test_fixed_rng_key_is_deterministic_and_fresh_keys_are_not() -> None:
    plan = plan_ring(3, 1.0, 4)
    x = np.linspace(-1, 1, 1000) / 3
    a = encode(x, plan, rng_key=bytes(16)).values
    assert np.array_equal(a, encode(x, plan, rng_key=bytes(16)).values)
    assert not np.array_equal(encode(x, plan).values, encode(x, plan).values)


@pytest.mark.parametrize("frac", [0.5, 0.1, 0.93, 1 / 3])
def test_stochastic_rounding_is_unbiased(frac: float) -> None:
    """Round-ups of v = 5 + frac over N draws ~ Binomial(N, frac); |z| < 5.5 fails with
    probability ≈ 4e-8 per case if the rounding is unbiased."""
    plan = plan_ring(2, 10.0, 0)
    n = 200_000
    enc = encode(np.full(n, 5.0 + frac), plan)
    ups = int(np.count_nonzero(enc.values == 6))
    assert int(np.count_nonzero(enc.values == 5)) + ups == n
    z = (ups - n * frac) / math.sqrt(n * frac * (1 - frac))
    assert abs(z) < 5.5


def test_negative_values_round_unbiasedly_and_decode_signed() -> None:
    plan = plan_ring(2, 10.0, 2)
    n = 100_000
    enc = encode(np.full(n, -1.1), plan)  # −4.4 units: −5 w.p. 0.4, −4 w.p. 0.6
    decoded = decode_sum(enc.values, plan)
    assert set(np.unique(decoded)) <= {-1.25, -1.0}
    p = float(np.mean(decoded == -1.25))
    assert abs(p - 0.4) < 5.5 * math.sqrt(0.24 / n)


def test_uint64_ring_roundtrip() -> None:
    plan = plan_ring(5, 1.0, 40)
    assert plan.bits > 32 and plan.dtype is np.uint64 and plan.bytes_per_param == 8
    x = np.array([0.123456789, -0.987654321, 1.0, -1.0, 0.0])
    enc = encode(x, plan)
    assert np.all(np.abs(decode_sum(enc.values, plan) - x) < error_bound(plan, 1))


def test_encoded_values_stay_out_of_repr() -> None:
    """A plaintext update must not reach a log through repr()."""
    plan = plan_ring(2, 1.0, 8)
    enc = encode(np.full(3, 0.123456), plan, rng_key=bytes(16))
    assert "values" not in repr(enc) and str(int(enc.values[0])) not in repr(enc)
