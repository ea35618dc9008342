"""Which units take part in a round: the sampling that is accounted must be the one performed.

Poisson sampling (independent coin per unit), fixed-size sampling without replacement and full
participation have different privacy amplification (and different natural adjacency), so they
are different events. The loop builds its event with :func:`round_event` from the scheme it
*declares*, records what it *performed* each round, and calls :func:`assert_sampling_matches`:
a mismatch is an error, never a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError, SamplingMismatchError
from securefl.dp.events import DpEvent, PoissonSampledEvent, SampledWithoutReplacementEvent


@dataclass(frozen=True)
class PoissonSampling:
    """Each unit joins independently with ``probability`` (cohort size is random)."""

    probability: float

    def __post_init__(self) -> None:
        v.probability("probability", self.probability)


@dataclass(frozen=True)
class FixedSizeSampling:
    """Exactly ``cohort`` of ``population`` units, uniformly without replacement."""

    population: int
    cohort: int

    def __post_init__(self) -> None:
        v.count("population", self.population, minimum=1)
        v.count("cohort", self.cohort, minimum=1)
        if self.cohort > self.population:
            raise InvalidParameterError("must be <= population", parameter="cohort")


@dataclass(frozen=True)
class FullParticipation:
    """Every unit takes part in every round (no amplification by sampling)."""

    population: int | None = None

    def __post_init__(self) -> None:
        if self.population is not None:
            v.count("population", self.population, minimum=1)


SamplingScheme = PoissonSampling | FixedSizeSampling | FullParticipation


def scheme_from_loop(
    method: str,
    population: int,
    *,
    probability: float | None = None,
    cohort: int | None = None,
) -> SamplingScheme:
    """The scheme a loop performs: ``"poisson"`` (needs ``probability``), ``"fixed"`` (needs
    ``cohort``) or ``"all"``; what the loop records so it can be checked against the
    declared scheme."""
    v.count("population", population, minimum=1)
    if method == "poisson":
        if probability is None:
            raise InvalidParameterError("required for Poisson sampling", parameter="probability")
        return PoissonSampling(probability)
    if method == "fixed":
        if cohort is None:
            raise InvalidParameterError("required for fixed-size sampling", parameter="cohort")
        return FixedSizeSampling(population, cohort)
    if method == "all":
        return FullParticipation(population)
    raise InvalidParameterError(
        f"must be 'poisson', 'fixed' or 'all', got {method!r}", parameter="method"
    )


def round_event(scheme: SamplingScheme | None, mechanism: DpEvent) -> DpEvent:
    """The event of one round: ``mechanism`` run on the units chosen by ``scheme``."""
    if scheme is None or isinstance(scheme, FullParticipation):
        return mechanism
    if isinstance(scheme, PoissonSampling):
        return PoissonSampledEvent(scheme.probability, mechanism)
    if isinstance(scheme, FixedSizeSampling):
        if scheme.cohort == scheme.population:
            return mechanism
        return SampledWithoutReplacementEvent(scheme.population, scheme.cohort, mechanism)
    raise InvalidParameterError(
        f"unknown sampling scheme {type(scheme).__name__}", parameter="sampling"
    )


def scheme_of(event: DpEvent) -> SamplingScheme:
    """The sampling scheme an event declares at its top level."""
    if isinstance(event, PoissonSampledEvent):
        return PoissonSampling(event.sampling_probability)
    if isinstance(event, SampledWithoutReplacementEvent):
        return FixedSizeSampling(event.source_size, event.sample_size)
    return FullParticipation()


def assert_sampling_matches(
    declared: SamplingScheme | DpEvent, performed: SamplingScheme | DpEvent
) -> None:
    """Raise :class:`SamplingMismatchError` unless the loop did what the accounting assumed.

    Kinds must agree; Poisson probabilities must be equal; fixed-size population and cohort
    must be equal; full participation must agree on the population when both give one.
    """
    d = scheme_of(declared) if isinstance(declared, DpEvent) else declared
    p = scheme_of(performed) if isinstance(performed, DpEvent) else performed
    if type(d) is not type(p):
        raise SamplingMismatchError(
            f"declared {type(d).__name__} but the loop performed {type(p).__name__}",
            parameter="sampling",
        )
    if d != p:
        if (
            isinstance(d, FullParticipation)
            and isinstance(p, FullParticipation)
            and (d.population is None or p.population is None)
        ):
            return
        raise SamplingMismatchError(f"declared {d} but performed {p}", parameter="sampling")
