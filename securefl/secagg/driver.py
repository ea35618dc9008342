"""The one SecAgg(+) stage driver: runs a :class:`ServerProtocol` round over any transport.

Bonawitz et al. 2017, §4 (Bell et al. 2020 for SecAgg+): the server collects AdvertiseKeys,
then for each later stage sends every live client its message and waits; a client that does
not answer is a dropout of that stage, which the protocol tolerates down to the threshold
(below it :meth:`ServerProtocol.close_stage` raises :class:`~securefl.errors.AbortError`).
The loop is the same whatever carries the bytes, so it lives here once; a :class:`Transport`
knows only how to reach clients:

* the in-process simulation (:class:`securefl.secagg.simulate.SimulatedTransport`);
* the FL engine (``securefl.engine.server``), which maps engine node ids to client ids;
* any orchestrator's own network.

Replies are handed to the server *as they arrive* (``deliver``), never collected first, so a
stage of n masked inputs needs O(d) memory, not O(n·d). The transport must name the
**authenticated** sender of each reply (``transport_sender``): the server refuses a message
whose claimed sender differs (spec ``protocols/secagg.md``). The driver reads the clock for
``timings``; the protocol never does. Byte counts are the SecAgg messages themselves (a
transport's own framing or configuration broadcast is its caller's to add).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from securefl.secagg.messages import Message, Stage
from securefl.secagg.server import ServerProtocol

__all__ = ["Deliver", "RoundResult", "StageHook", "Transport", "drive_round"]

#: ``deliver(client_id, data) -> accepted``: feed one reply, from its authenticated sender, to
#: the server; True if the protocol accepted it.
Deliver = Callable[[int, bytes], bool]
#: ``hook(stage, outbox)`` after ``stage`` closed: ``outbox`` holds the next stage's requests.
StageHook = Callable[[Stage, Mapping[int, Message]], None]


class Transport(Protocol):
    """How the driver reaches the clients of one round."""

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> Mapping[int, str]:
        """Send each client in ``requests`` its server message of ``stage`` and pass every reply
        that comes back to ``deliver(client_id, data)`` — ``client_id`` the sender as the
        transport authenticated it — then return.

        For ``Stage.ADVERTISE_KEYS`` the protocol has no server message: ``requests`` maps
        every client of the cohort to ``b""`` and the transport starts the round its own way
        (e.g. by broadcasting the configuration). A transport that learns who a peer is only
        from its signed AdvertiseKeys binds the peer once ``deliver`` returns True.

        Returns the clients that refused or failed, with why (for the record; a client with
        no accepted reply is a dropout of the stage either way).
        """
        ...


@dataclass(frozen=True)
class RoundResult:
    """Outcome of one round: the unmasked sum mod 2^b over ``survivors`` and its costs."""

    total: npt.NDArray[Any]
    survivors: frozenset[int]
    dropped: dict[str, frozenset[int]]
    refused: dict[int, str]
    bytes_up: dict[int, int]
    bytes_down: dict[int, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_bytes_up(self) -> int:
        return sum(self.bytes_up.values())

    @property
    def total_bytes_down(self) -> int:
        return sum(self.bytes_down.values())


def drive_round(
    server: ServerProtocol,
    transport: Transport,
    *,
    on_stage: StageHook | None = None,
) -> RoundResult:
    """Run every stage of ``server``'s round over ``transport``; return the result.

    ``server`` must be fresh (no message received yet). Raises :class:`AbortError` when too
    few clients remain at some stage. ``refused`` merges the transport's reports, the server's
    rejections (``"server: …"``) and its prunings (``"server pruned: …"``). ``timings`` has one
    entry per stage (clients and server), ``server_unmask`` (the server's reconstruction and
    unmasking alone) and ``total``.
    """
    config = server.config
    up = dict.fromkeys(config.client_ids, 0)
    down = dict.fromkeys(config.client_ids, 0)
    refused: dict[int, str] = {}
    timings: dict[str, float] = {}

    def deliver(u: int, data: bytes) -> bool:
        if u in up:
            up[u] += len(data)
        return server.receive_bytes(data, transport_sender=u)

    outbox: Mapping[int, Message] = {}
    for stage in Stage:  # Bonawitz et al. Fig. 4, rounds 0-4, in order
        start = time.perf_counter()
        if stage is Stage.ADVERTISE_KEYS:
            requests = dict.fromkeys(config.client_ids, b"")
        else:
            requests = {u: message.encode() for u, message in outbox.items()}
        for u, data in requests.items():
            down[u] += len(data)
        refused.update(transport.exchange(stage, requests, deliver))
        closing = time.perf_counter()
        outbox = server.close_stage()
        done = time.perf_counter()
        timings[stage.label] = done - start
        if stage is Stage.UNMASK:
            timings["server_unmask"] = done - closing
        if on_stage is not None:
            on_stage(stage, outbox)
    if server.result is None:  # close_stage(UNMASK) either sets the result or raises
        raise AssertionError("round ended without a result")
    refused.update({u: f"server: {why}" for u, why in server.rejected.items()})
    refused.update({u: f"server pruned: {why}" for u, why in server.pruned.items()})
    timings["total"] = sum(v for k, v in timings.items() if k != "server_unmask")
    return RoundResult(
        total=server.result,
        survivors=server.survivors,
        dropped={s.label: ids for s, ids in server.dropped.items()},
        refused=refused,
        bytes_up=up,
        bytes_down=down,
        timings=timings,
    )
