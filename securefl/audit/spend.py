"""Recompute privacy spend from ledger entries (an auditor recomputes, it never trusts a number).

Which rounds are charged: every ``round_completed`` entry (its ``dp_event``), plus every
``round_projected`` entry that no later ``round_completed`` (or ``round_aborted`` with
``"released": false``) of the same run and round matched — a round that was announced and
then vanished (crash, kill) may have released a noised aggregate, so it is charged
conservatively ("in flight"). ``round_refused`` entries charge nothing.

Events are recomputed through :mod:`securefl.dp.accounting` from the recorded
``event.to_dict()`` data. Identical per-round events are grouped into one
``SelfComposedEvent`` so 10k rounds cost the same as one.

A *node* ledger (a data holder's own, ``node_contribution`` entries) is charged per run, not
per round: :func:`node_run_charges` (protocols/engine-flower.md, "Node-side policy and ledger").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securefl.audit.ledger import (
    ROUND_ABORTED,
    ROUND_COMPLETED,
    ROUND_PROJECTED,
    Entry,
    canonical_json,
)
from securefl.audit.records import (
    NODE_CONTRIBUTION,
    NodeContribution,
    RoundAborted,
    RoundCompleted,
    RoundProjected,
    parse_as,
)
from securefl.errors import ConfigurationError

ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld")
_NEIGHBORING: dict[str, Any] = {"add-remove": "add_remove", "replace-one": "replace_one"}
# Wrapper event types (sampling/composition); everything else is a mechanism.
_WRAPPERS = frozenset(
    {"noop", "poisson_sampled", "sampled_without_replacement", "self_composed", "composed"}
)


@dataclass(frozen=True)
class ChargedRound:
    """One round whose DP event counts towards the spend."""

    run_id: str
    round_id: int | None
    seq: int
    event: dict[str, Any]
    status: str  # "completed" or "in_flight"


def charged_rounds(entries: Iterable[Entry], *, run_id: str | None = None) -> list[ChargedRound]:
    """The rounds charged by the rule in the module docstring, in ledger order.

    Payloads are read through :mod:`securefl.audit.records`: a round entry without a valid
    ``dp_event`` raises :class:`~securefl.audit.records.RecordError` naming the field.
    """
    pending: dict[tuple[str, int | None], list[tuple[Entry, RoundProjected]]] = {}
    charged: list[ChargedRound] = []
    for e in entries:
        if run_id is not None and e.run_id != run_id:
            continue
        key = (e.run_id, e.round_id)
        if e.kind == ROUND_PROJECTED:
            pending.setdefault(key, []).append((e, parse_as(e, RoundProjected)))
        elif e.kind == ROUND_COMPLETED:
            done = parse_as(e, RoundCompleted)
            waiting = pending.get(key)
            if waiting:
                waiting.pop()
            charged.append(ChargedRound(e.run_id, e.round_id, e.seq, done.dp_event, "completed"))
        elif e.kind == ROUND_ABORTED and parse_as(e, RoundAborted).released is False:
            waiting = pending.get(key)
            if waiting:
                waiting.pop()
    for waiting in pending.values():
        for e, projected in waiting:
            charged.append(
                ChargedRound(e.run_id, e.round_id, e.seq, projected.dp_event, "in_flight")
            )
    charged.sort(key=lambda c: c.seq)
    return charged


def mechanisms_of(event: Mapping[str, Any]) -> set[str]:
    """Names of the mechanisms (leaf event types other than wrappers) inside an event dict."""
    out: set[str] = set()
    kind = event.get("type")
    if isinstance(kind, str) and kind not in _WRAPPERS:
        out.add(kind)
    inner = event.get("event")
    if isinstance(inner, Mapping):
        out |= mechanisms_of(inner)
    for sub in event.get("events", []) or []:
        if isinstance(sub, Mapping):
            out |= mechanisms_of(sub)
    return out


def sampling_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The outermost sampling wrapper of a per-round event, as plain data."""
    kind = event.get("type")
    if kind == "poisson_sampled":
        return {"scheme": "poisson", "rate": event.get("sampling_probability")}
    if kind == "sampled_without_replacement":
        src, size = event.get("source_size"), event.get("sample_size")
        rate = size / src if isinstance(src, int) and isinstance(size, int) and src else None
        return {
            "scheme": "fixed_size_without_replacement",
            "rate": rate,
            "sample_size": size,
            "source_size": src,
        }
    if kind in {"self_composed", "composed"}:
        inner = event.get("event") or (event.get("events") or [None])[0]
        if isinstance(inner, Mapping):
            return sampling_of(inner)
    return {"scheme": "all", "rate": 1.0}


def compose(events: Sequence[Mapping[str, Any]]) -> Any:
    """One DpEvent for the adaptive composition of ``events`` (identical ones grouped)."""
    from securefl.dp.events import ComposedEvent, NoOpEvent, SelfComposedEvent, event_from_dict

    counts: dict[str, int] = {}
    for ev in events:
        text = canonical_json(ev)
        counts[text] = counts.get(text, 0) + 1
    parts = []
    for text, n in counts.items():
        base = event_from_dict(json.loads(text))
        parts.append(base if n == 1 else SelfComposedEvent(base, n))
    if not parts:
        return NoOpEvent()
    return parts[0] if len(parts) == 1 else ComposedEvent(tuple(parts))


def epsilon(
    accountant: str,
    event: Any,
    delta: float,
    adjacency: str = "add-remove",
    *,
    instance: Any = None,
) -> float | None:
    """ε at ``delta`` under the named accountant and adjacency (``"add-remove"`` or
    ``"replace-one"``); ``None`` if that accountant cannot soundly account for the event.
    ``instance``: an accountant of that name and adjacency to reuse (its PLDs are memoised)."""
    from securefl.dp.accounting import get_accountant
    from securefl.dp.errors import UnsupportedEventError

    acc = (
        instance
        if instance is not None
        else get_accountant(accountant, neighboring=_NEIGHBORING[adjacency])
    )
    if not acc.supports(event):
        return None
    try:
        value = float(acc.epsilon(event, delta))
    except UnsupportedEventError:
        return None
    return value if not math.isnan(value) else None


def epsilon_of_events(
    events: Sequence[Mapping[str, Any]], accountant: str, delta: float, adjacency: str
) -> tuple[float, str | None]:
    """ε at ``delta`` of the adaptive composition of recorded ``events``: ``(ε, None)``, or
    ``(∞, why)`` when the events cannot be accounted (malformed, or the accountant does not
    support them). The one path by which a policy — server or node — turns events into ε."""
    if not events:
        return 0.0, None
    try:
        eps = epsilon(accountant, compose(events), delta, adjacency)
    except ConfigurationError as exc:
        return math.inf, f"recorded DP events cannot be accounted: {exc}"
    if eps is None:
        return math.inf, f"accountant {accountant!r} does not support the recorded events"
    return eps, None


def adjacency_of(event: Mapping[str, Any]) -> str:
    """The adjacency a per-round event is accounted under: ``replace-one`` if it samples a
    fixed-size cohort without replacement anywhere (that wrapper is accounted under
    replace-one only), else ``add-remove`` (Poisson sampling's relation; an event mixing both
    is then unsupported by the accountants and so refused, never under-counted)."""
    stack: list[Any] = [event]
    depth = 0
    while stack and depth < 10_000:
        depth += 1
        node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if node.get("type") == "sampled_without_replacement":
            return "replace-one"
        stack.append(node.get("event"))
        subs = node.get("events")
        if isinstance(subs, list):
            stack.extend(subs)
    return "add-remove"


@dataclass(frozen=True)
class NodeRunCharge:
    """What one run costs a node: its per-round event composed ``count`` times, where
    ``count`` = max(planned rounds, contributions) — the whole planned run, since the node
    does not see the rounds it was not sampled into, and more if it was asked more often."""

    run_id: str
    event: dict[str, Any]
    planned_rounds: int
    contributions: int
    accountant: str
    seqs: tuple[int, ...]

    @property
    def count(self) -> int:
        return max(self.planned_rounds, self.contributions)

    @property
    def charged_event(self) -> dict[str, Any]:
        """``{"type": "self_composed", "event": …, "count": count}`` as recorded data."""
        return {"type": "self_composed", "event": self.event, "count": self.count}

    @property
    def adjacency(self) -> str:
        return adjacency_of(self.event)


def node_run_charges(
    entries: Iterable[Entry], *, extra: Mapping[str, int] | None = None
) -> list[NodeRunCharge]:
    """Per run of a node ledger, in order of first contribution: the event and planned rounds
    of its *first* contribution (the node pins a run's terms) and how many contributions it
    made. ``extra`` adds contributions not yet recorded (``{run_id: n}``)."""
    first: dict[str, NodeContribution] = {}
    counts: dict[str, int] = {}
    seqs: dict[str, list[int]] = {}
    for e in entries:
        if e.kind != NODE_CONTRIBUTION:
            continue
        rec = parse_as(e, NodeContribution)
        first.setdefault(e.run_id, rec)
        counts[e.run_id] = counts.get(e.run_id, 0) + 1
        seqs.setdefault(e.run_id, []).append(e.seq)
    for run_id, n in (extra or {}).items():
        counts[run_id] = counts.get(run_id, 0) + n
    return [
        NodeRunCharge(
            run_id=run_id,
            event=rec.dp_event,
            planned_rounds=rec.planned_rounds,
            contributions=counts[run_id],
            accountant=rec.accountant,
            seqs=tuple(seqs[run_id]),
        )
        for run_id, rec in first.items()
    ]


def epsilon_all(event: Any, delta: float, adjacency: str = "add-remove") -> dict[str, float | None]:
    """ε under each accountant (``None`` where unsupported)."""
    return {name: epsilon(name, event, delta, adjacency) for name in ACCOUNTANTS}


def curve_points(n_rounds: int, max_points: int) -> list[int]:
    """Round counts at which to evaluate cumulative ε (always includes the last)."""
    if n_rounds <= 0:
        return []
    if n_rounds <= max_points:
        return list(range(1, n_rounds + 1))
    step = n_rounds / max_points
    pts = sorted({max(1, round(step * (i + 1))) for i in range(max_points)})
    if pts[-1] != n_rounds:
        pts.append(n_rounds)
    return pts


def cumulative_events(events: Sequence[Mapping[str, Any]], points: Sequence[int]) -> list[Any]:
    """``compose(events[:k])`` for each ``k`` in ``points`` (ascending), in one pass."""
    from securefl.dp.events import ComposedEvent, NoOpEvent, SelfComposedEvent, event_from_dict

    decoded: dict[str, Any] = {}
    counts: dict[str, int] = {}
    out: list[Any] = []
    wanted = iter(points)
    nxt = next(wanted, None)
    for i, ev in enumerate(events, start=1):
        text = canonical_json(ev)
        if text not in decoded:
            decoded[text] = event_from_dict(json.loads(text))
        counts[text] = counts.get(text, 0) + 1
        while nxt is not None and nxt == i:
            parts = [
                decoded[t] if n == 1 else SelfComposedEvent(decoded[t], n)
                for t, n in counts.items()
            ]
            out.append(parts[0] if len(parts) == 1 else ComposedEvent(tuple(parts)))
            nxt = next(wanted, None)
    while nxt is not None:  # points beyond the end (or 0)
        out.append(NoOpEvent())
        nxt = next(wanted, None)
    return out


def _rdp_to_epsilon(orders: Any, curve: Any, delta: float) -> float:
    """RDP → (ε, δ) exactly as :class:`securefl.dp.accounting.RdpAccountant` converts."""
    import warnings

    import numpy as np
    from opacus.accountants.analysis import rdp as opacus_rdp

    if not np.any(np.isfinite(curve)):
        return math.inf
    if not np.any(curve > 0):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(invalid="ignore"):
            eps, _ = opacus_rdp.get_privacy_spent(orders=list(orders), rdp=list(curve), delta=delta)
    return max(0.0, float(eps))


def epsilon_curve(
    accountant: str,
    events: Sequence[Mapping[str, Any]],
    points: Sequence[int],
    delta: float,
    adjacency: str = "add-remove",
) -> list[float | None]:
    """Cumulative ε after ``k`` rounds for each ``k`` in ``points`` (ascending).

    RDP composes additively, so its curve costs one RDP evaluation per *distinct* event; PLD and
    PRV are recomputed at each point (callers pass fewer points for them).
    """
    if accountant != "rdp":
        from securefl.dp.accounting import get_accountant

        # One accountant for all points: the PLD accountant then builds each distinct
        # round's PLD once and only composes further (bit-identical ε).
        acc = get_accountant(accountant, neighboring=_NEIGHBORING[adjacency])
        out: list[float | None] = []
        for ev in cumulative_events(events, points):
            eps = epsilon(accountant, ev, delta, adjacency, instance=acc)
            out.append(eps)
        return out
    import numpy as np

    from securefl.dp.accounting import RdpAccountant
    from securefl.dp.errors import UnsupportedEventError
    from securefl.dp.events import event_from_dict

    acc = RdpAccountant(neighboring=_NEIGHBORING[adjacency])
    curves: dict[str, Any] = {}
    total = np.zeros_like(acc.orders)
    result: list[float | None] = []
    wanted = iter(points)
    nxt = next(wanted, None)
    failed = False
    for i, ev in enumerate(events, start=1):
        if not failed:
            text = canonical_json(ev)
            if text not in curves:
                try:
                    curves[text] = acc.rdp(event_from_dict(json.loads(text)))
                except UnsupportedEventError:
                    failed = True
            if not failed:
                total = total + curves[text]
        while nxt is not None and nxt == i:
            result.append(None if failed else _rdp_to_epsilon(acc.orders, total, delta))
            nxt = next(wanted, None)
    while nxt is not None:
        result.append(0.0)
        nxt = next(wanted, None)
    return result
