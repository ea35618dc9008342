"""DP events: validation names the parameter; to_dict/event_from_dict round-trip."""

from __future__ import annotations

import json
import math

import pytest

from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import (
    EVENT_TYPES,
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
    TreeIncrementEvent,
    ZCDPEvent,
    event_from_dict,
)
from securefl.errors import ConfigurationError

ALL = [
    NoOpEvent(),
    NonPrivateEvent(),
    GaussianEvent(1.3),
    DiscreteGaussianEvent(100.0, 7.0, 3),
    DistributedDiscreteGaussianEvent(5.0, 8, 10.0, 100.0, 16),
    ZCDPEvent(0.5),
    TreeIncrementEvent(3000.0, 33.5, 12, 2, 1),
    PoissonSampledEvent(0.01, GaussianEvent(1.0)),
    SampledWithoutReplacementEvent(1000, 10, GaussianEvent(2.0)),
    SelfComposedEvent(PoissonSampledEvent(0.5, GaussianEvent(1.0)), 7),
    ComposedEvent((GaussianEvent(1.0), DiscreteGaussianEvent(3.0, 1.0, 1))),
]


@pytest.mark.parametrize("event", ALL, ids=lambda e: type(e).__name__)
def test_round_trip_through_json(event: object) -> None:
    d = event.to_dict()  # type: ignore[attr-defined]
    assert d["type"] in EVENT_TYPES
    assert event_from_dict(json.loads(json.dumps(d))) == event


def test_every_type_is_covered() -> None:
    assert {e.to_dict()["type"] for e in ALL} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: GaussianEvent(0.0), "noise_multiplier"),
        (lambda: GaussianEvent(-1.0), "noise_multiplier"),
        (lambda: GaussianEvent(math.nan), "noise_multiplier"),
        (lambda: GaussianEvent(math.inf), "noise_multiplier"),
        (lambda: GaussianEvent(True), "noise_multiplier"),
        (lambda: PoissonSampledEvent(0.0, GaussianEvent(1.0)), "sampling_probability"),
        (lambda: PoissonSampledEvent(1.5, GaussianEvent(1.0)), "sampling_probability"),
        (lambda: PoissonSampledEvent(math.nan, GaussianEvent(1.0)), "sampling_probability"),
        (lambda: PoissonSampledEvent(0.1, "gaussian"), "event"),
        (lambda: SelfComposedEvent(GaussianEvent(1.0), -1), "count"),
        (lambda: SelfComposedEvent(GaussianEvent(1.0), 2.5), "count"),
        (lambda: SampledWithoutReplacementEvent(10, 11, GaussianEvent(1.0)), "sample_size"),
        (lambda: SampledWithoutReplacementEvent(-1, 1, GaussianEvent(1.0)), "source_size"),
        (lambda: DiscreteGaussianEvent(1.0, 1.0, 0), "dimension"),
        (lambda: DistributedDiscreteGaussianEvent(1.0, 0, 1.0, 1.0, 1), "min_contributors"),
        (lambda: DistributedDiscreteGaussianEvent(1.0, 2, 2.0, 1.0, 1), "l1_sensitivity"),
        (lambda: ComposedEvent((GaussianEvent(1.0), 3)), "events[1]"),
        (lambda: event_from_dict({"type": "laplace"}), "type"),
        (lambda: event_from_dict({"type": "gaussian"}), "noise_multiplier"),
    ],
)
def test_invalid_parameters_raise_typed_error_naming_them(build: object, parameter: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        build()  # type: ignore[operator]
    assert isinstance(info.value, ConfigurationError)
    assert info.value.parameter == parameter


def test_events_are_frozen() -> None:
    e = GaussianEvent(1.0)
    with pytest.raises(AttributeError):
        e.noise_multiplier = 2.0  # type: ignore[misc]


def test_event_decoding_refuses_deep_nesting_and_wrong_types_with_typed_errors() -> None:
    """Fuzz findings (issue 12 hole 8): deep nesting raised RecursionError, a non-list
    ``events`` TypeError, and a deeply nested ``type`` a RecursionError from its repr."""
    from securefl.dp.errors import InvalidParameterError
    from securefl.dp.events import MAX_EVENT_DEPTH, event_from_dict

    deep: dict[str, object] = {"type": "gaussian", "noise_multiplier": 1.0}
    for _ in range(2000):
        deep = {"type": "composed", "events": [deep]}
    with pytest.raises(InvalidParameterError, match=str(MAX_EVENT_DEPTH)):
        event_from_dict(deep)
    with pytest.raises(InvalidParameterError):
        event_from_dict({"type": "composed", "events": True})
    nested: list[object] = []
    for _ in range(3000):
        nested = [nested]
    with pytest.raises(InvalidParameterError):
        event_from_dict({"type": nested})
