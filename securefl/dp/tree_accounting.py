"""Tree-aggregated releases (DP-FTRL) for the (ε, δ) accountants (``protocols/dp.md`` §3.2).

DP-FTRL records one :class:`~securefl.dp.events.TreeIncrementEvent` per round. After T
rounds the release is T nodes, each N_Z(0, σ²)^d noise on an integer node sum whose
sensitivity (given the past and the neighbouring pair) is k_v·Δ, Σ_v k_v² ≤ S_T = Σ of the
recorded load increments. Per node, the smoothing theorem of §3.1 puts the discrete node
within e^{±d·η₁(t)} of a post-processed continuous Gaussian with std s = √(σ² − t²); the
continuous nodes form an adaptive composition of Gaussian mechanisms with sensitivities k_vΔ
fixed by the pair, which is μ-GDP with μ = Δ·√(Σ k_v²)/s ≤ Δ·√S_T/s (Dong, Roth, Su 2022,
§3: the composition of μᵢ-GDP steps is √(Σμᵢ²)-GDP). That is exactly what §3.1 says of
ONE ``DiscreteGaussianEvent(σ, Δ·√S_T, d·T)``, so :func:`merge_tree_releases` replaces the
increments of each release by that event, which the accountants already dominate.
Increments must be summed first: an increment is not a dominating pair of its own round, and
wrapping one in a sampling event is refused.

Releases are grouped by (σ, Δ, d): one group uses one smoothing width t for all its nodes
(required: S_T bounds Σ k_v² only for a common s). Two different releases with the same
triple merge into their exact composition (Gaussian pairs compose to the Gaussian pair with
μ² = μ₁² + μ₂²), so grouping never under-counts.
"""

from __future__ import annotations

import math

from securefl.dp.errors import UnsupportedEventError
from securefl.dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DpEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
    TreeIncrementEvent,
    contains,
)

Release = tuple[float, float, int]


def has_tree_increment(event: DpEvent) -> bool:
    """Whether ``event`` contains a :class:`TreeIncrementEvent` anywhere."""
    return contains(event, TreeIncrementEvent)


def refuse_sampled_increments(event: DpEvent) -> None:
    """Raise :class:`UnsupportedEventError` if a sampling wrapper holds a tree increment."""
    if isinstance(event, PoissonSampledEvent | SampledWithoutReplacementEvent):
        if has_tree_increment(event.event):
            raise UnsupportedEventError(
                "a DP-FTRL tree increment inside a sampling event: an increment is not a "
                "mechanism of its own round, so no amplification by sampling applies to it",
                parameter="event",
            )
        return
    if isinstance(event, SelfComposedEvent):
        refuse_sampled_increments(event.event)
    elif isinstance(event, ComposedEvent):
        for e in event.events:
            refuse_sampled_increments(e)


def release_totals(event: DpEvent) -> dict[Release, tuple[int, int]]:
    """Per release (σ, Δ, d): (S = Σ load increments, nodes), multiplicities included."""
    refuse_sampled_increments(event)
    totals: dict[Release, tuple[int, int]] = {}

    def walk(e: DpEvent, count: int) -> None:
        if count == 0:
            return
        if isinstance(e, TreeIncrementEvent):
            load, nodes = totals.get(e.release, (0, 0))
            totals[e.release] = (load + count * e.load_increment, nodes + count * e.nodes)
        elif isinstance(e, SelfComposedEvent):
            walk(e.event, count * e.count)
        elif isinstance(e, ComposedEvent):
            for c in e.events:
                walk(c, count)

    walk(event, 1)
    return totals


def _strip(event: DpEvent) -> DpEvent:
    if isinstance(event, TreeIncrementEvent):
        return NoOpEvent()
    if isinstance(event, SelfComposedEvent):
        return SelfComposedEvent(_strip(event.event), event.count)
    if isinstance(event, ComposedEvent):
        return ComposedEvent(tuple(_strip(e) for e in event.events))
    return event


def merge_tree_releases(event: DpEvent) -> DpEvent:
    """``event`` with its tree increments replaced by one discrete Gaussian per release.

    Unchanged (the same object) when it holds no increment. A release whose load sums to 0
    charged nothing and adds nothing. Sampled increments raise :class:`UnsupportedEventError`.
    """
    if not has_tree_increment(event):
        return event
    totals = release_totals(event)
    merged: list[DpEvent] = [
        DiscreteGaussianEvent(sigma, sens * math.sqrt(load), dimension * nodes)
        for (sigma, sens, dimension), (load, nodes) in sorted(totals.items())
        if load > 0
    ]
    rest = _strip(event)
    if not merged:
        return rest
    return ComposedEvent((rest, *merged))
