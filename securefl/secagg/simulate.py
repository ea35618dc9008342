"""In-process driver: one SecAgg(+) round between simulated clients and the server.

Every message goes through the binary wire codec (so byte counts are real) and through the
sans-I/O state machines; a client that drops at a stage simply sends nothing from then on
(:class:`DropoutPlan`). A client that refuses a request is recorded and counts as dropped. The
driver — not the protocol — reads the clock for ``timings``. Inputs are pulled from the mapping
one client at a time and masked inputs are summed by the server on arrival, so memory stays
O(d) beyond the caller's inputs (n = 1000, d = 2^17 fits easily).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto import keys
from securefl.encoding import RingPlan, decode_sum, encode
from securefl.errors import ConfigurationError, RemoteProtocolError
from securefl.secagg.client import ClientPolicy, ClientProtocol
from securefl.secagg.config import DIGEST_BYTES, SecAggConfig
from securefl.secagg.messages import SERVER_ID, Stage
from securefl.secagg.randomness import RandomSource
from securefl.secagg.server import ServerProtocol
from securefl.tensors import TensorLayout
from securefl.vocabulary import ThreatModel

#: Identity keys of cohorts made by :func:`simulation_config`, by public key (simulation only).
_SIM_IDENTITIES: dict[bytes, keys.Ed25519PrivateKey] = {}


@dataclass(frozen=True)
class DropoutPlan:
    """Which clients stop *before sending* their message of each stage (spec §8).

    ``advertise_keys``: never start; ``share_keys``: drop after advertising keys; ``masked_input``:
    after sharing keys; ``consistency_check``: after sending the masked input; ``unmask``:
    after signing the survivor set, without answering the unmask request.
    """

    advertise_keys: frozenset[int] = frozenset()
    share_keys: frozenset[int] = frozenset()
    masked_input: frozenset[int] = frozenset()
    consistency_check: frozenset[int] = frozenset()
    unmask: frozenset[int] = frozenset()

    def at(self, stage: Stage) -> frozenset[int]:
        return frozenset(getattr(self, stage.name.lower()))

    @classmethod
    def from_mapping(cls, by_stage: Mapping[Stage, Iterable[int]]) -> DropoutPlan:
        return cls(**{s.name.lower(): frozenset(ids) for s, ids in by_stage.items()})


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


def simulation_config(
    client_ids: Iterable[int],
    *,
    threshold: int,
    bits: int,
    dimension: int,
    degree: int | None = None,
    min_cohort: int = 0,
    round_index: int = 0,
    layout_digest: bytes = bytes(DIGEST_BYTES),
    model_digest: bytes = bytes(DIGEST_BYTES),
    nonce: bytes = b"",
    identities: Mapping[int, keys.Ed25519PrivateKey] | None = None,
    threat_model: ThreatModel | str = ThreatModel.MALICIOUS,
    corrupt_fraction: float = 0.0,
    security_bits: float = 40.0,
) -> SecAggConfig:
    """A config whose identity keys are generated (or given) and remembered for simulation."""
    ids = sorted(set(client_ids))
    if identities is None:
        identities = {u: keys.generate_ed25519() for u in ids}
    public = {}
    for u in ids:
        pk = keys.ed25519_public_bytes(identities[u])
        _SIM_IDENTITIES[pk] = identities[u]
        public[u] = pk
    return SecAggConfig.create(
        public,
        threshold=threshold,
        bits=bits,
        dimension=dimension,
        degree=degree,
        min_cohort=min_cohort,
        round_index=round_index,
        layout_digest=layout_digest,
        model_digest=model_digest,
        nonce=nonce,
        threat_model=threat_model,
        corrupt_fraction=corrupt_fraction,
        security_bits=security_bits,
    )


def _identities(
    config: SecAggConfig, given: Mapping[int, keys.Ed25519PrivateKey] | None
) -> dict[int, keys.Ed25519PrivateKey]:
    out = {}
    for u, pk in zip(config.client_ids, config.identity_keys, strict=True):
        key = given.get(u) if given is not None else _SIM_IDENTITIES.get(pk)
        if key is None:
            raise ConfigurationError(
                f"no identity key for client {u} (pass identities= or use simulation_config)",
                parameter="identities",
            )
        out[u] = key
    return out


def run_round(
    inputs: Mapping[int, npt.NDArray[Any]],
    config: SecAggConfig,
    *,
    dropouts: DropoutPlan | None = None,
    identities: Mapping[int, keys.Ed25519PrivateKey] | None = None,
    randomness: Mapping[int, RandomSource] | None = None,
    transcript: list[tuple[str, int, int, bytes]] | None = None,
    policy: ClientPolicy | None = None,
) -> RoundResult:
    """Run one full round in-process; raises :class:`AbortError` if it cannot complete.

    ``inputs`` maps every client id of ``config`` to its encoded vector (integers in
    [0, 2^b), length ``config.dimension``). ``randomness`` injects per-client random sources
    (known-answer vectors only; default: the OS CSPRNG). ``transcript``, if given, receives
    every wire message as ``(stage, sender, recipient, bytes)`` in delivery order.
    ``policy`` is every client's own :class:`ClientPolicy` (a client whose policy rejects the
    config raises :class:`UnsafeRequestError` before the round starts).
    """
    if set(inputs.keys()) != set(config.client_ids):
        raise ConfigurationError(
            "must have one vector per client of the config", parameter="inputs"
        )
    plan = dropouts or DropoutPlan()
    ids = _identities(config, identities)
    rng = randomness or {}
    server = ServerProtocol(config)
    clients = {
        u: ClientProtocol(config, u, ids[u], randomness=rng.get(u), policy=policy)
        for u in config.client_ids
    }
    up = dict.fromkeys(config.client_ids, 0)
    down = dict.fromkeys(config.client_ids, 0)
    refused: dict[int, str] = {}
    gone: set[int] = set()
    timings: dict[str, float] = {}

    def deliver(u: int, data: bytes) -> None:
        up[u] += len(data)
        if transcript is not None:
            transcript.append((Stage(data[6]).name.lower(), u, SERVER_ID, data))
        server.receive_bytes(data, transport_sender=u)

    start = time.perf_counter()
    gone |= plan.at(Stage.ADVERTISE_KEYS)
    for u in config.client_ids:
        if u not in gone:
            deliver(u, clients[u].advertise_keys().encode())
    outbox = server.close_stage()
    timings["advertise_keys"] = time.perf_counter() - start

    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK):
        start = time.perf_counter()
        gone |= plan.at(stage)
        for u, message in outbox.items():
            data = message.encode()
            down[u] += len(data)
            if transcript is not None:
                transcript.append((stage.name.lower(), SERVER_ID, u, data))
            if u in gone:
                continue
            values = inputs[u] if stage is Stage.MASKED_INPUT else None
            try:
                reply = clients[u].receive_bytes(data, values)
            except RemoteProtocolError as exc:
                refused[u] = f"{stage.name}: {type(exc).__name__}: {exc}"
                gone.add(u)
                continue
            deliver(u, reply)
        client_s = time.perf_counter() - start
        outbox = server.close_stage()
        timings[stage.name.lower()] = time.perf_counter() - start
        if stage is Stage.UNMASK:
            timings["server_unmask"] = time.perf_counter() - start - client_s
    assert server.result is not None
    refused.update({u: f"server: {why}" for u, why in server.rejected.items()})
    refused.update({u: f"server pruned: {why}" for u, why in server.pruned.items()})
    timings["total"] = sum(v for k, v in timings.items() if k != "server_unmask")
    return RoundResult(
        total=server.result,
        survivors=server.survivors,
        dropped={s.name.lower(): ids_ for s, ids_ in server.dropped.items()},
        refused=refused,
        bytes_up=up,
        bytes_down=down,
        timings=timings,
    )


@dataclass(frozen=True)
class NamedSumResult:
    """Decoded sum of named tensors over ``round.survivors`` (float64 numpy arrays)."""

    sums: dict[str, npt.NDArray[np.float64]]
    clipped: dict[int, int]
    round: RoundResult


def secure_sum_named(
    updates: Mapping[int, Mapping[str, Any]],
    config: SecAggConfig,
    plan: RingPlan,
    *,
    dropouts: DropoutPlan | None = None,
    weights: Mapping[int, float] | None = None,
    identities: Mapping[int, keys.Ed25519PrivateKey] | None = None,
    policy: ClientPolicy | None = None,
) -> NamedSumResult:
    """Flatten (securefl.tensors), encode (clip + stochastic rounding), run a round, decode.

    The config must agree with the data: ``bits == plan.bits``, ``dimension`` = layout size and
    ``layout_digest`` = the layout's digest (so clients with another layout cannot join).
    ``clipped`` reports per client how many coordinates were clipped to ±clip.
    """
    if not updates:
        raise ConfigurationError("no client updates", parameter="updates")
    first = next(iter(updates.values()))
    layout = TensorLayout.from_tensors(first)
    if config.bits != plan.bits:
        raise ConfigurationError(f"{config.bits} ≠ plan bits {plan.bits}", parameter="bits")
    if config.dimension != layout.size:
        raise ConfigurationError(
            f"{config.dimension} ≠ layout size {layout.size}", parameter="dimension"
        )
    if config.layout_digest != layout.digest():
        raise ConfigurationError(
            "differs from the tensors' layout digest", parameter="layout_digest"
        )
    if plan.n_clients < config.n:
        raise ConfigurationError(f"plan is for {plan.n_clients} clients", parameter="plan")
    if set(updates) != set(config.client_ids):
        raise ConfigurationError(
            "must have one update per client of the config", parameter="updates"
        )
    if weights is not None and set(weights) != set(updates):
        raise ConfigurationError("must have one weight per client update", parameter="weights")
    encoded: dict[int, npt.NDArray[Any]] = {}
    clipped: dict[int, int] = {}
    for u, named in updates.items():
        weight = 1.0 if weights is None else weights[u]  # encode() validates it
        enc = encode(layout.flatten(named), plan, weight=weight)
        encoded[u] = enc.values
        clipped[u] = enc.clipped
    result = run_round(encoded, config, dropouts=dropouts, identities=identities, policy=policy)
    flat = decode_sum(result.total, plan)
    sums = {
        spec.name: flat[start:stop].reshape(spec.shape) for spec, start, stop in layout.offsets()
    }
    return NamedSumResult(sums=sums, clipped=clipped, round=result)


__all__ = [
    "SERVER_ID",
    "DropoutPlan",
    "NamedSumResult",
    "RoundResult",
    "run_round",
    "secure_sum_named",
    "simulation_config",
]
