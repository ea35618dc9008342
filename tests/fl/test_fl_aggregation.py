"""Secure aggregation computes the same weighted sum as plaintext FedAvg (up to encoding)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.errors import AbortError, ConfigurationError
from securefl.fl.aggregation import PlainAggregator
from securefl.fl.config import RunConfig
from securefl.fl.secure import SecAggAggregator
from securefl.tensors import TensorLayout

CONTEXT = bytes(range(64))


@st.composite
def named_updates(draw: st.DrawFn) -> tuple[TensorLayout, dict[int, np.ndarray], dict[int, float]]:
    n_tensors = draw(st.integers(1, 3))
    shapes = {
        f"layer{i}.lora_{ab}": (draw(st.integers(1, 5)), draw(st.integers(1, 4)))
        for i in range(n_tensors)
        for ab in "AB"
    }
    n = draw(st.integers(5, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layout = None
    inputs: dict[int, np.ndarray] = {}
    for cid in draw(st.lists(st.integers(0, 50), min_size=n, max_size=n, unique=True)):
        named = {k: rng.uniform(-0.9, 0.9, size=s).astype(np.float32) for k, s in shapes.items()}
        if layout is None:
            layout = TensorLayout.from_tensors(named)
        inputs[cid] = layout.flatten(named)
    weights = {c: draw(st.floats(0.05, 1.0)) for c in inputs}
    assert layout is not None
    return layout, inputs, weights


@pytest.mark.parametrize("aggregation", ["secagg", "secagg+"])
@given(case=named_updates(), drop_stage=st.sampled_from([None, "share_keys", "masked_input"]))
def test_secure_sum_equals_plaintext_sum(
    aggregation: str,
    case: tuple[TensorLayout, dict[int, np.ndarray], dict[int, float]],
    drop_stage: str | None,
) -> None:
    layout, inputs, weights = case
    cfg = RunConfig(
        model="tiny",
        aggregation=aggregation,
        dp="none",
        clip=1.0,  # type: ignore[arg-type]
        frac_bits=20,
        n_clients=64,
    )
    dropouts = {min(inputs): drop_stage} if drop_stage else {}
    secure = SecAggAggregator(cfg, dimension=layout.size).aggregate(
        inputs, weights, dropouts=dropouts, round_index=3, context=CONTEXT
    )
    survivors = set(inputs) - set(dropouts)
    assert secure.survivors == survivors
    plain = PlainAggregator().aggregate(
        {c: inputs[c] for c in survivors},
        {c: weights[c] for c in survivors},
        dropouts={},
        round_index=3,
        context=CONTEXT,
    )
    bound = secure.protocol["encoding_error_bound"]
    # float32 wire rounding of the plaintext baseline adds < 2^-24 relative per value
    assert np.max(np.abs(secure.total - plain.total)) <= bound + 1e-6
    assert abs(secure.weight_total - plain.weight_total) <= bound + 1e-6
    named = layout.unflatten(secure.total)
    assert set(named) == set(layout.names)
    assert secure.bytes_up > 0 and secure.bytes_down > 0


@pytest.mark.parametrize("n", [2, 4])  # 4: no semi-malicious (k, t) exists
def test_too_small_cohort_aborts(n: int) -> None:
    cfg = RunConfig(model="tiny", aggregation="secagg+", dp="none", n_clients=8)
    agg = SecAggAggregator(cfg, dimension=4)
    with pytest.raises(AbortError):
        agg.aggregate(
            {i: np.zeros(4) for i in range(n)},
            dict.fromkeys(range(n), 1.0),
            dropouts={},
            round_index=0,
            context=CONTEXT,
        )


def test_plain_rejects_bad_inputs() -> None:
    agg = PlainAggregator()
    with pytest.raises(ConfigurationError, match="non-finite"):
        agg.aggregate(
            {1: np.array([np.nan])}, {1: 1.0}, dropouts={}, round_index=0, context=CONTEXT
        )
    with pytest.raises(ConfigurationError, match="shapes"):
        agg.aggregate(
            {1: np.zeros(2), 2: np.zeros(3)},
            {1: 1.0, 2: 1.0},
            dropouts={},
            round_index=0,
            context=CONTEXT,
        )
