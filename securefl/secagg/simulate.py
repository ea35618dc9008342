"""In-process simulation: one SecAgg(+) round between simulated clients and the server.

:func:`run_round` is the stage driver (:func:`securefl.secagg.driver.drive_round`) over a
:class:`SimulatedTransport`. Every message goes through the binary wire codec (so byte counts
are real) and through the sans-I/O state machines; a client that drops at a stage simply sends
nothing from then on (:class:`DropoutPlan`). A client that refuses a request is recorded and
counts as dropped. Inputs are pulled from the mapping one client at a time and masked inputs
are summed by the server on arrival, so memory stays O(d) beyond the caller's inputs
(n = 1000, d = 2^17 fits easily). Identity keys live in the caller's
:class:`SimulatedIdentities`; this module keeps no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto import keys
from securefl.encoding import RingPlan, decode_sum, encode
from securefl.errors import ConfigurationError, RemoteProtocolError
from securefl.secagg.client import ClientPolicy, ClientProtocol
from securefl.secagg.config import DIGEST_BYTES, SecAggConfig
from securefl.secagg.driver import Deliver, RoundResult, drive_round
from securefl.secagg.messages import SERVER_ID, Stage
from securefl.secagg.randomness import RandomSource
from securefl.secagg.server import ServerProtocol
from securefl.tensors import TensorLayout
from securefl.vocabulary import ThreatModel


class SimulatedIdentities(Mapping[int, keys.Ed25519PrivateKey]):
    """Client id → Ed25519 identity private key of simulated clients, held by the caller.

    Simulation and tests only: a deployment never has every client's signing key in one
    process (there each client holds its own; the server knows public keys). The caller creates
    one per simulated population, passes it to :func:`simulation_config` (which generates the
    keys of clients it does not hold yet) and to :func:`run_round`; nothing is kept elsewhere,
    so it is garbage once the caller drops it.
    """

    __slots__ = ("_keys",)

    def __init__(self, private_keys: Mapping[int, keys.Ed25519PrivateKey] | None = None) -> None:
        self._keys: dict[int, keys.Ed25519PrivateKey] = dict(private_keys or {})

    @classmethod
    def generate(cls, client_ids: Iterable[int]) -> SimulatedIdentities:
        """Fresh keys (OS CSPRNG) for ``client_ids``."""
        out = cls()
        out.ensure(client_ids)
        return out

    def ensure(self, client_ids: Iterable[int]) -> None:
        """Generate a key for every id in ``client_ids`` that has none yet."""
        for u in client_ids:
            if u not in self._keys:
                self._keys[u] = keys.generate_ed25519()

    def public_keys(self, client_ids: Iterable[int]) -> dict[int, bytes]:
        """Raw 32-byte public keys of ``client_ids`` (all must be held)."""
        return {u: keys.ed25519_public_bytes(self[u]) for u in client_ids}

    def __getitem__(self, client_id: int) -> keys.Ed25519PrivateKey:
        return self._keys[client_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


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
        return frozenset(getattr(self, stage.label))

    @classmethod
    def from_mapping(cls, by_stage: Mapping[Stage, Iterable[int]]) -> DropoutPlan:
        return cls(**{s.label: frozenset(ids) for s, ids in by_stage.items()})


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
    """A config over the identity keys in ``identities`` (the caller's store).

    A :class:`SimulatedIdentities` gets keys generated for clients it does not hold yet; any
    other mapping must hold every client. ``None`` generates throwaway keys: enough for a
    config alone, but a round (:func:`run_round`) needs the private keys, so pass a store.
    """
    ids = sorted(set(client_ids))
    if identities is None:
        identities = SimulatedIdentities.generate(ids)
    elif isinstance(identities, SimulatedIdentities):
        identities.ensure(ids)
    missing = [u for u in ids if u not in identities]
    if missing:
        raise ConfigurationError(
            f"no identity key for clients {missing[:5]}", parameter="identities"
        )
    public = {u: keys.ed25519_public_bytes(identities[u]) for u in ids}
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
    """The private key of every client of ``config``, checked against its public key."""
    if given is None:
        raise ConfigurationError(
            "a simulated round needs every client's identity key: hold a SimulatedIdentities "
            "and pass it to simulation_config(identities=) and run_round(identities=)",
            parameter="identities",
        )
    out = {}
    for u, pk in zip(config.client_ids, config.identity_keys, strict=True):
        key = given.get(u)
        if key is None or keys.ed25519_public_bytes(key) != pk:
            raise ConfigurationError(
                f"no identity key for client {u} matching the config", parameter="identities"
            )
        out[u] = key
    return out


class SimulatedTransport:
    """In-process :class:`~securefl.secagg.driver.Transport` to simulated clients.

    Every message crosses the binary wire codec, so byte counts are real. A client in
    ``dropouts.at(stage)`` (or any later stage) sends nothing from that stage on; a client whose
    state machine refuses a request is reported and sends nothing further. ``inputs[u]`` is
    read only when client ``u`` masks its input, so a lazy mapping keeps memory O(d).
    ``transcript``, if given, receives every wire message as ``(stage, sender, recipient,
    bytes)`` in delivery order (the server is :data:`SERVER_ID`).
    """

    def __init__(
        self,
        clients: Mapping[int, ClientProtocol],
        inputs: Mapping[int, npt.NDArray[Any]],
        *,
        dropouts: DropoutPlan | None = None,
        transcript: list[tuple[str, int, int, bytes]] | None = None,
    ) -> None:
        self.clients = clients
        self.inputs = inputs
        self.dropouts = dropouts or DropoutPlan()
        self.transcript = transcript
        self.gone: set[int] = set()

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> dict[int, str]:
        failed: dict[int, str] = {}
        self.gone |= self.dropouts.at(stage)
        for u, data in requests.items():
            if stage is not Stage.ADVERTISE_KEYS and self.transcript is not None:
                self.transcript.append((stage.label, SERVER_ID, u, data))
            if u in self.gone:
                continue
            try:
                if stage is Stage.ADVERTISE_KEYS:
                    reply = self.clients[u].advertise_keys().encode()
                else:
                    values = self.inputs[u] if stage is Stage.MASKED_INPUT else None
                    reply = self.clients[u].receive_bytes(data, values)
            except RemoteProtocolError as exc:
                failed[u] = f"{stage.name}: {type(exc).__name__}: {exc}"
                self.gone.add(u)
                continue
            if self.transcript is not None:
                self.transcript.append((Stage(reply[6]).label, u, SERVER_ID, reply))
            deliver(u, reply)
        return failed


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
    """Run one full round in-process (:func:`drive_round` over a :class:`SimulatedTransport`);
    raises :class:`AbortError` if it cannot complete.

    ``inputs`` maps every client id of ``config`` to its encoded vector (integers in
    [0, 2^b), length ``config.dimension``). ``identities`` holds every client's identity key
    (the :class:`SimulatedIdentities` given to :func:`simulation_config`). ``randomness``
    injects per-client random sources (known-answer vectors only; default: the OS CSPRNG).
    ``transcript``, if given, receives every wire message as ``(stage, sender, recipient,
    bytes)`` in delivery order. ``policy`` is every client's own :class:`ClientPolicy` (a
    client whose policy rejects the config raises :class:`UnsafeRequestError` before the
    round starts).
    """
    if set(inputs.keys()) != set(config.client_ids):
        raise ConfigurationError(
            "must have one vector per client of the config", parameter="inputs"
        )
    ids = _identities(config, identities)
    rng = randomness or {}
    clients = {
        u: ClientProtocol(config, u, ids[u], randomness=rng.get(u), policy=policy)
        for u in config.client_ids
    }
    transport = SimulatedTransport(clients, inputs, dropouts=dropouts, transcript=transcript)
    return drive_round(ServerProtocol(config), transport)


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
    "SimulatedIdentities",
    "SimulatedTransport",
    "run_round",
    "secure_sum_named",
    "simulation_config",
]
