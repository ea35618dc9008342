"""Issue 12, hole 8: every accountant entry point fails closed with securefl's typed errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securefl.dp.accounting import get_accountant
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DpEvent,
    GaussianEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
)
from securefl.errors import SecureFLError

NAMES = ("pld", "prv", "rdp")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [None, "gaussian", {"type": "gaussian"}, 1.0, DpEvent()])
def test_non_event_is_a_typed_error(name: str, bad: object) -> None:
    acc = get_accountant(name)
    for call in (
        lambda: acc.supports(bad),  # type: ignore[arg-type]
        lambda: acc.epsilon(bad, 1e-5),  # type: ignore[arg-type]
        lambda: acc.delta(bad, 1.0),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidParameterError) as info:
            call()
        assert info.value.parameter == "event"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, math.nan, math.inf, "1e-5"])
def test_bad_delta_is_named(name: str, delta: object) -> None:
    with pytest.raises(InvalidParameterError) as info:
        get_accountant(name).epsilon(GaussianEvent(1.0), delta)  # type: ignore[arg-type]
    assert info.value.parameter == "delta"


def _extreme_event(kind: int, q: float, z: float, rounds: int) -> DpEvent:
    if kind == 0:
        mech: DpEvent = GaussianEvent(z)
    elif kind == 1:
        mech = DiscreteGaussianEvent(max(z * 100.0, 1e-300), 100.0, 1000)
    else:
        mech = DistributedDiscreteGaussianEvent(max(z, 1e-300), 7, 3.0, 9.0, 64)
    inner = mech if q == 1.0 else PoissonSampledEvent(q, mech)
    return ComposedEvent((SelfComposedEvent(inner, rounds), GaussianEvent(1e3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(NAMES),
    kind=st.integers(0, 2),
    q=st.sampled_from([1e-12, 1e-6, 0.3, 1.0]) | st.floats(1e-12, 1.0),
    z=st.sampled_from([1e-6, 0.01, 0.5, 1e3, 1e8]) | st.floats(1e-6, 1e8),
    rounds=st.sampled_from([0, 1, 10**4, 10**9, 10**12]),
    delta=st.sampled_from([1e-300, 1e-12, 0.5, 1 - 1e-12]),
    eps=st.sampled_from([0.0, 1e-9, 1.0, 1e6]),
)
def test_extreme_parameters_escape_only_typed(
    name: str, kind: int, q: float, z: float, rounds: int, delta: float, eps: float
) -> None:
    """ε is a number ≥ 0 (finite or ∞), δ ∈ [0, 1], or a SecureFLError naming ``event``."""
    acc = get_accountant(name)
    event = _extreme_event(kind, q, z, rounds)
    try:
        acc.supports(event)
        e = acc.epsilon(event, delta)
        assert e >= 0.0 and not math.isnan(e)
        d = acc.delta(event, eps)
        assert 0.0 <= d <= 1.0
    except SecureFLError as exc:
        assert getattr(exc, "parameter", None) == "event", exc
