"""What the accountant is told about each round, noise calibration, and the ε so far.

The per-round DP event states exactly how clients were chosen (Poisson with rate q under
add/remove adjacency, or a fixed-size sample of m of N under replace-one adjacency) and which
mechanism ran on the cohort, in the units the mechanism uses (dp.md conventions): for central
DP-FedAvg (McMahan et al. 2018) the Gaussian noise on the *sum* of clipped updates has standard
deviation σ = z·Δ₂ with Δ₂ = C (add/remove) or 2C (replace-one). Accounting is delegated to
:mod:`securefl.dp.accounting`; this module only builds events and composes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from securefl.dp.accounting import Accountant, get_accountant
from securefl.dp.events import (
    ComposedEvent,
    DpEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
    event_from_dict,
)
from securefl.errors import ConfigurationError
from securefl.fl.config import RunConfig


def neighboring(cfg: RunConfig) -> str:
    """Adjacency of the guarantee: for client-level DP it follows the client sampling scheme
    (Poisson: add/remove; fixed size: replace-one); local DP-SGD protects one *example* under
    Opacus's Poisson sampling of examples, add/remove, whatever the client sampling."""
    if cfg.dp == "local":
        return "add_remove"
    return "add_remove" if cfg.sampling == "poisson" else "replace_one"


def l2_sensitivity(cfg: RunConfig) -> float:
    """Δ₂ of the sum of client updates clipped to C under the run's adjacency."""
    return cfg.clip if cfg.sampling == "poisson" else 2.0 * cfg.clip


def sample(cfg: RunConfig, mechanism: DpEvent) -> DpEvent:
    """Wrap a per-cohort mechanism event in the sampling event the accountant is told."""
    if cfg.sampling == "poisson":
        if cfg.sampling_rate >= 1.0:
            return mechanism
        return PoissonSampledEvent(cfg.sampling_rate, mechanism)
    if cfg.clients_per_round == cfg.n_clients:
        return mechanism
    return SampledWithoutReplacementEvent(cfg.n_clients, cfg.clients_per_round, mechanism)


def compose(events: Sequence[DpEvent]) -> DpEvent:
    """Adaptive composition; identical consecutive events grouped (cheap for many rounds)."""
    parts: list[DpEvent] = []
    counts: list[int] = []
    for ev in events:
        if parts and parts[-1] == ev:
            counts[-1] += 1
        else:
            parts.append(ev)
            counts.append(1)
    grouped = [p if c == 1 else SelfComposedEvent(p, c) for p, c in zip(parts, counts, strict=True)]
    if not grouped:
        return NoOpEvent()
    return grouped[0] if len(grouped) == 1 else ComposedEvent(tuple(grouped))


def accountant_for(cfg: RunConfig) -> Accountant:
    """The run's accountant. Keep one per run: the PLD accountant reuses the PLDs it built
    (the round event at every bisection step and after every round), bit-identical ε."""
    return get_accountant(cfg.accountant, neighboring=neighboring(cfg))


def epsilon_of(
    cfg: RunConfig, events: Sequence[DpEvent], *, accountant: Accountant | None = None
) -> float:
    """ε at cfg.delta of the composition of ``events`` (0 for none, ∞ if non-private).

    ``accountant``: the run's :func:`accountant_for` (a fresh one when None)."""
    if not events:
        return 0.0
    if any(isinstance(e, NonPrivateEvent) for e in events):
        return math.inf
    acc = accountant if accountant is not None else accountant_for(cfg)
    event = compose(events)
    if not acc.supports(event):
        raise ConfigurationError(
            f"accountant {cfg.accountant!r} cannot account for {event.to_dict()['type']}",
            parameter="accountant",
        )
    return float(acc.epsilon(event, cfg.delta))


def calibrate(
    cfg: RunConfig,
    build: Callable[[float], DpEvent],
    *,
    tolerance: float = 1e-3,
    max_z: float = 1e4,
    accountant: Accountant | None = None,
) -> float:
    """Smallest noise multiplier z with ε(cfg.rounds rounds) ≤ target_epsilon (bisection).

    ``build(z)`` is the round event for z: calibration uses the very event the loop records.
    ``accountant``: reused at every step (one PLD per distinct round event).
    """
    acc = accountant if accountant is not None else accountant_for(cfg)
    make = build

    def eps(z: float) -> float:
        return epsilon_of(cfg, [make(z)] * cfg.rounds, accountant=acc)

    hi = 1.0
    while eps(hi) > cfg.target_epsilon:
        hi *= 2.0
        if hi > max_z:
            raise ConfigurationError(
                f"no noise multiplier ≤ {max_z} reaches ε = {cfg.target_epsilon}",
                parameter="target_epsilon",
            )
    lo = 0.0
    while hi - lo > tolerance:
        mid = 0.5 * (lo + hi)
        if mid > 0 and eps(mid) <= cfg.target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class PrivacyAccount:
    """The run's accountant state: the list of per-round events (checkpointed as dicts)."""

    cfg: RunConfig
    events: list[DpEvent]
    accountant: Accountant | None = field(default=None, repr=False, compare=False)

    def epsilon(self, extra: Sequence[DpEvent] = ()) -> float:
        if self.accountant is None:  # one per run: its PLDs are reused round after round
            self.accountant = accountant_for(self.cfg)
        return epsilon_of(self.cfg, [*self.events, *extra], accountant=self.accountant)

    def to_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.events]

    @classmethod
    def from_list(cls, cfg: RunConfig, items: Sequence[dict[str, Any]]) -> PrivacyAccount:
        return cls(cfg, [event_from_dict(d) for d in items])
