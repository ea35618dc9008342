"""Sans-I/O SecAgg(+) server (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020).

The server collects client messages for the current stage (``receive`` / ``receive_bytes``)
and, when its caller decides the stage is over (all in, or a timeout the caller measured),
``close_stage`` fixes the set of live clients U1 ⊇ U2 ⊇ U3 ⊇ U4 ⊇ U5 and returns the messages
of the next stage. Every message is attributed to the client its *transport* authenticated
(``transport_sender``, mandatory), never to its header. No client message crashes the server:
a possible replay or re-delivery (other session, round or stage, a duplicate) is ignored
without touching anyone (``ignored``); a fresh message that fails validation drops the client
whose channel sent it (``rejected``) — so nobody can evict another client (spec §6.1).
Clients whose neighbourhood has fallen below t are pruned (they would refuse anyway); when the
sum can no longer be recovered, ``close_stage`` raises :class:`AbortError`.

Unmasking reconstructs only what is needed: b_w for each survivor w ∈ U3 and s_v^SK for each
client v ∈ U2 \\ U3 that dropped after sharing, then removes all masks in one chunk-major pass
of the PRG over the running sum (the masked inputs are summed on arrival, never stored).
Reconstruction uses every share received, not just t (spec §8.1): an inconsistent share is
corrected around when the surplus allows (its holder is named in ``blamed``), and otherwise the
round aborts — a wrong sum is never released.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto import keys, prg, shamir
from securefl.errors import (
    AbortError,
    ConfigurationError,
    LocalProtocolError,
    MalformedMessageError,
    SecureFLError,
)
from securefl.secagg.client import mask_sign
from securefl.secagg.config import SecAggConfig
from securefl.secagg.derive import (
    advertise_transcript,
    consistency_transcript,
    pairwise_mask_key,
    self_mask_key,
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
from securefl.secagg.transitions import ServerEvent, ServerState, server_accepts, server_next

_STAGE_OF = {
    ServerState.COLLECT_ADVERTISE: Stage.ADVERTISE_KEYS,
    ServerState.COLLECT_SHARES: Stage.SHARE_KEYS,
    ServerState.COLLECT_MASKED: Stage.MASKED_INPUT,
    ServerState.COLLECT_CONSISTENCY: Stage.CONSISTENCY_CHECK,
    ServerState.COLLECT_UNMASK: Stage.UNMASK,
}


#: Public probe scalar: X25519 with any clamped scalar maps exactly the low-order points to the
#: all-zero output, which ``keys.exchange`` rejects (RFC 7748 §6.1). Not a secret.
_LOW_ORDER_PROBE = keys.x25519_private_from_bytes(
    b"securefl/secagg/low-order-probe\x00".ljust(32, b"\x00")
)


class _Reject(Exception):
    """Internal: the sender of the current message is dropped with this reason."""


class _Ignore(Exception):
    """Internal: the current message is ignored (maybe a replay); nobody is dropped."""


def _check_sender(transport_sender: object) -> int:
    if isinstance(transport_sender, bool) or not isinstance(transport_sender, int):
        raise ConfigurationError(
            "must be the client id the transport authenticated", parameter="transport_sender"
        )
    return transport_sender


class ServerProtocol:
    """The aggregator's side of one round."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.graph = neighbours(config)
        self.state = ServerState.COLLECT_ADVERTISE
        self.word = np.dtype(np.uint32) if config.bits <= 32 else np.dtype(np.uint64)
        self.rejected: dict[int, str] = {}
        #: Clients whose revealed share was inconsistent with the others' (corrected around).
        self.blamed: dict[int, str] = {}
        #: Secrets rebuilt from exactly t shares: nothing to check them against (spec §8.1).
        self.unchecked: set[tuple[int, ShareKind]] = set()
        #: Messages ignored without dropping anyone (first reason per client; spec §6.1).
        self.ignored: dict[int, str] = {}
        self.ignored_count = 0
        self.pruned: dict[int, str] = {}
        self.dropped: dict[Stage, frozenset[int]] = {}
        self._expected: set[int] = set(config.client_ids)
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._advertised_keys: set[bytes] = set()
        self._ciphertexts: dict[int, dict[int, bytes]] = {}  # recipient -> sender -> ct
        self._shared: set[int] = set()
        self._masked: set[int] = set()
        self._sum: npt.NDArray[Any] = np.zeros(config.dimension, dtype=self.word)
        self._signatures: dict[int, bytes] = {}
        self._shares: dict[tuple[int, ShareKind], dict[int, bytes]] = {}
        self._responded: set[int] = set()
        self._requested: dict[int, set[tuple[int, ShareKind]]] = {}
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self.u4: frozenset[int] = frozenset()
        self.u5: frozenset[int] = frozenset()
        self.result: npt.NDArray[Any] | None = None
        self._u3_list: tuple[int, ...] = ()
        self._u3_packed = b""

    # ------------------------------------------------------------------ receiving
    @property
    def stage(self) -> Stage | None:
        return _STAGE_OF.get(self.state)

    def receive_bytes(self, data: bytes, *, transport_sender: int) -> bool:
        """Decode and record one client message; False if it was not accepted.

        ``transport_sender`` is the client id the *transport* authenticated (TLS identity,
        signed envelope, …) — never read from the message. Bytes that do not decode came from
        that channel and are its fault: that client is dropped (spec §6.1).
        """
        sender = _check_sender(transport_sender)
        try:
            message = decode(data, config=self.config)
        except MalformedMessageError as exc:
            if self._accepted_this_stage(sender):
                self._ignore(sender, f"malformed message after its accepted one: {exc}")
            else:
                self._drop(sender, f"malformed message: {exc}")
            return False
        return self.receive(message, transport_sender=sender)

    def receive(self, message: Message, *, transport_sender: int) -> bool:
        """Record one client message for the current stage; False if it was not accepted.

        Sender rule (spec §6.1): the message is attributed to ``transport_sender`` only, and
        its header must name the same client. A message that may be a replay or a
        re-delivery — another session, round or stage, a client not live here, a second
        message for the stage — is *ignored* (``ignored``): it removes nobody and nothing
        already accepted. A fresh message of this stage from the client's own channel that
        fails validation (forged header, bad signature, wrong recipients, shapes, shares) is
        that client's fault: it is dropped (``rejected``).
        """
        sender = _check_sender(transport_sender)
        try:
            self._check(message, sender)
        except _Ignore as exc:
            self._ignore(sender, str(exc))
            return False
        except _Reject as exc:
            self._drop(sender, str(exc))
            return False
        try:
            self._accept(message)
        except _Reject as exc:
            self._drop(sender, str(exc))
            return False
        except SecureFLError as exc:  # e.g. a signature that does not verify
            self._drop(sender, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _drop(self, client: int, reason: str) -> None:
        if client in self._expected:
            self._expected.discard(client)
            self.rejected.setdefault(client, reason)

    def _ignore(self, client: int, reason: str) -> None:
        self.ignored_count += 1
        if self.config.has_client(client):
            self.ignored.setdefault(client, reason)

    def _accepted_this_stage(self, client: int) -> bool:
        done: dict[ServerState, Container[int]] = {
            ServerState.COLLECT_ADVERTISE: self._adverts,
            ServerState.COLLECT_SHARES: self._shared,
            ServerState.COLLECT_MASKED: self._masked,
            ServerState.COLLECT_CONSISTENCY: self._signatures,
            ServerState.COLLECT_UNMASK: self._responded,
        }
        return client in done.get(self.state, ())

    def _check(self, m: Message, sender: int) -> None:
        """Freshness first (ignore), then attribution (the sender's fault)."""
        cfg = self.config
        accepts = server_accepts(self.state)
        if accepts is None:
            raise _Ignore(f"no message is expected in state {self.state.value}")
        if not cfg.has_client(sender) or sender not in self._expected:
            raise _Ignore("transport sender is not a live client at this stage")
        if m.session_id != cfg.session_id or m.round_index != cfg.round_index:
            raise _Ignore("replayed message from another session or round")
        if type(m).__name__ != accepts.value:
            raise _Ignore(f"{type(m).__name__} arrived while collecting {accepts.value}")
        if self._accepted_this_stage(sender):
            raise _Ignore(f"duplicate {type(m).__name__}; the first one stands")
        if not m.FROM_CLIENT or m.sender != sender or m.recipient != SERVER_ID:
            raise _Reject(
                f"{type(m).__name__} from the channel of {sender} names sender {m.sender} "
                f"and recipient {m.recipient}"
            )

    def _accept(self, m: Message) -> None:
        u = m.sender
        cfg = self.config
        if isinstance(m, AdvertiseKeys):
            keys.verify(
                cfg.identity_public(u),
                m.signature,
                advertise_transcript(cfg, u, m.cipher_pk, m.mask_pk),
            )
            # a low-order or reused key would make every honest neighbour refuse the round
            if m.cipher_pk == m.mask_pk or {m.cipher_pk, m.mask_pk} & self._advertised_keys:
                raise _Reject("advertised public keys are reused")
            keys.exchange(_LOW_ORDER_PROBE, m.cipher_pk)
            keys.exchange(_LOW_ORDER_PROBE, m.mask_pk)
            self._advertised_keys.update((m.cipher_pk, m.mask_pk))
            self._adverts[u] = m
        elif isinstance(m, ShareKeys):
            want = set(self.graph[u]) & self.u1
            got = [v for v, _ in m.ciphertexts]
            if len(got) != len(set(got)) or set(got) != want:
                raise _Reject("share ciphertexts are not addressed to exactly the live neighbours")
            for v, ct in m.ciphertexts:
                self._ciphertexts.setdefault(v, {})[u] = ct
            self._shared.add(u)
        elif isinstance(m, MaskedInput):
            values = m.values
            if (
                m.bits != cfg.bits
                or not isinstance(values, np.ndarray)
                or values.shape != (cfg.dimension,)
                or values.dtype != self.word
            ):
                raise _Reject("masked input has the wrong bits, shape or dtype")
            if cfg.bits < 8 * self.word.itemsize and int(values.max()) >> cfg.bits:
                raise _Reject(f"a masked value is not below 2^{cfg.bits}")
            np.add(self._sum, values, out=self._sum)
            self._masked.add(u)
        elif isinstance(m, ConsistencyCheck):
            keys.verify(
                cfg.identity_public(u),
                m.signature,
                consistency_transcript(
                    cfg,
                    u,
                    self._adverts[u].cipher_pk,
                    self._adverts[u].mask_pk,
                    self._u3_list,
                    packed=self._u3_packed,
                ),
            )
            self._signatures[u] = m.signature
        elif isinstance(m, UnmaskResponse):
            asked = self._requested.get(u, set())
            pairs = [(v, kind) for v, kind, _ in m.shares]
            if len(set(pairs)) != len(pairs) or not set(pairs) <= asked:
                raise _Reject("unmask response contains shares that were not requested")
            if any(len(share) != shamir.SHARE_BYTES for _, _, share in m.shares):
                raise _Reject("a share has the wrong length")
            for v, kind, share in m.shares:
                self._shares.setdefault((v, kind), {})[u] = share
            self._responded.add(u)
        else:  # pragma: no cover - _check admits only client messages of this stage
            raise _Reject(f"unexpected {type(m).__name__}")

    # ------------------------------------------------------------------ stage closure
    def _fail(self, reason: str) -> AbortError:
        self.state = server_next(self.state, ServerEvent.ABORT)
        return AbortError(reason)

    def _floor(self, live: Iterable[int], stage: str) -> frozenset[int]:
        live = frozenset(live)
        need = self.config.effective_min_cohort
        if len(live) < need:
            raise self._fail(f"{stage}: {len(live)} live clients, need at least {need}")
        return live

    def _prune(self, live: frozenset[int], stage: str) -> frozenset[int]:
        """Drop clients with < t live neighbours until none is left (they would refuse)."""
        t = self.config.threshold
        live_set = set(live)
        changed = True
        while changed:
            changed = False
            for u in sorted(live_set):
                if sum(1 for v in self.graph[u] if v in live_set) < t:
                    live_set.discard(u)
                    self.pruned[u] = f"{stage}: fewer than t live neighbours"
                    changed = True
        return frozenset(live_set)

    def close_stage(self) -> dict[int, Message]:
        """End the current stage; returns the next stage's message per live client."""
        nxt = server_next(self.state, ServerEvent.CLOSE_STAGE)  # LocalProtocolError if done
        cfg = self.config
        sid, rnd = cfg.session_id, cfg.round_index
        if self.state is ServerState.COLLECT_ADVERTISE:
            got = frozenset(self._adverts)
            self.u1 = self._floor(self._prune(got, "advertise"), "advertise")
            self.dropped[Stage.ADVERTISE_KEYS] = frozenset(cfg.client_ids) - self.u1
            self._expected = set(self.u1)
            self.state = nxt
            out: dict[int, Message] = {}
            for u in sorted(self.u1):
                peers = tuple(
                    PeerKeys(v, a.cipher_pk, a.mask_pk, a.signature)
                    for v in self.graph[u]
                    if v in self.u1
                    for a in (self._adverts[v],)
                )
                out[u] = ShareKeysRequest(
                    sid, rnd, SERVER_ID, u, threshold=cfg.threshold, peers=peers
                )
            return out
        if self.state is ServerState.COLLECT_SHARES:
            got = frozenset(self._shared)
            self.u2 = self._floor(self._prune(got, "share keys"), "share keys")
            self.dropped[Stage.SHARE_KEYS] = self.u1 - self.u2
            self._expected = set(self.u2)
            self.state = nxt
            out = {}
            for u in sorted(self.u2):
                inbox = self._ciphertexts.get(u, {})
                cts = tuple((v, inbox[v]) for v in sorted(inbox) if v in self.u2)
                out[u] = MaskedInputRequest(sid, rnd, SERVER_ID, u, ciphertexts=cts)
            return out
        if self.state is ServerState.COLLECT_MASKED:
            self.u3 = self._floor(self._masked, "masked input")
            self.dropped[Stage.MASKED_INPUT] = self.u2 - self.u3
            t = cfg.threshold
            for v in sorted(self.u2):
                live = sum(1 for w in self.graph[v] if w in self.u3)
                if live < t:
                    raise self._fail(
                        f"masked input: client {v} has {live} surviving neighbours, need {t}"
                    )
            self._expected = set(self.u3)
            self.state = nxt
            survivors = tuple(sorted(self.u3))
            self._u3_list, self._u3_packed = survivors, pack_ids(survivors)
            return {
                u: ConsistencyRequest(sid, rnd, SERVER_ID, u, survivors=survivors)
                for u in survivors
            }
        if self.state is ServerState.COLLECT_CONSISTENCY:
            self.u4 = self._floor(self._signatures, "consistency check")
            self.dropped[Stage.CONSISTENCY_CHECK] = self.u3 - self.u4
            t = cfg.threshold
            askable = {u for u in self.u4 if sum(1 for v in self.graph[u] if v in self.u4) >= t}
            for u in sorted(self.u4 - askable):
                self.pruned[u] = "consistency check: fewer than t signing neighbours"
            dead = self.u2 - self.u3
            for v in sorted(self.u2):
                live = sum(1 for w in self.graph[v] if w in askable)
                if live < t:
                    raise self._fail(
                        f"consistency check: client {v} has {live} responders, need {t}"
                    )
            self._expected = set(askable)
            self.state = nxt
            out = {}
            for u in sorted(askable):
                nb = self.graph[u]
                sigs = tuple((v, self._signatures[v]) for v in nb if v in self.u4)
                alive = tuple(v for v in nb if v in self.u3)
                gone = tuple(v for v in nb if v in dead)
                self._requested[u] = {(v, ShareKind.SELF_MASK_SEED) for v in alive} | {
                    (v, ShareKind.MASK_KEY) for v in gone
                }
                out[u] = UnmaskRequest(
                    sid, rnd, SERVER_ID, u, signatures=sigs, alive=alive, dead=gone
                )
            return out
        if self.state is ServerState.COLLECT_UNMASK:
            self.u5 = self._floor(self._responded, "unmask")
            self.dropped[Stage.UNMASK] = self.u4 - self.u5
            self.result = self._unmask()
            self.state = nxt
            return {}
        raise LocalProtocolError(f"close_stage called in state {self.state.value}")  # unreachable

    # ------------------------------------------------------------------ unmasking
    def _recover(self, v: int, kind: ShareKind) -> bytes:
        """Robust reconstruction (spec §8.1): with s shares, up to ⌊(s − t)/2⌋ wrong ones are
        corrected and their holders blamed; more → abort, never a wrong secret."""
        shares = self._shares.get((v, kind), {})
        try:
            got = shamir.reconstruct_robust(shares, self.config.threshold)
        except SecureFLError as exc:
            raise self._fail(f"unmask: cannot recover the {kind.name} of {v}: {exc}") from None
        if len(shares) == self.config.threshold:
            self.unchecked.add((v, kind))
        for holder in sorted(got.inconsistent):
            self.blamed.setdefault(
                holder,
                f"unmask: its {kind.name} share of {v} is off the polynomial of the other "
                f"{len(shares) - 1} shares (corrected; client {holder} or dealer {v} is faulty)",
            )
        return got.secret

    def _unmask(self) -> npt.NDArray[Any]:
        cfg = self.config
        pairs: list[tuple[bytes, int]] = []
        for w in sorted(self.u3):
            seed = self._recover(w, ShareKind.SELF_MASK_SEED)
            pairs.append((self_mask_key(cfg, seed, w), -1))
        for v in sorted(self.u2 - self.u3):
            raw = self._recover(v, ShareKind.MASK_KEY)
            try:
                sk = keys.x25519_private_from_bytes(raw)
            except SecureFLError as exc:
                raise self._fail(f"unmask: mask key of {v} is invalid: {exc}") from None
            if keys.x25519_public_bytes(sk) != self._adverts[v].mask_pk:
                raise self._fail(f"unmask: shares of {v} do not give its advertised mask key")
            for w in self.graph[v]:
                if w in self.u3:
                    secret = keys.exchange(sk, self._adverts[w].mask_pk)
                    pairs.append((pairwise_mask_key(cfg, secret, w, v), -mask_sign(w, v)))
        total = self._sum
        prg.add_masks(total, pairs, bits=cfg.bits)  # also reduces mod 2^b
        return total

    @property
    def survivors(self) -> frozenset[int]:
        """Clients whose inputs are in the sum (U3), once the round is done."""
        return self.u3 if self.state is ServerState.DONE else frozenset()
