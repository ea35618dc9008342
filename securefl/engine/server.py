"""Server side: one SecAgg(+) round driven stage by stage over any request/reply transport.

The stage loop is :func:`securefl.secagg.driver.drive_round`, the same as the in-process
simulation's; this module supplies its transport (:class:`NodeStages`): for each stage it sends
every live node its request, waits for replies until all are in or the stage timeout expires
(the *caller's* clock: the engine transport measures it) and hands what arrived to the
server. A node whose reply is missing, late or an error is simply absent from the stage
(Bonawitz et al. 2017 §4: dropouts), which the protocol tolerates down to the threshold; below
it the round aborts.

Engine node ids are mapped to securefl client ids by the signed AdvertiseKeys reply: a node
that claims id u must return an advertisement signed under u's registered identity key *and*
u's signature over that node's own fresh challenge and the advertisement (the binding; a node
relaying another client's valid advertisement cannot produce it), and later stages are routed
by that mapping only (a reply's own claim is never trusted again).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.crypto import keys
from securefl.encoding import RingPlan, decode_sum, plan_ring
from securefl.engine.identity import check_client_id
from securefl.engine.task import EngineTask, Scalar
from securefl.engine.wire import (
    ENGINE_WIRE_VERSION,
    HELLO,
    encode_config,
    encode_plan,
    fixed_bytes,
    model_digest,
)
from securefl.engine.wire import field as get_field
from securefl.errors import ConfigurationError, SecureFLError
from securefl.secagg import (
    STAGE_LABELS,
    Message,
    SecAggConfig,
    ServerProtocol,
    Stage,
    required_threshold,
)
from securefl.secagg.derive import NODE_CHALLENGE_BYTES, node_binding_transcript
from securefl.secagg.driver import Deliver, drive_round

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


def advertise_request(config: SecAggConfig, plan_text: str, global_state: bytes) -> Record:
    """The first (AdvertiseKeys) request of a round: the session's configuration, the plan the
    model digest binds, and the global model (NodeStages adds each node's challenge)."""
    return {
        "v": ENGINE_WIRE_VERSION,
        "stage": int(Stage.ADVERTISE_KEYS),
        "session": config.session_id,
        "config": encode_config(config),
        "plan": plan_text,
        "global": global_state,
    }


class NodeStages:
    """The engine's side of :class:`securefl.secagg.driver.Transport`: SecAgg messages to and
    from engine nodes, one request/reply exchange per stage.

    AdvertiseKeys goes to every node with the round configuration (and the global model) and a
    fresh per-node challenge; a reply claims a client id u, and the claim is bound to the node
    only when the AdvertiseKeys verifies under u's registered key, its ``binding`` verifies
    under the same key for *this node's* challenge, and the server accepts it (first accepted
    claim wins; nodes are tried in id order). A relayed copy of u's reply fails the binding
    check before it can claim u, so the real u still binds whichever reply is read first.
    Later stages are routed by that binding only; a reply's own claim is never trusted again.
    ``rejected`` records, per node, why a reply was ignored.
    """

    def __init__(
        self,
        transport: Transport,
        config: SecAggConfig,
        *,
        first_request: Record,
        timeout: float,
        round_index: int,
        advertise_timeout: float | None = None,
    ) -> None:
        self.transport = transport
        self.config = config
        self.first_request = first_request
        self.timeout = timeout
        # The first stage may include the node's local training (securefl.engine.job).
        self.advertise_timeout = timeout if advertise_timeout is None else advertise_timeout
        self.round_index = round_index
        self.node_of: dict[int, int] = {}
        self.client_of: dict[int, int] = {}
        self.rejected: dict[int, str] = {}
        self.bytes_up = 0
        self.bytes_down = 0

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> dict[int, str]:
        if stage is Stage.ADVERTISE_KEYS:
            self._advertise(deliver)
            return {}
        envelopes: dict[int, Record] = {}
        for u, data in requests.items():
            self.bytes_down += len(data)
            envelopes[self.node_of[u]] = {
                "v": ENGINE_WIRE_VERSION,
                "stage": int(stage),
                "session": self.config.session_id,
                "payload": data,
            }
        replies = self.transport.exchange(
            envelopes, timeout=self.timeout, round_index=self.round_index
        )
        for node, rep in sorted(replies.items()):
            owner = self.client_of.get(node)
            if owner is None or node not in envelopes:
                continue
            try:
                payload = get_field(rep, "payload", bytes)
            except SecureFLError as exc:
                self.rejected[node] = f"{stage.label}: {exc}"
                continue
            self.bytes_up += len(payload)
            deliver(owner, payload)
        return {}

    def _advertise(self, deliver: Deliver) -> None:
        nodes = self.transport.node_ids()
        # One fresh challenge per node and round (OS CSPRNG): what u's binding must sign.
        challenges = {n: secrets.token_bytes(NODE_CHALLENGE_BYTES) for n in nodes}
        first = {n: {**self.first_request, "challenge": challenges[n]} for n in nodes}
        self.bytes_down += len(nodes) * (
            sum(len(self.first_request[k]) for k in ("config", "plan", "global"))
            + NODE_CHALLENGE_BYTES
        )
        replies = self.transport.exchange(
            first, timeout=self.advertise_timeout, round_index=self.round_index
        )
        for node, rep in sorted(replies.items()):
            if node not in challenges:
                continue  # nobody asked this node
            try:
                u = check_client_id(get_field(rep, "client", int))
                payload = get_field(rep, "payload", bytes)
                binding = fixed_bytes(rep, "binding", keys.SIGNATURE_BYTES)
            except SecureFLError as exc:
                self.rejected[node] = f"advertise: {exc}"
                continue
            self.bytes_up += len(payload) + len(binding)
            if u in self.node_of or not self.config.has_client(u):
                self.rejected[node] = (
                    f"advertise: client id {u} already claimed or not in the cohort"
                )
                continue
            # Both checked before the server sees the advertisement: an unbound node's claim
            # is not yet u's authenticated channel, so a bad or relayed advertisement must not
            # evict the real u (who can still bind when its own reply is read).
            if not _signed_advertisement(self.config, u, payload):
                self.rejected[node] = f"advertise: not signed under client {u}'s identity key"
                continue
            if not _bound_to_node(self.config, u, challenges[node], payload, binding):
                self.rejected[node] = (
                    f"advertise: binding is not client {u}'s signature over this node's "
                    "challenge (relayed or replayed advertisement)"
                )
                continue
            if deliver(u, payload):  # both signatures bind u to this node
                self.node_of[u], self.client_of[node] = node, u


def _signed_advertisement(config: SecAggConfig, u: int, payload: bytes) -> bool:
    """True if ``payload`` is an AdvertiseKeys from ``u`` signed under u's registered key —
    the proof that u made it (secagg.md §7), not yet that it came over this node."""
    from securefl.secagg.derive import advertise_transcript
    from securefl.secagg.messages import AdvertiseKeys, decode

    try:
        m = decode(payload, config=config)
        if not isinstance(m, AdvertiseKeys) or m.sender != u:
            return False
        keys.verify(
            config.identity_public(u),
            m.signature,
            advertise_transcript(config, u, m.cipher_pk, m.mask_pk),
        )
    except SecureFLError:
        return False
    return True


def _bound_to_node(
    config: SecAggConfig, u: int, challenge: bytes, payload: bytes, binding: bytes
) -> bool:
    """True if ``binding`` is u's signature over this node's ``challenge`` and ``payload``
    (``node_binding_transcript``) — with the advertisement's own signature, the proof that
    turns the node's claim into u's authenticated channel (engine-flower.md §3)."""
    try:
        keys.verify(
            config.identity_public(u), binding, node_binding_transcript(config, challenge, payload)
        )
    except SecureFLError:
        return False
    return True


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
    """Run one round over ``transport`` with :func:`securefl.secagg.driver.drive_round`;
    raises :class:`AbortError` if it cannot complete."""
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
    server = ServerProtocol(config)
    stages = NodeStages(
        transport,
        config,
        first_request=advertise_request(config, plan_text, global_state),
        timeout=settings.stage_timeout,
        round_index=round_index,
    )

    def on_stage(stage: Stage, outbox: Mapping[int, Message]) -> None:
        if progress is None:
            return
        if stage is Stage.ADVERTISE_KEYS:
            progress("advertise_keys", {"live": sorted(server.u1), "node_of": dict(stages.node_of)})
        else:
            progress(stage.label, {"expected": sorted(outbox)})

    result = drive_round(server, stages, on_stage=on_stage)
    sums = layout.unflatten(decode_sum(result.total, plan))
    refused = dict(server.rejected)
    refused.update({u: f"pruned: {why}" for u, why in server.pruned.items()})
    return EngineRoundResult(
        round_index=round_index,
        total=result.total,
        sums={k: np.asarray(v, dtype=np.float64) for k, v in sums.items()},
        survivors=result.survivors,
        dropped=result.dropped,
        rejected=stages.rejected,
        refused=refused,
        node_of=stages.node_of,
        config=config,
        plan=plan,
        bytes_up=stages.bytes_up,
        bytes_down=stages.bytes_down,
        timings={k: v for k, v in result.timings.items() if k in STAGE_LABELS},
    )
