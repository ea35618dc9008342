"""Server side: one SecAgg(+) round driven stage by stage over any request/reply transport.

The loop is the one of ``securefl.secagg.simulate.run_round`` with the network in the middle:
for each stage it sends every live node its request, waits for replies until all are in or
the stage timeout expires (the *caller's* clock: the transport measures it), feeds what
arrived to :class:`~securefl.secagg.ServerProtocol` and closes the stage. A node whose reply
is missing, late or an error is simply absent from the stage (Bonawitz et al. 2017 §4:
dropouts), which the protocol tolerates down to the threshold; below it the round aborts.

Engine node ids are mapped to securefl client ids by the signed AdvertiseKeys reply: a node
that claims id u must sign under u's registered identity key, and later stages are routed by
that mapping only (a reply's own claim is never trusted again).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.encoding import RingPlan, decode_sum, plan_ring
from securefl.engine.identity import check_client_id
from securefl.engine.task import EngineTask, Scalar
from securefl.engine.wire import (
    ENGINE_WIRE_VERSION,
    HELLO,
    encode_config,
    encode_plan,
    model_digest,
)
from securefl.engine.wire import field as get_field
from securefl.errors import ConfigurationError, SecureFLError
from securefl.secagg import SecAggConfig, ServerProtocol, Stage, required_threshold

Record = Mapping[str, Any]
Progress = Callable[[str, Mapping[str, Any]], None]


class Transport(Protocol):
    """How the server reaches nodes (Flower grid, in-process handlers, …)."""

    def node_ids(self) -> list[int]: ...

    def exchange(
        self, requests: Mapping[int, Record], *, timeout: float, round_index: int
    ) -> dict[int, Record]:
        """Send each node its request; return the replies that arrived within ``timeout``
        (no entry for a node that did not answer or answered with an error)."""
        ...


@dataclass(frozen=True)
class RoundSettings:
    """Public parameters the server chooses per round (all bound into the session id)."""

    clip: float = 1.0
    frac_bits: int = 16
    threshold: int | None = None  # None: the smallest t the threat model admits
    degree: int | None = None  # None: complete graph (SecAgg); k: SecAgg+
    min_cohort: int = 0
    threat_model: str = "malicious"  # t > (n + ⌊γn⌋)/2 on the complete graph
    corrupt_fraction: float = 0.0
    security_bits: float = 40.0
    stage_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not (isinstance(self.stage_timeout, int | float) and 0 < self.stage_timeout <= 86400):
            raise ConfigurationError("must be in (0, 86400] seconds", parameter="stage_timeout")


@dataclass(frozen=True)
class EngineRoundResult:
    """Outcome of one round: the unmasked sum over ``survivors``, decoded, and its costs."""

    round_index: int
    total: npt.NDArray[Any]
    sums: dict[str, npt.NDArray[np.float64]]
    survivors: frozenset[int]
    dropped: dict[str, frozenset[int]]
    rejected: dict[int, str]  # engine node id → why its reply was ignored
    refused: dict[int, str]  # client id → why the protocol dropped it (ServerProtocol)
    node_of: dict[int, int]  # client id → engine node id
    config: SecAggConfig
    plan: RingPlan
    bytes_up: int = 0
    bytes_down: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def discover_identities(transport: Transport, *, timeout: float) -> dict[int, bytes]:
    """Trust-on-first-use registry from the nodes' own claims (HELLO).

    Only for a semi-honest server and honest-but-curious deployments: without an out-of-band
    registry nothing stops a malicious server from inventing clients (Bonawitz et al. §4).
    """
    nodes = transport.node_ids()
    replies = transport.exchange(
        {n: {"v": ENGINE_WIRE_VERSION, "stage": HELLO} for n in nodes},
        timeout=timeout,
        round_index=0,
    )
    out: dict[int, bytes] = {}
    for rep in replies.values():
        try:
            u = check_client_id(get_field(rep, "client", int))
            pk = get_field(rep, "identity", bytes)
        except SecureFLError:
            continue
        if u not in out and len(pk) == 32:
            out[u] = pk
    return out


def make_config(
    registry: Mapping[int, bytes],
    *,
    settings: RoundSettings,
    plan: RingPlan,
    dimension: int,
    layout_digest: bytes,
    digest: bytes,
    round_index: int,
) -> SecAggConfig:
    n = len(registry)
    complete = settings.degree is None or settings.degree + settings.degree % 2 >= n - 1
    k = n - 1 if complete else int(settings.degree or 0) + int(settings.degree or 0) % 2
    t = settings.threshold
    if t is None:
        t = required_threshold(
            n, k, settings.threat_model, settings.corrupt_fraction, settings.security_bits
        )
    return SecAggConfig.create(
        registry,
        threshold=t,
        bits=plan.bits,
        dimension=dimension,
        degree=settings.degree,
        min_cohort=settings.min_cohort,
        round_index=round_index,
        layout_digest=layout_digest,
        model_digest=digest,
        nonce=secrets.token_bytes(16),  # session ids never repeat, even for equal rounds
        threat_model=settings.threat_model,
        corrupt_fraction=settings.corrupt_fraction,
        security_bits=settings.security_bits,
    )


def run_secure_round(
    transport: Transport,
    task: EngineTask,
    *,
    task_name: str,
    registry: Mapping[int, bytes],
    global_state: bytes,
    round_index: int,
    run_config: Mapping[str, Scalar],
    settings: RoundSettings | None = None,
    progress: Progress | None = None,
) -> EngineRoundResult:
    """Run one round over ``transport``; raises :class:`AbortError` if it cannot complete."""
    settings = settings or RoundSettings()
    layout = task.layout(run_config)
    plan = plan_ring(len(registry), settings.clip, settings.frac_bits)
    plan_text = encode_plan(plan)
    digest = model_digest(global_state, plan_text, round_index, task_name)
    config = make_config(
        registry,
        settings=settings,
        plan=plan,
        dimension=layout.size,
        layout_digest=layout.digest(),
        digest=digest,
        round_index=round_index,
    )
    config_bytes = encode_config(config)
    server = ServerProtocol(config)
    node_of: dict[int, int] = {}
    client_of: dict[int, int] = {}
    rejected: dict[int, str] = {}
    timings: dict[str, float] = {}
    up = down = 0

    start = time.perf_counter()
    first = {
        node: {
            "v": ENGINE_WIRE_VERSION,
            "stage": int(Stage.ADVERTISE_KEYS),
            "session": config.session_id,
            "config": config_bytes,
            "plan": plan_text,
            "global": global_state,
        }
        for node in transport.node_ids()
    }
    down += sum(len(config_bytes) + len(global_state) + len(plan_text) for _ in first)
    replies = transport.exchange(first, timeout=settings.stage_timeout, round_index=round_index)
    for node, rep in sorted(replies.items()):
        try:
            u = check_client_id(get_field(rep, "client", int))
            payload = get_field(rep, "payload", bytes)
        except SecureFLError as exc:
            rejected[node] = f"advertise: {exc}"
            continue
        up += len(payload)
        if u in node_of or not config.has_client(u):
            rejected[node] = f"advertise: client id {u} already claimed or not in the cohort"
            continue
        if server.receive_bytes(payload, transport_sender=u):  # signature binds u to the node
            node_of[u], client_of[node] = node, u
    outbox = server.close_stage()
    timings["advertise_keys"] = time.perf_counter() - start
    if progress is not None:
        progress("advertise_keys", {"live": sorted(server.u1), "node_of": dict(node_of)})

    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK):
        start = time.perf_counter()
        requests: dict[int, Record] = {}
        for u, message in outbox.items():
            data = message.encode()
            down += len(data)
            requests[node_of[u]] = {
                "v": ENGINE_WIRE_VERSION,
                "stage": int(stage),
                "session": config.session_id,
                "payload": data,
            }
        replies = transport.exchange(
            requests, timeout=settings.stage_timeout, round_index=round_index
        )
        for node, rep in sorted(replies.items()):
            owner = client_of.get(node)
            if owner is None or node not in requests:
                continue
            try:
                payload = get_field(rep, "payload", bytes)
            except SecureFLError as exc:
                rejected[node] = f"{stage.name.lower()}: {exc}"
                continue
            up += len(payload)
            server.receive_bytes(payload, transport_sender=owner)
        outbox = server.close_stage()
        timings[stage.name.lower()] = time.perf_counter() - start
        if progress is not None:
            progress(stage.name.lower(), {"expected": sorted(outbox)})

    assert server.result is not None
    sums = layout.unflatten(decode_sum(server.result, plan))
    refused = dict(server.rejected)
    refused.update({u: f"pruned: {why}" for u, why in server.pruned.items()})
    return EngineRoundResult(
        round_index=round_index,
        total=server.result,
        sums={k: np.asarray(v, dtype=np.float64) for k, v in sums.items()},
        survivors=server.survivors,
        dropped={s.name.lower(): ids for s, ids in server.dropped.items()},
        rejected=rejected,
        refused=refused,
        node_of=node_of,
        config=config,
        plan=plan,
        bytes_up=up,
        bytes_down=down,
        timings=timings,
    )
