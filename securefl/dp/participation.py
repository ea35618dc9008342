"""Which units take part in a round: the sampling that is accounted must be the one performed.

Poisson sampling (independent coin per unit), fixed-size sampling without replacement and full
participation have different privacy amplification (and different natural adjacency), so they
are different events. The loop builds its event with :func:`round_event` from the scheme it
*declares*, records what it *performed* each round, and calls :func:`assert_sampling_matches`:
a mismatch is an error, never a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError, SamplingMismatchError
from securefl.dp.events import (
    ComposedEvent,
    DpEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
)


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


def sampling_schemes(event: DpEvent) -> tuple[SamplingScheme, ...]:
    """Every round-level sampling declaration inside ``event``, distinct, in first-seen order.

    Walks through :class:`SelfComposedEvent` (count > 0) and :class:`ComposedEvent`; a
    mechanism without a sampling wrapper declares full participation; :class:`NoOpEvent`
    and zero-count compositions declare nothing.
    """
    out: list[SamplingScheme] = []

    def walk(e: DpEvent) -> None:
        if isinstance(e, NoOpEvent):
            return
        if isinstance(e, SelfComposedEvent):
            if e.count > 0:
                walk(e.event)
            return
        if isinstance(e, ComposedEvent):
            for child in e.events:
                walk(child)
            return
        if isinstance(e, PoissonSampledEvent):
            found: SamplingScheme = PoissonSampling(e.sampling_probability)
        elif isinstance(e, SampledWithoutReplacementEvent):
            found = FixedSizeSampling(e.source_size, e.sample_size)
        else:
            found = FullParticipation()
        if found not in out:
            out.append(found)

    if not isinstance(event, DpEvent):
        raise InvalidParameterError(
            f"must be a DpEvent, got {type(event).__name__}", parameter="event"
        )
    walk(event)
    return tuple(out)


def scheme_of(event: DpEvent) -> SamplingScheme:
    """The one sampling scheme ``event`` declares, looking inside compositions.

    Raises :class:`SamplingMismatchError` when a composition declares several different
    schemes (the loop performs one; which one was accounted would be ambiguous).
    """
    schemes = sampling_schemes(event)
    if not schemes:
        return FullParticipation()
    if len(schemes) > 1:
        raise SamplingMismatchError(
            f"the event declares several sampling schemes: {list(schemes)}",
            parameter="sampling",
        )
    return schemes[0]


def _same(d: SamplingScheme, p: SamplingScheme) -> bool:
    if type(d) is not type(p):
        return False
    if d == p:
        return True
    return (
        isinstance(d, FullParticipation)
        and isinstance(p, FullParticipation)
        and (d.population is None or p.population is None)
    )


def _schemes(value: SamplingScheme | DpEvent, name: str) -> tuple[SamplingScheme, ...]:
    if isinstance(value, DpEvent):
        return sampling_schemes(value) or (FullParticipation(),)
    if isinstance(value, PoissonSampling | FixedSizeSampling | FullParticipation):
        return (value,)
    raise InvalidParameterError(
        f"must be a sampling scheme or a DpEvent, got {type(value).__name__}", parameter=name
    )


def assert_sampling_matches(
    declared: SamplingScheme | DpEvent, performed: SamplingScheme | DpEvent
) -> None:
    """Raise :class:`SamplingMismatchError` unless the loop did what the accounting assumed.

    Every sampling declaration inside ``declared`` — including those nested in composed and
    self-composed events — must agree with every one inside ``performed``: kinds must agree;
    Poisson probabilities must be equal; fixed-size population and cohort must be equal; full
    participation must agree on the population when both give one.
    """
    for d in _schemes(declared, "declared"):
        for p in _schemes(performed, "performed"):
            if type(d) is not type(p):
                raise SamplingMismatchError(
                    f"declared {type(d).__name__} but the loop performed {type(p).__name__}",
                    parameter="sampling",
                )
            if not _same(d, p):
                raise SamplingMismatchError(f"declared {d} but performed {p}", parameter="sampling")


def cohort_size_leak(population: int, rate: float, rounds: int, min_cohort: int) -> float:
    """η of ``protocols/dp.md`` §5: the chance, summed over ``rounds``, that one unit's Poisson
    coin decides whether a round reaches ``min_cohort`` participants (below it the round is
    refused or aborted and the model does not move), q·P[Bin(N − 1, q) = m − 1] a round.

    No DP event covers that decision: without dropouts a run accounted (ε, δ) holds
    (ε, δ + e^ε·η). ``population`` counts the unit itself (N)."""
    for name, value, low in (("population", population, 1), ("min_cohort", min_cohort, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidParameterError(
                f"must be an integer ≥ {low}, got {value!r}", parameter=name
            )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise InvalidParameterError(f"must be an integer ≥ 0, got {rounds!r}", parameter="rounds")
    q = v.probability("rate", rate)
    others, k = population - 1, min_cohort - 1
    if k > others:
        return 0.0
    if q == 1.0:
        pmf = 1.0 if k == others else 0.0
    else:
        log_pmf = (
            math.lgamma(others + 1)
            - math.lgamma(k + 1)
            - math.lgamma(others - k + 1)
            + k * math.log(q)
            + (others - k) * math.log1p(-q)
        )
        pmf = math.exp(log_pmf)
    return rounds * q * pmf
