"""Sans-I/O SecAgg(+) client (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020 neighbourhoods).

Messages in, messages out; no I/O, no clock. Fresh X25519 key pairs (c_u for share transport,
s_u for pairwise masks) every round. Each request is checked before use: header (session,
round, stage, recipient — else :class:`ReplayError`), signatures, set sizes against t and the
minimum cohort, and the refusal rules of spec §7 (:class:`UnsafeRequestError`): never reveal
both the self-mask share and the mask-key share of one peer, never accept overlapping or
duplicated alive/dead lists, never reveal the mask key of a peer in the signed survivor set.
A method called out of order by our own caller raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto import aead, keys, prg, shamir
from securefl.errors import (
    ConfigurationError,
    LocalProtocolError,
    RemoteProtocolError,
    ReplayError,
    UnsafeRequestError,
)
from securefl.secagg.config import SecAggConfig, required_threshold
from securefl.secagg.derive import (
    advertise_transcript,
    consistency_transcript,
    pairwise_mask_key,
    self_mask_key,
    share_associated_data,
    share_key,
)
from securefl.secagg.graph import neighbours
from securefl.secagg.messages import (
    SERVER_ID,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencyRequest,
    MaskedInput,
    MaskedInputRequest,
    Message,
    PeerKeys,
    ShareKeys,
    ShareKeysRequest,
    ShareKind,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
    decode,
    pack_ids,
)
from securefl.secagg.randomness import RandomSource, SystemRandomness
from securefl.secagg.transitions import ClientEvent, ClientState, client_expects, client_next
from securefl.vocabulary import ThreatModel

_STAGE_NAME = {
    "ShareKeysRequest": Stage.SHARE_KEYS.name,
    "MaskedInputRequest": Stage.MASKED_INPUT.name,
    "ConsistencyRequest": Stage.CONSISTENCY_CHECK.name,
    "UnmaskRequest": Stage.UNMASK.name,
}
_PLAINTEXT = struct.Struct("<II")
PLAINTEXT_BYTES = _PLAINTEXT.size + 2 * shamir.SHARE_BYTES


#: Fewest clients (including itself) whose sum a client lets the server see by default: with
#: two, the other party's input alone determines ours; three is the least that hides an input
#: in a sum at all. Deployments choose more (Sybils, spec §1); DP is what survives collusion.
DEFAULT_MIN_COHORT = 3


@dataclass(frozen=True)
class ClientPolicy:
    """What this client demands of any round, whatever configuration the server hands it.

    In a deployment the round configuration usually comes from the server, so an honest client
    needs its own floor (spec §7, C0): it refuses a round whose threshold is below
    ``min_threshold`` or below the bound of ``threat_model`` with ``corrupt_fraction`` γ
    (params.min_threshold: t > (n + ⌊γn⌋)/2 on the complete graph against a malicious server),
    a malicious-model round without a global-model hash, and never signs or unmasks a survivor
    set smaller than ``min_cohort``. The defaults are the safe ones (malicious server,
    :data:`DEFAULT_MIN_COHORT`); ``ThreatModel.SEMI_HONEST`` is an explicit opt-in, shown in
    :meth:`to_dict`.
    """

    threat_model: ThreatModel = ThreatModel.MALICIOUS
    corrupt_fraction: float = 0.0
    min_threshold: int = 2
    min_cohort: int = DEFAULT_MIN_COHORT
    security_bits: float = 40.0

    def __post_init__(self) -> None:
        model = ThreatModel.parse(self.threat_model, parameter="threat_model")
        object.__setattr__(self, "threat_model", model)
        for name in ("min_threshold", "min_cohort"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigurationError("must be a non-negative int", parameter=name)
        required_threshold(3, 2, model, self.corrupt_fraction, self.security_bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of what this client demanded."""
        return {
            "threat_model": self.threat_model.value,
            "corrupt_fraction": self.corrupt_fraction,
            "min_threshold": self.min_threshold,
            "min_cohort": self.min_cohort,
            "security_bits": self.security_bits,
        }

    def threshold_floor(self, config: SecAggConfig) -> int:
        """Smallest t this client accepts in ``config``'s cohort and graph."""
        return max(
            self.min_threshold,
            required_threshold(
                config.n,
                config.neighbour_count,
                self.threat_model,
                self.corrupt_fraction,
                self.security_bits,
            ),
        )


def mask_sign(u: int, v: int) -> int:
    """Client u adds +PRG(s_{u,v}) if u < v and subtracts it if u > v, so pairs cancel."""
    return 1 if u < v else -1


def check_header(config: SecAggConfig, msg: Message, client_id: int) -> None:
    """Replay defence: session, round and addressing of a server → client message."""
    if msg.session_id != config.session_id:
        raise ReplayError(f"{type(msg).__name__} belongs to another session")
    if msg.round_index != config.round_index:
        raise ReplayError(
            f"{type(msg).__name__} is for round {msg.round_index}, not {config.round_index}"
        )
    if msg.sender != SERVER_ID or msg.recipient != client_id:
        raise ReplayError(f"{type(msg).__name__} is addressed to {msg.recipient}, not to us")


def _distinct_sorted(ids: Sequence[int], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise UnsafeRequestError(f"{what} contains duplicate ids")


class ClientProtocol:
    """One client's side of one round; create a fresh instance per round."""

    def __init__(
        self,
        config: SecAggConfig,
        client_id: int,
        identity_key: keys.Ed25519PrivateKey,
        *,
        randomness: RandomSource | None = None,
        policy: ClientPolicy | None = None,
    ) -> None:
        """``policy=None`` means the default :class:`ClientPolicy` (malicious server, minimum
        cohort :data:`DEFAULT_MIN_COHORT`), never "no policy": a weaker one must be passed."""
        if not config.has_client(client_id):
            raise ConfigurationError(f"{client_id} is not in the cohort", parameter="client_id")
        if keys.ed25519_public_bytes(identity_key) != config.identity_key(client_id):
            raise ConfigurationError(
                "does not match the registered identity key", parameter="identity_key"
            )
        self.config = config
        self.client_id = client_id
        self.policy = policy = policy if policy is not None else ClientPolicy()
        #: Smallest threshold / survivor set we accept: the config's, raised by our policy.
        self.min_threshold = max(
            config.threshold, config.min_safe_threshold, policy.threshold_floor(config)
        )
        self.min_cohort = max(config.effective_min_cohort, policy.min_cohort)
        if policy.threat_model is ThreatModel.MALICIOUS and config.model_digest == bytes(
            len(config.model_digest)
        ):
            raise UnsafeRequestError(
                "the round does not bind a global-model hash (model inconsistency, Pasquini "
                "et al. 2022): refused under a malicious-server policy"
            )
        if config.threshold < self.min_threshold:
            raise UnsafeRequestError(
                f"the round's threshold {config.threshold} is below this client's minimum "
                f"{self.min_threshold} ({policy})"
            )
        self._identity = identity_key
        self._rng: RandomSource = randomness if randomness is not None else SystemRandomness()
        self.neighbours: frozenset[int] = frozenset(neighbours(config)[client_id])
        self.state = ClientState.IDLE
        self._cipher_sk: keys.X25519PrivateKey | None = None
        self._mask_sk: keys.X25519PrivateKey | None = None
        self._peers: dict[int, PeerKeys] = {}
        self._self_seed: bytes = b""
        self._received: dict[int, bytes] = {}  # v -> e_{v,u}; keys() is U2 ∩ N(u)
        self._signed_survivors: frozenset[int] | None = None
        self._survivor_list: tuple[int, ...] = ()
        self._survivors_packed = b""
        self._revealed: dict[int, ShareKind] = {}
        self._pair_keys: dict[int, bytes] = {}  # v -> AES-GCM key of the pair (u, v)

    # ------------------------------------------------------------------ helpers
    def _refuse(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self.state = client_next(self.state, ClientEvent.REFUSAL)
        return exc

    def _live_floor(self, live_neighbours: int, what: str) -> None:
        """At every stage: ≥ t live neighbours, and (complete graph) ≥ the minimum cohort."""
        cfg = self.config
        if live_neighbours < cfg.threshold:
            raise UnsafeRequestError(
                f"{what}: {live_neighbours} live neighbours, fewer than threshold {cfg.threshold}"
            )
        if cfg.is_complete and live_neighbours + 1 < self.min_cohort:
            raise UnsafeRequestError(
                f"{what}: {live_neighbours + 1} live clients, fewer than the minimum cohort "
                f"{self.min_cohort}"
            )

    # ------------------------------------------------------------------ stages
    def advertise_keys(self) -> AdvertiseKeys:
        """Round 0: fresh c_u, s_u; sign (session, round, u, c_u^PK, s_u^PK)."""
        nxt = client_next(self.state, ClientEvent.ADVERTISE)
        self._cipher_sk = keys.x25519_private_from_bytes(self._rng.token_bytes(32))
        self._mask_sk = keys.x25519_private_from_bytes(self._rng.token_bytes(32))
        c_pk = keys.x25519_public_bytes(self._cipher_sk)
        s_pk = keys.x25519_public_bytes(self._mask_sk)
        sig = keys.sign(
            self._identity, advertise_transcript(self.config, self.client_id, c_pk, s_pk)
        )
        self.state = nxt
        return AdvertiseKeys(
            self.config.session_id,
            self.config.round_index,
            self.client_id,
            SERVER_ID,
            cipher_pk=c_pk,
            mask_pk=s_pk,
            signature=sig,
        )

    def share_keys(self, request: ShareKeysRequest) -> ShareKeys:
        """Round 1: verify neighbours' keys; Shamir-share b_u and s_u^SK; encrypt per peer."""
        nxt = client_next(self.state, ClientEvent.SHARE_KEYS_REQUEST)
        try:
            reply = self._share_keys(request)
        except RemoteProtocolError as exc:
            raise self._refuse(exc) from None
        self.state = nxt
        return reply

    def _share_keys(self, request: ShareKeysRequest) -> ShareKeys:
        cfg, u = self.config, self.client_id
        check_header(cfg, request, u)
        if request.threshold < self.min_threshold:
            raise UnsafeRequestError(
                f"threshold {request.threshold} is below the configured minimum "
                f"{self.min_threshold}"
            )
        if request.threshold != cfg.threshold:
            raise RemoteProtocolError(
                f"threshold {request.threshold} differs from the session's {cfg.threshold}"
            )
        ids = [p.client_id for p in request.peers]
        _distinct_sorted(ids, "peer list")
        outsiders = set(ids) - self.neighbours
        if outsiders:
            raise UnsafeRequestError(f"peers {sorted(outsiders)[:5]} are not our neighbours")
        self._live_floor(len(ids), "share keys")
        assert self._cipher_sk is not None and self._mask_sk is not None
        own = {keys.x25519_public_bytes(self._cipher_sk), keys.x25519_public_bytes(self._mask_sk)}
        seen: set[bytes] = set(own)
        for p in request.peers:
            keys.verify(
                cfg.identity_public(p.client_id),
                p.signature,
                advertise_transcript(cfg, p.client_id, p.cipher_pk, p.mask_pk),
            )
            if p.cipher_pk in seen or p.mask_pk in seen or p.cipher_pk == p.mask_pk:
                raise UnsafeRequestError(f"peer {p.client_id} reuses a public key")
            seen.update((p.cipher_pk, p.mask_pk))
        self._peers = {p.client_id: p for p in request.peers}
        self._self_seed = self._rng.token_bytes(shamir.SECRET_BYTES)
        coeff = (cfg.threshold - 1) * shamir.COEFF_RANDOM_BYTES
        seed_shares = shamir.split(
            self._self_seed, cfg.threshold, ids, randomness=self._rng.token_bytes(coeff)
        )
        key_shares = shamir.split(
            keys.private_bytes(self._mask_sk),
            cfg.threshold,
            ids,
            randomness=self._rng.token_bytes(coeff),
        )
        out = []
        for v in ids:
            key = share_key(cfg, keys.exchange(self._cipher_sk, self._peers[v].cipher_pk), u, v)
            self._pair_keys[v] = key
            plaintext = _PLAINTEXT.pack(u, v) + seed_shares[v] + key_shares[v]
            ct = aead.seal(
                key, aead.direction_nonce(u, v), plaintext, share_associated_data(cfg, u, v)
            )
            out.append((v, ct))
        return ShareKeys(cfg.session_id, cfg.round_index, u, SERVER_ID, ciphertexts=tuple(out))

    def masked_input(self, request: MaskedInputRequest, values: npt.NDArray[Any]) -> MaskedInput:
        """Round 2: y_u = x_u + PRG(b_u) + Σ_{v∈U2∩N(u)} ±PRG(s_{u,v}) mod 2^b."""
        nxt = client_next(self.state, ClientEvent.MASKED_INPUT_REQUEST)
        cfg = self.config
        word = np.dtype(np.uint32) if cfg.bits <= 32 else np.dtype(np.uint64)
        if not isinstance(values, np.ndarray) or values.shape != (cfg.dimension,):
            raise ConfigurationError(f"must have shape ({cfg.dimension},)", parameter="values")
        if not np.issubdtype(values.dtype, np.integer):
            raise ConfigurationError("must be an integer (encoded) vector", parameter="values")
        if values.size and (int(values.min()) < 0 or int(values.max()) >> cfg.bits):
            raise ConfigurationError(f"values must lie in [0, 2^{cfg.bits})", parameter="values")
        try:
            pairs = self._masked_keys(request)
        except RemoteProtocolError as exc:
            raise self._refuse(exc) from None
        acc = np.array(values, dtype=word, copy=True)
        prg.add_masks(acc, pairs, bits=cfg.bits)  # reduces mod 2^b chunk by chunk, in cache
        self.state = nxt
        return MaskedInput(
            cfg.session_id, cfg.round_index, self.client_id, SERVER_ID, bits=cfg.bits, values=acc
        )

    def _masked_keys(self, request: MaskedInputRequest) -> list[tuple[bytes, int]]:
        cfg, u = self.config, self.client_id
        check_header(cfg, request, u)
        senders = [v for v, _ in request.ciphertexts]
        _distinct_sorted(senders, "ciphertext list")
        unknown = set(senders) - self._peers.keys()
        if unknown:
            raise UnsafeRequestError(f"ciphertexts from non-neighbours {sorted(unknown)[:5]}")
        self._live_floor(len(senders), "masked input")
        self._received = dict(request.ciphertexts)
        assert self._mask_sk is not None
        pairs = [(self_mask_key(cfg, self._self_seed, u), 1)]
        for v in sorted(self._received):
            secret = keys.exchange(self._mask_sk, self._peers[v].mask_pk)
            pairs.append((pairwise_mask_key(cfg, secret, u, v), mask_sign(u, v)))
        return pairs

    def consistency_check(self, request: ConsistencyRequest) -> ConsistencyCheck:
        """Round 3: sign U3 after checking it against what we saw (Fig. 4, ConsistencyCheck)."""
        nxt = client_next(self.state, ClientEvent.CONSISTENCY_REQUEST)
        try:
            reply = self._consistency(request)
        except RemoteProtocolError as exc:
            raise self._refuse(exc) from None
        self.state = nxt
        return reply

    def _consistency(self, request: ConsistencyRequest) -> ConsistencyCheck:
        cfg, u = self.config, self.client_id
        check_header(cfg, request, u)
        survivors = request.survivors
        _distinct_sorted(survivors, "survivor list")
        ordered = all(a < b for a, b in itertools.pairwise(survivors))
        if not ordered or not cfg.id_set.issuperset(survivors):
            raise UnsafeRequestError("survivor list is not a sorted list of cohort ids")
        if u not in survivors:
            raise UnsafeRequestError("survivor list omits us although we sent a masked input")
        if len(survivors) < self.min_cohort:
            raise UnsafeRequestError(
                f"{len(survivors)} survivors, fewer than the minimum cohort {self.min_cohort}"
            )
        live = self.neighbours.intersection(survivors)
        missing = live - self._received.keys()
        if missing:
            raise UnsafeRequestError(
                f"survivors {sorted(missing)[:5]} never shared keys with us (inconsistent view)"
            )
        self._live_floor(len(live), "consistency check")
        self._signed_survivors = frozenset(survivors)
        self._survivor_list = tuple(survivors)
        self._survivors_packed = pack_ids(self._survivor_list)
        assert self._cipher_sk is not None and self._mask_sk is not None
        transcript = consistency_transcript(
            cfg,
            u,
            keys.x25519_public_bytes(self._cipher_sk),
            keys.x25519_public_bytes(self._mask_sk),
            self._survivor_list,
            packed=self._survivors_packed,
        )
        sig = keys.sign(self._identity, transcript)
        return ConsistencyCheck(cfg.session_id, cfg.round_index, u, SERVER_ID, signature=sig)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 4: verify neighbours' U3 signatures, then reveal one share per listed peer."""
        nxt = client_next(self.state, ClientEvent.UNMASK_REQUEST)
        try:
            reply = self._unmask(request)
        except RemoteProtocolError as exc:
            raise self._refuse(exc) from None
        self.state = nxt
        return reply

    def _unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        cfg, u = self.config, self.client_id
        check_header(cfg, request, u)
        survivors = self._signed_survivors
        assert survivors is not None
        if len(survivors) < self.min_cohort:  # C8 already refused to sign it; never unmask
            raise UnsafeRequestError(
                f"{len(survivors)} survivors, fewer than the minimum cohort {self.min_cohort}"
            )
        signers = [v for v, _ in request.signatures]
        _distinct_sorted(signers, "signature list")
        if not set(signers) <= survivors & self.neighbours:
            raise UnsafeRequestError("a signer is not a surviving neighbour")
        if len(signers) < cfg.threshold:
            raise UnsafeRequestError(
                f"{len(signers)} neighbours confirmed the survivor set, fewer than threshold "
                f"{cfg.threshold}"
            )
        for v, sig in request.signatures:
            keys.verify(
                cfg.identity_public(v),
                sig,
                consistency_transcript(
                    cfg,
                    v,
                    self._peers[v].cipher_pk,
                    self._peers[v].mask_pk,
                    self._survivor_list,
                    packed=self._survivors_packed,
                ),
            )
        alive, dead = list(request.alive), list(request.dead)
        _distinct_sorted(alive, "alive list")
        _distinct_sorted(dead, "dead list")
        if set(alive) & set(dead):
            raise UnsafeRequestError("a peer is listed both alive and dead")
        if not set(alive) <= survivors:
            raise UnsafeRequestError("alive list contains a peer outside the signed survivor set")
        if set(dead) & survivors:
            raise UnsafeRequestError(
                "dead list contains a peer in the signed survivor set (its input is in the sum)"
            )
        for v in alive:
            if self._revealed.get(v) is ShareKind.MASK_KEY:
                raise UnsafeRequestError(f"already revealed the mask-key share of {v}")
        for v in dead:
            if self._revealed.get(v) is ShareKind.SELF_MASK_SEED:
                raise UnsafeRequestError(f"already revealed the self-mask share of {v}")
        unknown = (set(alive) | set(dead)) - self._received.keys()
        if unknown:
            raise RemoteProtocolError(f"we hold no shares of {sorted(unknown)[:5]}")
        assert self._cipher_sk is not None
        wanted = [(v, ShareKind.SELF_MASK_SEED) for v in alive]
        wanted += [(v, ShareKind.MASK_KEY) for v in dead]
        out = []
        for v, kind in sorted(wanted):
            seed_share, key_share = self._open_share(v)
            out.append((v, kind, seed_share if kind is ShareKind.SELF_MASK_SEED else key_share))
        for v, kind in wanted:
            self._revealed[v] = kind
        return UnmaskResponse(cfg.session_id, cfg.round_index, u, SERVER_ID, shares=tuple(out))

    def _open_share(self, v: int) -> tuple[bytes, bytes]:
        cfg, u = self.config, self.client_id
        plaintext = aead.open_(
            self._pair_keys[v],
            aead.direction_nonce(v, u),
            self._received[v],
            share_associated_data(cfg, v, u),
        )
        if len(plaintext) != PLAINTEXT_BYTES or _PLAINTEXT.unpack_from(plaintext) != (v, u):
            raise RemoteProtocolError(f"share plaintext from {v} names the wrong parties")
        mid = _PLAINTEXT.size + shamir.SHARE_BYTES
        return plaintext[_PLAINTEXT.size : mid], plaintext[mid:]

    # ------------------------------------------------------------------ dispatch
    def handle(self, message: Message, values: npt.NDArray[Any] | None = None) -> Message:
        """Dispatch a server message by the transition table (spec §6); a message for another
        stage → ReplayError (and FAILED)."""
        expected = client_expects(self.state)
        if not expected:
            raise LocalProtocolError(f"no server message is expected in state {self.state.value}")
        name = type(message).__name__
        if message.FROM_CLIENT or name not in {e.value for e in expected}:
            want = " or ".join(sorted(e.value for e in expected))
            self.state = client_next(self.state, ClientEvent.OTHER_STAGE)
            raise ReplayError(f"{name} arrived while expecting stage {_STAGE_NAME[want]} ({want})")
        if isinstance(message, ShareKeysRequest):
            return self.share_keys(message)
        if isinstance(message, MaskedInputRequest):
            if values is None:
                raise LocalProtocolError("the masked-input stage needs the encoded input values")
            return self.masked_input(message, values)
        if isinstance(message, ConsistencyRequest):
            return self.consistency_check(message)
        assert isinstance(message, UnmaskRequest)
        return self.unmask(message)

    def receive_bytes(self, data: bytes, values: npt.NDArray[Any] | None = None) -> bytes:
        """Decode (validated against the config), handle, and encode the reply."""
        try:
            message = decode(data, config=self.config)
        except RemoteProtocolError as exc:
            raise self._refuse(exc) from None
        return self.handle(message, values).encode()
