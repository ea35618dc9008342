"""The overflow planner picks the smallest safe ring and refuses anything that could wrap."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.encoding import RingPlan, plan_ring
from securefl.errors import ConfigurationError


def _need(n: int, clip: float, f: int, w: float) -> Fraction:
    wc = Fraction(w) * Fraction(clip) * 2**f
    return n * max(Fraction(math.floor(wc) + 1), Fraction(w) * (Fraction(clip) * 2**f + 1))


@given(
    n=st.integers(1, 10**6),
    clip=st.floats(1e-3, 1e4),
    f=st.integers(0, 30),
    w=st.floats(0.01, 100.0),
)
def test_plan_is_the_smallest_width_meeting_the_rule(n: int, clip: float, f: int, w: float) -> None:
    need = _need(n, clip, f, w)
    try:
        plan = plan_ring(n, clip, f, w)
    except ConfigurationError as exc:
        assert need >= 2**63 or Fraction(w) * Fraction(clip) * 2**f >= 2**52, str(exc)
        return
    assert need < 2 ** (plan.bits - 1)  # the rule of REFERENCE.md (and the exact one)
    assert n * plan.max_abs_int < 2 ** (plan.bits - 1)
    if plan.bits > 1:
        assert need >= 2 ** (plan.bits - 2)  # one bit fewer would violate it
        with pytest.raises(ConfigurationError, match="wrap"):
            plan_ring(n, clip, f, w, bits=plan.bits - 1)
    assert plan.dtype is (np.uint32 if plan.bits <= 32 else np.uint64)
    assert plan.modulus == 2**plan.bits
    assert RingPlan.from_dict(plan.to_dict()) == plan


def test_reference_examples() -> None:
    # b ≥ f + ⌈log2(n·c)⌉ + 1 (REFERENCE.md), +1 for the rounding slack when n·c is a power of 2.
    assert plan_ring(1000, 1.0, 16).bits == 27
    assert plan_ring(100, 1.0, 16).bits == 24
    assert plan_ring(1000, 8.0, 18).bits == 32
    assert plan_ring(1000, 8.0, 18).bytes_per_param == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_clients": 10**6, "clip": 1e3, "frac_bits": 40}, "64"),
        ({"n_clients": 0, "clip": 1.0, "frac_bits": 8}, "n_clients"),
        ({"n_clients": 3, "clip": 0.0, "frac_bits": 8}, "clip"),
        ({"n_clients": 3, "clip": float("nan"), "frac_bits": 8}, "clip"),
        ({"n_clients": 3, "clip": float("inf"), "frac_bits": 8}, "clip"),
        ({"n_clients": 3, "clip": 1.0, "frac_bits": -1}, "frac_bits"),
        ({"n_clients": 3, "clip": 1.0, "frac_bits": 53}, "frac_bits"),
        ({"n_clients": 3, "clip": 1.0, "frac_bits": 8, "max_weight": -1.0}, "max_weight"),
        ({"n_clients": 3, "clip": 1.0, "frac_bits": 8, "bits": 65}, "bits"),
        ({"n_clients": 3, "clip": 1.0, "frac_bits": 8, "bits": 4}, "wrap"),
        ({"n_clients": 2, "clip": 2.0**30, "frac_bits": 30}, "2\\^52"),
    ],
)
def test_refusals_name_the_problem(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        plan_ring(**kwargs)  # type: ignore[arg-type]


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigurationError, match="wrap"):
        RingPlan(bits=8, frac_bits=8, clip=1.0, n_clients=10)
    plan = RingPlan(bits=32, frac_bits=8, clip=1.0, n_clients=10)
    assert plan.bits == 32  # a wider forced ring is fine
