from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from securefl.errors import ConfigurationError
from securefl.tensors import TensorLayout, flatten

names = st.text(alphabet="abcdefghij._", min_size=1, max_size=8)
tensors = st.dictionaries(
    names,
    arrays(
        np.float32, array_shapes(max_dims=3, max_side=5), elements=st.floats(-1e3, 1e3, width=32)
    ),
    min_size=1,
    max_size=5,
)


@given(tensors)
def test_round_trip_numpy(named: dict[str, np.ndarray]) -> None:
    flat, layout = flatten(named)
    assert flat.shape == (sum(a.size for a in named.values()),)
    back = layout.unflatten(flat)
    assert set(back) == set(named)
    for name, value in named.items():
        assert back[name].dtype == value.dtype
        np.testing.assert_array_equal(back[name], value)
    assert TensorLayout.from_json(layout.to_json()) == layout


def test_round_trip_torch_and_order_independence() -> None:
    a = {"b": torch.ones(2, 3), "a": torch.arange(4.0)}
    b = {"a": torch.arange(4.0), "b": torch.ones(2, 3)}
    fa, la = flatten(a)
    fb, lb = flatten(b)
    np.testing.assert_array_equal(fa, fb)
    assert la.digest() == lb.digest()
    back = la.unflatten(fa)
    assert isinstance(back["b"], torch.Tensor) and back["b"].dtype == torch.float32
    assert torch.equal(back["a"], torch.arange(4.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_with_name(bad: float) -> None:
    named = {"w": np.array([1.0, bad]), "v": np.zeros(2)}
    with pytest.raises(ConfigurationError, match="w"):
        flatten(named)


def test_layout_mismatch_rejected() -> None:
    _, layout = flatten({"w": np.zeros(3)})
    with pytest.raises(ConfigurationError, match="shape"):
        layout.flatten({"w": np.zeros(4)})
    with pytest.raises(ConfigurationError, match="missing"):
        layout.flatten({"v": np.zeros(3)})
    with pytest.raises(ConfigurationError):
        layout.unflatten(np.zeros(5))
