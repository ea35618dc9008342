"""In-process transport: the engine's server loop talking to node handlers in this process.

Used by the fast tests and as the embedded default; it is the same request/reply contract as
the Flower transport, minus the network. ``drop_at`` makes a node stop answering from a stage
on (it sends nothing, exactly like a crashed node), ``fail_at`` makes it answer with an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from securefl.engine.client import SecAggNode
from securefl.engine.wire import field
from securefl.errors import SecureFLError


class InProcessTransport:
    """Node id → :class:`SecAggNode` with its own state store (its ``context.state``)."""

    def __init__(
        self,
        nodes: Mapping[int, SecAggNode],
        *,
        drop_at: Mapping[int, int] | None = None,
        fail_at: Mapping[int, int] | None = None,
    ) -> None:
        self.nodes = dict(nodes)
        self.stores: dict[int, dict[str, Any]] = {n: {} for n in self.nodes}
        self.drop_at = dict(drop_at or {})
        self.fail_at = dict(fail_at or {})
        self.errors: dict[int, str] = {}
        self.log: list[tuple[int, int, int, int]] = []  # (round, stage, node, reply bytes)

    def node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def exchange(
        self, requests: Mapping[int, Mapping[str, Any]], *, timeout: float, round_index: int
    ) -> dict[int, Mapping[str, Any]]:
        out: dict[int, Mapping[str, Any]] = {}
        for node, request in requests.items():
            stage = field(request, "stage", int)
            if node not in self.nodes or stage >= self.drop_at.get(node, 1 << 30):
                continue
            if stage >= self.fail_at.get(node, 1 << 30):
                self.errors[node] = f"configured failure at stage {stage}"
                continue
            try:
                reply = self.nodes[node].handle(request, self.stores[node])
            except SecureFLError as exc:  # an error reply: the node drops out
                self.errors[node] = f"{type(exc).__name__}: {exc}"
                continue
            size = len(reply.get("payload", b""))
            self.log.append((round_index, stage, node, size))
            out[node] = reply
        return out
