"""DP events: frozen data that documents a mechanism completely enough to account for it.

In the spirit of dp_accounting's ``dp_event.py``: an accountant interprets events, an event's
meaning never changes (new behaviour = new event type), and every event round-trips through
``to_dict()`` / :func:`event_from_dict` so a ledger entry is data an auditor can recompute from.

Conventions (see ``protocols/dp.md``):

* A noise parameter is always relative to the L2 sensitivity of the query *under the adjacency
  the accountant is asked about*: ``GaussianEvent(z)`` is the Gaussian mechanism whose noise
  standard deviation is ``z·Δ₂``. The mechanism that emits the event computes Δ₂ (clip norm,
  weight cap, the doubling of replace-one adjacency) and records it in its own parameters.
* Discrete events are stated in integer grid units (σ and Δ of the integer query), because the
  rounding slack that makes Δ larger than the float clip norm is part of the mechanism.
* Sampling wrappers say how the *unit* (client or example) was chosen each time the inner event
  ran: Poisson (independent coin per unit), fixed-size without replacement, or (no wrapper)
  every unit participates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError


@dataclass(frozen=True)
class DpEvent:
    """Base class of every event; subclasses set ``type_name`` (the ``"type"`` of ``to_dict``)."""

    type_name: ClassVar[str] = "abstract"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, ``{"type": ..., <fields>}``, nested events as dicts."""
        raise NotImplementedError


@dataclass(frozen=True)
class NoOpEvent(DpEvent):
    """A step that touches no private data (e.g. a round where nothing was released)."""

    type_name: ClassVar[str] = "noop"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name}


@dataclass(frozen=True)
class NonPrivateEvent(DpEvent):
    """A release with no DP guarantee: every accountant reports ε = ∞ (δ = 1)."""

    type_name: ClassVar[str] = "non_private"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name}


@dataclass(frozen=True)
class GaussianEvent(DpEvent):
    """Gaussian mechanism: query + N(0, (z·Δ₂)² I) with continuous (real-valued) noise.

    ``noise_multiplier`` is z = σ/Δ₂ where Δ₂ is the L2 sensitivity of the query.
    """

    noise_multiplier: float
    type_name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        v.positive("noise_multiplier", self.noise_multiplier)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "noise_multiplier": float(self.noise_multiplier)}


@dataclass(frozen=True)
class DiscreteGaussianEvent(DpEvent):
    """Product discrete Gaussian (Canonne–Kamath–Steinke 2020): integer query + N_Z(0, σ²)^d.

    ``sigma`` is the scale parameter of N_Z (grid units), ``l2_sensitivity`` the L2 sensitivity
    Δ₂ of the *integer* query (rounding slack included), ``dimension`` is d. By CKS Thm 14 the
    mechanism is ρ-zCDP with ρ = Δ₂²/(2σ²); for d = 1 and integer Δ its PLD is exact.
    """

    sigma: float
    l2_sensitivity: float
    dimension: int
    type_name: ClassVar[str] = "discrete_gaussian"

    def __post_init__(self) -> None:
        v.positive("sigma", self.sigma)
        v.positive("l2_sensitivity", self.l2_sensitivity)
        v.count("dimension", self.dimension, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "sigma": float(self.sigma),
            "l2_sensitivity": float(self.l2_sensitivity),
            "dimension": int(self.dimension),
        }


@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent(DpEvent):
    """Sum of ``min_contributors`` independent N_Z(0, σ²)^d vectors added to an integer query.

    Kairouz, Liu, Steinke (ICML 2021), Thm 1: the sum of n discrete Gaussians on a query with L2
    sensitivity Δ₂ and L1 sensitivity Δ₁ is ½ε²-concentrated DP with
    ε = min{ √(Δ₂²/(nσ²) + ½τd), Δ₁/(√n σ) + τ√d },  τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)).
    ``min_contributors`` is the WORST case: the fewest clients whose noise can be in the sum
    (minimum cohort after dropouts), never the expected count. ``sigma`` is per client.
    """

    sigma: float
    min_contributors: int
    l2_sensitivity: float
    l1_sensitivity: float
    dimension: int
    type_name: ClassVar[str] = "distributed_discrete_gaussian"

    def __post_init__(self) -> None:
        v.positive("sigma", self.sigma)
        v.count("min_contributors", self.min_contributors, minimum=1)
        v.positive("l2_sensitivity", self.l2_sensitivity)
        v.positive("l1_sensitivity", self.l1_sensitivity)
        v.count("dimension", self.dimension, minimum=1)
        if self.l1_sensitivity + 1e-9 * self.l1_sensitivity < self.l2_sensitivity:
            raise InvalidParameterError("must be >= l2_sensitivity", parameter="l1_sensitivity")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "sigma": float(self.sigma),
            "min_contributors": int(self.min_contributors),
            "l2_sensitivity": float(self.l2_sensitivity),
            "l1_sensitivity": float(self.l1_sensitivity),
            "dimension": int(self.dimension),
        }


@dataclass(frozen=True)
class ZCDPEvent(DpEvent):
    """A mechanism known only to be ρ-zCDP (RDP ε(α) = ρα for all α > 1)."""

    rho: float
    type_name: ClassVar[str] = "zcdp"

    def __post_init__(self) -> None:
        v.positive("rho", self.rho)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "rho": float(self.rho)}


@dataclass(frozen=True)
class TreeIncrementEvent(DpEvent):
    """One round of a tree-aggregated discrete Gaussian release (DP-FTRL; ``protocols/dp.md``
    §3.2, §4.7): this round's tree node (``nodes`` of them, each N_Z(0, σ²)^d on an integer
    node sum) is released and the release's node load S grows by ``load_increment``.

    ``sigma`` σ is the grid noise of every node, ``l2_sensitivity`` Δ the grid sensitivity of
    ONE participation, ``dimension`` d the coordinates of one node. The whole release after T
    rounds is dominated by ONE Gaussian mechanism with sensitivity Δ·√S_T, S_T = Σ of the
    increments, on d·T coordinates; so an increment is not a mechanism of its own round:
    accountants sum the increments of a release before converting (never per round), and
    no sampling wrapper may hold one. RDP/zCDP: ρ = Δ²·load_increment/(2σ²), additive.
    """

    sigma: float
    l2_sensitivity: float
    dimension: int
    load_increment: int
    nodes: int = 1
    type_name: ClassVar[str] = "discrete_gaussian_tree_increment"

    def __post_init__(self) -> None:
        v.positive("sigma", self.sigma)
        v.positive("l2_sensitivity", self.l2_sensitivity)
        v.count("dimension", self.dimension, minimum=1)
        v.count("load_increment", self.load_increment)
        v.count("nodes", self.nodes, minimum=1)

    @property
    def rho(self) -> float:
        """zCDP growth Δ²·ΔS/(2σ²) (the same float operations DP-FTRL's zcdp events used)."""
        sens, sigma = self.l2_sensitivity, self.sigma
        return sens * sens * self.load_increment / (2.0 * sigma * sigma)

    @property
    def release(self) -> tuple[float, float, int]:
        """(σ, Δ, d): increments with the same triple are accounted as one release."""
        return (float(self.sigma), float(self.l2_sensitivity), int(self.dimension))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "sigma": float(self.sigma),
            "l2_sensitivity": float(self.l2_sensitivity),
            "dimension": int(self.dimension),
            "load_increment": int(self.load_increment),
            "nodes": int(self.nodes),
        }


@dataclass(frozen=True)
class PoissonSampledEvent(DpEvent):
    """Each unit joins independently with probability q, then ``event`` runs on the sample.

    Accounted under add/remove adjacency (Poisson sampling's natural relation).
    """

    sampling_probability: float
    event: DpEvent
    type_name: ClassVar[str] = "poisson_sampled"

    def __post_init__(self) -> None:
        v.probability("sampling_probability", self.sampling_probability)
        _check_event("event", self.event)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "sampling_probability": float(self.sampling_probability),
            "event": self.event.to_dict(),
        }


@dataclass(frozen=True)
class SampledWithoutReplacementEvent(DpEvent):
    """A fixed-size sample of ``sample_size`` of ``source_size`` units, uniformly without
    replacement, then ``event`` runs on it. Accounted under replace-one adjacency only
    (the population size is public and fixed)."""

    source_size: int
    sample_size: int
    event: DpEvent
    type_name: ClassVar[str] = "sampled_without_replacement"

    def __post_init__(self) -> None:
        v.count("source_size", self.source_size, minimum=1)
        v.count("sample_size", self.sample_size, minimum=1)
        if self.sample_size > self.source_size:
            raise InvalidParameterError("must be <= source_size", parameter="sample_size")
        _check_event("event", self.event)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "source_size": int(self.source_size),
            "sample_size": int(self.sample_size),
            "event": self.event.to_dict(),
        }


@dataclass(frozen=True)
class SelfComposedEvent(DpEvent):
    """``event`` run ``count`` times adaptively (e.g. T training rounds)."""

    event: DpEvent
    count: int
    type_name: ClassVar[str] = "self_composed"

    def __post_init__(self) -> None:
        _check_event("event", self.event)
        v.count("count", self.count)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "event": self.event.to_dict(), "count": int(self.count)}


@dataclass(frozen=True)
class ComposedEvent(DpEvent):
    """Adaptive composition of different events, in order."""

    events: tuple[DpEvent, ...] = field(default_factory=tuple)
    type_name: ClassVar[str] = "composed"

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            object.__setattr__(self, "events", tuple(self.events))
        for i, e in enumerate(self.events):
            _check_event(f"events[{i}]", e)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "events": [e.to_dict() for e in self.events]}


def contains(event: DpEvent, leaf: type[DpEvent] | tuple[type[DpEvent], ...]) -> bool:
    """Whether a ``leaf``-typed event occurs anywhere in ``event`` (inside sampling wrappers
    and compositions, whatever their counts)."""
    if isinstance(event, leaf):
        return True
    if isinstance(event, PoissonSampledEvent | SampledWithoutReplacementEvent | SelfComposedEvent):
        return contains(event.event, leaf)
    if isinstance(event, ComposedEvent):
        return any(contains(e, leaf) for e in event.events)
    return False


def _check_event(name: str, value: object) -> None:
    if not isinstance(value, DpEvent) or type(value) is DpEvent:
        raise InvalidParameterError(
            f"must be a DpEvent, got {type(value).__name__}", parameter=name
        )


def _get(d: Mapping[str, Any], key: str) -> Any:
    if key not in d:
        raise InvalidParameterError("missing field in event dict", parameter=key)
    return d[key]


#: Deepest nesting of sampled / composed events a decoder follows. The loop records depth ≤ 4;
#: a recorded event from a peer or a file nested deeper is refused, not recursed into.
MAX_EVENT_DEPTH = 64

_Decoder = Callable[[Mapping[str, Any], int], DpEvent]


def _events(d: Mapping[str, Any], depth: int) -> tuple[DpEvent, ...]:
    items = _get(d, "events")
    if not isinstance(items, list | tuple):
        raise InvalidParameterError("must be a list of events", parameter="events")
    return tuple(_decode(e, depth + 1) for e in items)


_DECODERS: dict[str, _Decoder] = {
    NoOpEvent.type_name: lambda d, depth: NoOpEvent(),
    NonPrivateEvent.type_name: lambda d, depth: NonPrivateEvent(),
    GaussianEvent.type_name: lambda d, depth: GaussianEvent(_get(d, "noise_multiplier")),
    DiscreteGaussianEvent.type_name: lambda d, depth: DiscreteGaussianEvent(
        _get(d, "sigma"), _get(d, "l2_sensitivity"), _get(d, "dimension")
    ),
    DistributedDiscreteGaussianEvent.type_name: lambda d, depth: DistributedDiscreteGaussianEvent(
        _get(d, "sigma"),
        _get(d, "min_contributors"),
        _get(d, "l2_sensitivity"),
        _get(d, "l1_sensitivity"),
        _get(d, "dimension"),
    ),
    ZCDPEvent.type_name: lambda d, depth: ZCDPEvent(_get(d, "rho")),
    TreeIncrementEvent.type_name: lambda d, depth: TreeIncrementEvent(
        _get(d, "sigma"),
        _get(d, "l2_sensitivity"),
        _get(d, "dimension"),
        _get(d, "load_increment"),
        _get(d, "nodes"),
    ),
    PoissonSampledEvent.type_name: lambda d, depth: PoissonSampledEvent(
        _get(d, "sampling_probability"), _decode(_get(d, "event"), depth + 1)
    ),
    SampledWithoutReplacementEvent.type_name: lambda d, depth: SampledWithoutReplacementEvent(
        _get(d, "source_size"), _get(d, "sample_size"), _decode(_get(d, "event"), depth + 1)
    ),
    SelfComposedEvent.type_name: lambda d, depth: SelfComposedEvent(
        _decode(_get(d, "event"), depth + 1), _get(d, "count")
    ),
    ComposedEvent.type_name: lambda d, depth: ComposedEvent(_events(d, depth)),
}

EVENT_TYPES: tuple[str, ...] = tuple(_DECODERS)


def event_from_dict(d: Mapping[str, Any]) -> DpEvent:
    """Inverse of ``DpEvent.to_dict``; unknown types, bad fields and nesting deeper than
    :data:`MAX_EVENT_DEPTH` raise :class:`~securefl.dp.errors.InvalidParameterError`."""
    return _decode(d, 0)


def _decode(d: Any, depth: int) -> DpEvent:
    if depth > MAX_EVENT_DEPTH:
        raise InvalidParameterError(
            f"events nested deeper than {MAX_EVENT_DEPTH}", parameter="event"
        )
    if not isinstance(d, Mapping):
        raise InvalidParameterError(f"must be a mapping, got {type(d).__name__}", parameter="event")
    kind = d.get("type")
    if not isinstance(kind, str) or kind not in _DECODERS:
        shown = repr(kind[:64]) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise InvalidParameterError(f"unknown event type {shown}", parameter="type")
    return _DECODERS[kind](d, depth)
