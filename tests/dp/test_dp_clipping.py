"""clip_l2 never exceeds C, exactly (hypothesis), and leaves short vectors alone."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from securefl.dp.clipping import clip_l2
from securefl.dp.errors import InvalidParameterError

finite = st.floats(min_value=-1e150, max_value=1e150, allow_nan=False, allow_infinity=False)


@given(
    x=arrays(np.float64, st.integers(1, 300), elements=finite),
    clip=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
)
def test_clipped_norm_never_exceeds_clip_exactly(x: np.ndarray, clip: float) -> None:
    out, norm = clip_l2(x, clip)
    exact_sq = sum(Fraction(float(v)) ** 2 for v in out)  # exact rational norm²
    assert exact_sq <= Fraction(clip) ** 2
    assert float(np.linalg.norm(out)) <= clip * (1 + 1e-15)
    assert norm == pytest.approx(float(np.linalg.norm(x)), rel=1e-9)
    if norm <= clip:
        assert np.array_equal(out, x)
    else:  # direction preserved: a positive multiple of x
        k = int(np.argmax(np.abs(x)))
        assert np.allclose(out, x * (out[k] / x[k]), rtol=1e-12, atol=0)


def test_adversarial_rounding_case() -> None:
    """Vectors whose naive x·(C/‖x‖) lands above C get pulled back under it."""
    rng = np.random.default_rng(3)  # test inputs only
    over = 0
    for _ in range(2000):
        x = rng.normal(size=7) * 10.0 ** rng.integers(-5, 5)
        naive = x * (1.0 / float(np.linalg.norm(x)))
        over += float(np.linalg.norm(naive)) > 1.0
        out, _ = clip_l2(x, 1.0)
        assert math.fsum(float(v) ** 2 for v in out) <= 1.0
    assert over > 0  # the naive formula does exceed C on some of these inputs


@pytest.mark.parametrize(
    ("x", "clip", "parameter"),
    [
        (np.ones(3), 0.0, "clip"),
        (np.ones(3), math.nan, "clip"),
        (np.ones(3), math.inf, "clip"),
        (np.array([1.0, math.nan]), 1.0, "flat"),
        (np.array([1.0, math.inf]), 1.0, "flat"),
        (np.ones((2, 2)), 1.0, "flat"),
    ],
)
def test_invalid_inputs(x: np.ndarray, clip: float, parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        clip_l2(x, clip)
    assert info.value.parameter == parameter
