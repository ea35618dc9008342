"""The accounted sampling must be the performed one: mismatches are typed errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.dp.errors import InvalidParameterError, SamplingMismatchError
from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SampledWithoutReplacementEvent
from securefl.dp.participation import (
    FixedSizeSampling,
    FullParticipation,
    PoissonSampling,
    assert_sampling_matches,
    round_event,
    scheme_of,
)
from securefl.errors import ConfigurationError

G = GaussianEvent(1.0)


def test_round_event_builds_distinct_events() -> None:
    assert round_event(PoissonSampling(0.1), G) == PoissonSampledEvent(0.1, G)
    assert round_event(FixedSizeSampling(100, 10), G) == SampledWithoutReplacementEvent(100, 10, G)
    assert round_event(FullParticipation(100), G) == G
    assert round_event(FixedSizeSampling(10, 10), G) == G
    for s in (PoissonSampling(0.1), FixedSizeSampling(100, 10)):
        assert scheme_of(round_event(s, G)) == s


@pytest.mark.parametrize(
    ("declared", "performed"),
    [
        (PoissonSampling(0.1), FixedSizeSampling(100, 10)),
        (FixedSizeSampling(100, 10), PoissonSampling(0.1)),
        (PoissonSampling(0.1), FullParticipation(100)),
        (FullParticipation(100), PoissonSampling(1.0)),
        (PoissonSampling(0.1), PoissonSampling(0.2)),
        (FixedSizeSampling(100, 10), FixedSizeSampling(100, 11)),
        (FullParticipation(100), FullParticipation(99)),
        (PoissonSampledEvent(0.1, G), FixedSizeSampling(100, 10)),
    ],
)
def test_mismatch_is_an_error(declared: object, performed: object) -> None:
    with pytest.raises(SamplingMismatchError) as info:
        assert_sampling_matches(declared, performed)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)
    assert info.value.parameter == "sampling"


def test_matching_sampling_passes() -> None:
    assert_sampling_matches(PoissonSampling(0.1), PoissonSampledEvent(0.1, G))
    assert_sampling_matches(FixedSizeSampling(50, 5), FixedSizeSampling(50, 5))
    assert_sampling_matches(G, FullParticipation(10))


def test_scheme_validation() -> None:
    with pytest.raises(InvalidParameterError):
        FixedSizeSampling(10, 11)
    with pytest.raises(InvalidParameterError):
        PoissonSampling(0.0)


def test_scheme_from_loop() -> None:
    from securefl.dp.participation import scheme_from_loop

    assert scheme_from_loop("poisson", 100, probability=0.1) == PoissonSampling(0.1)
    assert scheme_from_loop("fixed", 100, cohort=10) == FixedSizeSampling(100, 10)
    assert scheme_from_loop("all", 100) == FullParticipation(100)
    for kwargs, parameter in (
        ({"method": "poisson"}, "probability"),
        ({"method": "fixed"}, "cohort"),
        ({"method": "random"}, "method"),
    ):
        with pytest.raises(InvalidParameterError) as info:
            scheme_from_loop(kwargs["method"], 100)
        assert info.value.parameter == parameter


def test_nested_sampling_declaration_is_compared() -> None:
    """Issue 12, hole 10: a declaration inside a (self-)composed event used to be read as
    "full participation" and never compared with what the loop did."""
    from securefl.dp.events import ComposedEvent, NoOpEvent, SelfComposedEvent

    run = SelfComposedEvent(PoissonSampledEvent(0.1, G), 10)
    assert scheme_of(run) == PoissonSampling(0.1)
    assert_sampling_matches(run, PoissonSampling(0.1))
    for wrong in (PoissonSampling(0.2), FullParticipation(100), FixedSizeSampling(100, 10)):
        with pytest.raises(SamplingMismatchError):
            assert_sampling_matches(run, wrong)
    composed = ComposedEvent((NoOpEvent(), run, SelfComposedEvent(run, 2)))
    assert_sampling_matches(composed, PoissonSampling(0.1))
    with pytest.raises(SamplingMismatchError):
        assert_sampling_matches(composed, PoissonSampling(0.3))
    # two different declarations in one run: ambiguous, refused
    mixed = ComposedEvent((run, SelfComposedEvent(SampledWithoutReplacementEvent(100, 10, G), 3)))
    with pytest.raises(SamplingMismatchError):
        scheme_of(mixed)
    with pytest.raises(SamplingMismatchError):
        assert_sampling_matches(mixed, PoissonSampling(0.1))
    # the performed side may be an event too, nested the same way
    assert_sampling_matches(PoissonSampling(0.1), ComposedEvent((run,)))
    with pytest.raises(SamplingMismatchError):
        assert_sampling_matches(PoissonSampling(0.1), ComposedEvent((mixed,)))
    # a zero-count composition declares nothing
    assert scheme_of(SelfComposedEvent(PoissonSampledEvent(0.5, G), 0)) == FullParticipation()


def test_non_scheme_is_a_typed_error() -> None:
    with pytest.raises(InvalidParameterError):
        assert_sampling_matches("poisson", PoissonSampling(0.1))  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    q=st.floats(0.05, 1.0),
    rounds=st.integers(0, 5),
    m=st.integers(1, 10),
)
def test_cohort_size_leak_is_the_probability_one_coin_decides_a_release(
    n: int, q: float, rounds: int, m: int
) -> None:
    """Brute force over every set of the other units' coins: a round with ≥ m participants
    releases; η counts the draws where the unit's own coin flips that (it is sampled and the
    others are exactly m − 1), so it is the total-variation gap of the release bit."""
    import itertools
    import math

    from securefl.dp.participation import cohort_size_leak

    gap = 0.0
    for coins in itertools.product((0, 1), repeat=n - 1):
        k = sum(coins)
        p = q**k * (1 - q) ** (n - 1 - k)
        without = k >= m  # the unit absent
        with_u = k + 1 >= m  # the unit sampled
        gap += p * q * (with_u != without)
    assert math.isclose(
        cohort_size_leak(n, q, rounds, m), rounds * gap, rel_tol=1e-9, abs_tol=1e-15
    )


def test_cohort_size_leak_validation() -> None:
    from securefl.dp.participation import cohort_size_leak

    for bad in (
        {"population": 0},
        {"min_cohort": 0},
        {"rounds": -1},
        {"rate": 0.0},
        {"rate": float("nan")},
        {"population": True},
    ):
        args = {"population": 5, "rate": 0.5, "rounds": 1, "min_cohort": 3, **bad}
        with pytest.raises(InvalidParameterError) as err:
            cohort_size_leak(**args)  # type: ignore[arg-type]
        assert err.value.parameter == next(iter(bad))
