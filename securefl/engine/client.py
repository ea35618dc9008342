"""Node side of a SecAgg(+) round driven by an FL engine whose client code is stateless.

Flower's deployment runtime starts a fresh ClientApp process for every message, so the
:class:`~securefl.secagg.ClientProtocol` object cannot live in memory between stages. Instead
of serialising its private fields, the node keeps in its own ``context.state`` (which never
leaves the SuperNode) a 32-byte round seed from the OS CSPRNG and the server requests it has
accepted, and rebuilds the state machine each time by *replaying* them: every random choice
of the client comes from an AES-256-CTR keystream of that seed (:class:`RoundRandomness`), so
replay regenerates exactly the same keys, shares and replies, and re-runs every check of
spec §7 through the public API. The encoded input is kept only until it has been masked
(replay of that stage uses zeros: the state after it does not depend on the values), and the
whole record is erased after the unmask reply (a second unmask request is then refused).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto import keys
from securefl.crypto.drbg import CtrDrbg
from securefl.encoding import encode
from securefl.engine.identity import NodeIdentity
from securefl.engine.task import EngineTask, Scalar
from securefl.engine.wire import (
    ENGINE_WIRE_VERSION,
    HELLO,
    decode_config,
    decode_plan,
    field,
    fixed_bytes,
    model_digest,
)
from securefl.errors import ConfigurationError, MalformedMessageError, UnsafeRequestError
from securefl.secagg import ClientPolicy, ClientProtocol, SecAggConfig, Stage
from securefl.secagg.derive import NODE_CHALLENGE_BYTES, node_binding_transcript
from securefl.tensors import TensorLayout

SEED_BYTES = 32
MAX_TRANSCRIPT = 8


def frame(items: list[bytes]) -> bytes:
    """Length-prefixed concatenation (a record field holds scalars, not lists of bytes)."""
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def unframe(data: object) -> list[bytes]:
    if not isinstance(data, bytes):
        raise MalformedMessageError("stored transcript is not bytes")
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise MalformedMessageError("stored transcript is truncated")
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise MalformedMessageError("stored transcript is truncated")
        out.append(data[pos : pos + size])
        pos += size
    return out


class RoundRandomness(CtrDrbg):
    """The AES-256-CTR DRBG of a fresh 32-byte OS-random round seed.

    The seed is as secret as the keys it yields and is used for exactly one round of one
    client; keeping it (not the keys) is what makes the stateless replay above possible.
    """

    __slots__ = ()

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ConfigurationError(f"must be {SEED_BYTES} bytes", parameter="seed")
        super().__init__(seed)


class SecAggNode:
    """Answers one engine request at a time; all round state lives in ``store``.

    ``registry`` (client id → Ed25519 public key), when the node has one, pins the cohort's
    identity keys: a round configuration that names another key is refused (spec §1, PKI).
    ``policy`` is the node's own floor on threshold and cohort (spec §7, C0).
    """

    def __init__(
        self,
        identity: NodeIdentity,
        task: EngineTask | None,
        *,
        task_name: str,
        node_config: Mapping[str, Scalar],
        run_config: Mapping[str, Scalar],
        policy: ClientPolicy | None = None,
        registry: Mapping[int, bytes] | None = None,
    ) -> None:
        self.identity = identity
        self.task = task
        self.task_name = task_name
        self.node_config = node_config
        self.run_config = run_config
        self.policy = policy
        self.registry = dict(registry) if registry is not None else None

    def handle(self, request: Mapping[str, Any], store: MutableMapping[str, Any]) -> dict[str, Any]:
        """Answer one request; a refusal raises a RemoteProtocolError and clears ``store``."""
        if field(request, "v", int) != ENGINE_WIRE_VERSION:
            raise MalformedMessageError("unsupported engine wire version")
        stage = field(request, "stage", int)
        if stage == HELLO:
            return {"client": self.identity.client_id, "identity": self.identity.public}
        if stage not in set(Stage):
            store.clear()
            raise MalformedMessageError(f"unknown stage {stage}")
        try:
            if stage == Stage.ADVERTISE_KEYS:
                return self._start(request, store)
            return self._continue(Stage(stage), request, store)
        except Exception:
            store.clear()  # a refused or failed round keeps no secrets behind
            raise

    # ------------------------------------------------------------------ stage 0
    def _start(self, request: Mapping[str, Any], store: MutableMapping[str, Any]) -> dict[str, Any]:
        store.clear()  # a new round erases whatever was left of an older one
        challenge = fixed_bytes(request, "challenge", NODE_CHALLENGE_BYTES)
        config = decode_config(field(request, "config", bytes))
        plan_text = field(request, "plan", str)
        global_state = field(request, "global", bytes)
        me = self.identity.client_id
        if not config.has_client(me):
            raise UnsafeRequestError(f"client {me} is not in the round's cohort")
        if self.registry is not None:
            for u, pk in zip(config.client_ids, config.identity_keys, strict=True):
                if self.registry.get(u) != pk:
                    raise UnsafeRequestError(
                        f"identity key of client {u} is not the registered one"
                    )
        digest = model_digest(global_state, plan_text, config.round_index, self.task_name)
        if digest != config.model_digest:
            raise UnsafeRequestError("model digest does not bind the global state and ring plan")
        values = self.round_input(config, plan_text, global_state)
        seed = secrets.token_bytes(SEED_BYTES)
        protocol = self._protocol(config, seed)
        reply = protocol.advertise_keys().encode()
        store.update(
            {
                "session": config.session_id,
                "config": field(request, "config", bytes),
                "seed": seed,
                # one copy (astype + tobytes made two of the d-vector)
                "values": np.ascontiguousarray(values, values.dtype.newbyteorder("<")).tobytes(),
                "transcript": b"",
            }
        )
        # Ties this advertisement to the node the request came to: a copy relayed by another
        # node carries a signature over the wrong challenge (engine-flower.md §3).
        binding = keys.sign(self.identity.key, node_binding_transcript(config, challenge, reply))
        return {"client": me, "payload": reply, "binding": binding}

    def round_input(
        self, config: SecAggConfig, plan_text: str, global_state: bytes
    ) -> npt.NDArray[np.unsignedinteger[Any]]:
        """This node's ring vector for the round: the task's update in fixed point under the
        server's ring plan (a subclass computes it another way, :mod:`securefl.engine.job`).
        Called only after the request was checked to bind the configuration and model."""
        if self.task is None:
            raise ConfigurationError("this node has no task to compute an update", parameter="task")
        plan = decode_plan(plan_text)
        if plan.bits != config.bits or plan.n_clients < config.n:
            raise UnsafeRequestError("ring plan does not match the round configuration")
        named = self.task.update(global_state, self.node_config, self.run_config)
        layout = TensorLayout.from_tensors(named)
        if layout.digest() != config.layout_digest or layout.size != config.dimension:
            raise ConfigurationError("local update layout differs from the round's layout")
        return encode(layout.flatten(named), plan).values

    # ------------------------------------------------------------------ stages 1..4
    def _continue(
        self, stage: Stage, request: Mapping[str, Any], store: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        payload = field(request, "payload", bytes)
        session = field(request, "session", bytes)
        if store.get("session") != session:
            raise UnsafeRequestError("no live round state for this session (erased or never began)")
        transcript = unframe(store.get("transcript", b""))
        if len(transcript) != stage - 1 or len(transcript) >= MAX_TRANSCRIPT:
            raise UnsafeRequestError(f"stage {stage.name} arrived out of order")
        config = decode_config(store["config"])
        protocol = self._protocol(config, store["seed"])
        protocol.advertise_keys()
        zeros = np.zeros(config.dimension, dtype=np.uint32 if config.bits <= 32 else np.uint64)
        for i, old in enumerate(transcript, start=1):  # replay: same seed → same replies
            protocol.receive_bytes(old, zeros if i == Stage.MASKED_INPUT else None)
        values = None
        if stage is Stage.MASKED_INPUT:
            values = np.frombuffer(store["values"], dtype=zeros.dtype.newbyteorder("<"))
        reply = protocol.receive_bytes(payload, values)
        if stage is Stage.UNMASK:
            store.clear()
        else:
            transcript.append(payload)
            store["transcript"] = frame(transcript)
            if stage is Stage.MASKED_INPUT:
                del store["values"]
        return {"client": self.identity.client_id, "payload": reply}

    def _protocol(self, config: SecAggConfig, seed: bytes) -> ClientProtocol:
        return ClientProtocol(
            config,
            self.identity.client_id,
            self.identity.key,
            randomness=RoundRandomness(seed),
            policy=self.policy,
        )
