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


# ----- peer-facing parser (issue 12 #8): only typed errors, nothing silently dropped -----


def _good_json() -> str:
    return TensorLayout.from_tensors({"a": np.zeros(2), "b": np.zeros((2, 3))}).to_json()


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('[["a",[1e400],"float64","numpy"]]', "shape"),  # OverflowError before
        ("[" * 100_000 + "]" * 100_000, "invalid layout JSON"),  # RecursionError before
        ('[["a",[-2,-3],"float64","numpy"]]', "shape"),  # size 6 by np.prod before
        ('[["a",[4294967296,4294967296,4],"float64","numpy"]]', "2\\^62"),  # int64 wrap to 0
        ('[["a",[2],"float64","numpy"],["a",[2],"float64","numpy"]]', "duplicate"),
        ('[["a",[0],"float64","numpy"],["b",[2],"float64","numpy"]]', "zero-size"),
        ('[["b",[2],"float64","numpy"],["a",[2],"float64","numpy"]]', "sorted"),
        ('[["a",[2.0],"float64","numpy"]]', "shape"),
        ('[["a",[true],"float64","numpy"]]', "shape"),
        ('[["a",[2],"float64"]]', "name, shape"),
        ('[["",[2],"float64","numpy"]]', "name"),
        ("[]", "non-empty"),
        ('{"a": 1}', "non-empty"),
        ('[["a",[' + "9" * 5000 + '],"float64","numpy"]]', "invalid layout JSON"),
        ('[["a",[' + ",".join(["2"] * 200_000) + '],"float64","numpy"]]', "2\\^62"),
    ],
)
def test_from_json_refuses_with_typed_error(text: str, what: str) -> None:
    with pytest.raises(ConfigurationError, match=what):
        TensorLayout.from_json(text)


def test_from_json_accepts_canonical_and_sizes_exactly() -> None:
    layout = TensorLayout.from_json(_good_json())
    assert layout.size == 8
    big = TensorLayout.from_json('[["a",[4294967296,1073741824],"float64","numpy"]]')
    assert big.size == 2**62  # exact Python int, no int64 wrap


def test_zero_size_tensor_refused_at_flatten() -> None:
    with pytest.raises(ConfigurationError, match="zero-size"):
        flatten({"a": np.zeros((3, 0)), "b": np.ones(2)})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(json_values)
def test_from_json_fuzz_only_typed_errors(value: object) -> None:
    import json

    for text in (json.dumps(value), json.dumps([value]), json.dumps([["a", value, "f", "k"]])):
        try:
            layout = TensorLayout.from_json(text)
        except ConfigurationError:
            continue
        names = layout.names
        assert list(names) == sorted(set(names))
        assert all(spec.size >= 1 for spec in layout.specs)
        assert TensorLayout.from_json(layout.to_json()) == layout
