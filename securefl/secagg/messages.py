"""SecAgg(+) messages and their versioned binary wire format (spec ``protocols/secagg.md`` §5).

One message type per direction and stage of Bonawitz et al. 2017, Fig. 4 (malicious-server
variant). Every message carries a fixed 56-byte header — magic, version, type, stage, session
id, round, sender, recipient, body length — then a body of fixed-width or length-prefixed
fields, little-endian. :func:`decode` validates everything before building an object: exact
lengths, counts within limits, ids in range, lists strictly increasing (so no duplicates and
exactly one encoding per value), reserved bytes zero, masked values below 2^b, and, when a
config is given, ids in the cohort and dimension/bits equal to the config. Anything else is a
:class:`~securefl.errors.MalformedMessageError`; a parser exception never escapes.

The dataclasses themselves accept any values (tests forge malicious messages with them); the
state machines re-check every semantic rule on the objects they receive.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

from securefl.errors import MalformedMessageError
from securefl.secagg.config import MAX_CLIENT_ID, MAX_DIMENSION, SecAggConfig
from securefl.vocabulary import MAX_CLIENTS

MAGIC = b"SFSA"
WIRE_VERSION = 1
SERVER_ID = 0
HEADER = struct.Struct("<4sBBBB32sIIII")
HEADER_BYTES = HEADER.size  # 56
KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: Largest AES-GCM share ciphertext accepted (the honest one is 4+4+33+33+16 = 90 bytes).
MAX_CIPHERTEXT_BYTES = 256
#: Largest Shamir share accepted (the honest one is 33 bytes).
MAX_SHARE_BYTES = 64
MAX_MESSAGE_BYTES = HEADER_BYTES + 16 + 8 * MAX_DIMENSION

Ids: TypeAlias = tuple[int, ...]


class Stage(IntEnum):
    """Protocol stages (Bonawitz et al. 2017, Fig. 4 rounds 0–4)."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASK = 4


class MessageType(IntEnum):
    ADVERTISE_KEYS = 1
    SHARE_KEYS_REQUEST = 2
    SHARE_KEYS = 3
    MASKED_INPUT_REQUEST = 4
    MASKED_INPUT = 5
    CONSISTENCY_REQUEST = 6
    CONSISTENCY_CHECK = 7
    UNMASK_REQUEST = 8
    UNMASK_RESPONSE = 9


class ShareKind(IntEnum):
    """Which Shamir share an unmask response reveals for a peer."""

    SELF_MASK_SEED = 0  # b_{v,u}: peer v survived (its input is in the sum)
    MASK_KEY = 1  # s^SK_{v,u}: peer v dropped after sharing (its pairwise masks must go)


@dataclass(frozen=True)
class Message:
    """Header fields common to every message."""

    session_id: bytes
    round_index: int
    sender: int
    recipient: int

    TYPE: ClassVar[MessageType]
    STAGE: ClassVar[Stage]
    FROM_CLIENT: ClassVar[bool]

    def encode(self) -> bytes:
        body = self._body()
        header = HEADER.pack(
            MAGIC,
            WIRE_VERSION,
            int(self.TYPE),
            int(self.STAGE),
            0,
            self.session_id,
            self.round_index,
            self.sender,
            self.recipient,
            len(body),
        )
        return header + body

    def _body(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class PeerKeys:
    """One client's signed key advertisement as relayed by the server."""

    client_id: int
    cipher_pk: bytes  # c_v^PK: X25519, share encryption
    mask_pk: bytes  # s_v^PK: X25519, pairwise masks
    signature: bytes  # Ed25519 under the client's identity key


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 0, client → server: ephemeral public keys signed with the identity key."""

    cipher_pk: bytes
    mask_pk: bytes
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS
    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        return self.cipher_pk + self.mask_pk + self.signature


@dataclass(frozen=True)
class ShareKeysRequest(Message):
    """Round 1, server → client: the advertisements of the recipient's live neighbours (U1)."""

    threshold: int
    peers: tuple[PeerKeys, ...]
    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS_REQUEST
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        parts = [struct.pack("<II", self.threshold, len(self.peers))]
        for p in self.peers:
            parts.append(struct.pack("<I", p.client_id) + p.cipher_pk + p.mask_pk + p.signature)
        return b"".join(parts)


@dataclass(frozen=True)
class ShareKeys(Message):
    """Round 1, client → server: AES-GCM share ciphertexts, one per neighbour (routed)."""

    ciphertexts: tuple[tuple[int, bytes], ...]  # (recipient v, e_{u,v})
    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        return _pack_ciphertexts(self.ciphertexts)


@dataclass(frozen=True)
class MaskedInputRequest(Message):
    """Round 2, server → client: the ciphertexts addressed to it by neighbours in U2."""

    ciphertexts: tuple[tuple[int, bytes], ...]  # (sender v, e_{v,u})
    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT_REQUEST
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        return _pack_ciphertexts(self.ciphertexts)


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Round 2, client → server: y_u mod 2^b, 4 bytes per parameter for b ≤ 32 (else 8)."""

    bits: int
    values: npt.NDArray[Any]
    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    FROM_CLIENT: ClassVar[bool] = True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedInput):
            return NotImplemented
        return (
            (self.session_id, self.round_index, self.sender, self.recipient, self.bits)
            == (other.session_id, other.round_index, other.sender, other.recipient, other.bits)
            and self.values.shape == other.values.shape
            and bool(np.array_equal(self.values, other.values))
        )

    __hash__ = None  # type: ignore[assignment]

    def _body(self) -> bytes:
        word = _word_dtype(self.bits)
        head = struct.pack("<IBB10x", self.values.shape[0], self.bits, word.itemsize)
        return head + np.ascontiguousarray(self.values, dtype=word).tobytes()


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Round 3, server → client: the survivor set U3 whose masked inputs the server holds."""

    survivors: Ids
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_REQUEST
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        return _pack_ids(self.survivors)


@dataclass(frozen=True)
class ConsistencyCheck(Message):
    """Round 3, client → server: Ed25519 signature over (session, round, U3)."""

    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_CHECK
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        return self.signature


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Round 4, server → client: neighbours' U3 signatures, then alive and dead neighbour lists."""

    signatures: tuple[tuple[int, bytes], ...]
    alive: Ids
    dead: Ids
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_REQUEST
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        parts = [struct.pack("<I", len(self.signatures))]
        parts.extend(struct.pack("<I", v) + sig for v, sig in self.signatures)
        return b"".join(parts) + _pack_ids(self.alive) + _pack_ids(self.dead)


@dataclass(frozen=True)
class UnmaskResponse(Message):
    """Round 4, client → server: one Shamir share per listed neighbour."""

    shares: tuple[tuple[int, ShareKind, bytes], ...]  # (peer v, kind, share)
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_RESPONSE
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        parts = [struct.pack("<I", len(self.shares))]
        for v, kind, share in self.shares:
            parts.append(struct.pack("<IBH", v, int(kind), len(share)) + share)
        return b"".join(parts)


MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        AdvertiseKeys,
        ShareKeysRequest,
        ShareKeys,
        MaskedInputRequest,
        MaskedInput,
        ConsistencyRequest,
        ConsistencyCheck,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def _word_dtype(bits: int) -> np.dtype[Any]:
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def _pack_ids(ids: Ids) -> bytes:
    return struct.pack(f"<I{len(ids)}I", len(ids), *ids)


def _pack_ciphertexts(items: tuple[tuple[int, bytes], ...]) -> bytes:
    parts = [struct.pack("<I", len(items))]
    parts.extend(struct.pack("<IH", v, len(ct)) + ct for v, ct in items)
    return b"".join(parts)


# --------------------------------------------------------------------------- decoding


class _Reader:
    """Bounds-checked cursor: every read states what it reads, for the error message."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data = data
        self.pos = start
        self.end = end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise MalformedMessageError(
                f"truncated: {what} needs {n} bytes, {self.end - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def count(self, what: str, entry_min: int, limit: int) -> int:
        n = self.u32(f"{what} count")
        if n > limit:
            raise MalformedMessageError(f"{what} count {n} exceeds the limit {limit}")
        if n * entry_min > self.end - self.pos:
            raise MalformedMessageError(f"{what} count {n} does not fit in the body")
        return n

    def client_id(self, what: str, ctx: _Ctx) -> int:
        v = self.u32(what)
        ctx.check_id(v, what)
        return v

    def done(self) -> None:
        if self.pos != self.end:
            raise MalformedMessageError(f"{self.end - self.pos} trailing bytes after the body")


@dataclass(frozen=True)
class _Ctx:
    config: SecAggConfig | None

    @property
    def max_entries(self) -> int:
        return MAX_CLIENTS if self.config is None else self.config.n

    def check_id(self, v: int, what: str) -> None:
        if not 1 <= v <= MAX_CLIENT_ID:
            raise MalformedMessageError(f"{what} {v} is not a client id")
        if self.config is not None and not self.config.has_client(v):
            raise MalformedMessageError(f"{what} {v} is not in the cohort")


def _increasing(ids: list[int], what: str) -> None:
    for a, b in itertools.pairwise(ids):
        if b <= a:
            raise MalformedMessageError(f"{what} must be strictly increasing (saw {a} then {b})")


def _read_ids(r: _Reader, what: str, ctx: _Ctx) -> Ids:
    """A counted list of ids, checked in bulk (U3 lists have n entries for n clients)."""
    n = r.count(what, 4, ctx.max_entries)
    raw = r.take(4 * n, f"{what} entries")
    ids = struct.unpack(f"<{n}I", raw)
    if n:
        if ids[0] < 1 or max(ids) > MAX_CLIENT_ID:
            raise MalformedMessageError(f"{what} entry is not a client id")
        if any(b <= a for a, b in itertools.pairwise(ids)):
            raise MalformedMessageError(f"{what} must be strictly increasing")
        if ctx.config is not None and not ctx.config.id_set.issuperset(ids):
            raise MalformedMessageError(f"{what} entry is not in the cohort")
    return ids


def _read_ciphertexts(r: _Reader, what: str, ctx: _Ctx) -> tuple[tuple[int, bytes], ...]:
    n = r.count(what, 6, ctx.max_entries)
    out: list[tuple[int, bytes]] = []
    for _ in range(n):
        v = r.client_id(f"{what} peer id", ctx)
        size = r.u16(f"{what} ciphertext length")
        if size > MAX_CIPHERTEXT_BYTES:
            raise MalformedMessageError(
                f"{what} ciphertext of {size} bytes exceeds {MAX_CIPHERTEXT_BYTES}"
            )
        out.append((v, r.take(size, f"{what} ciphertext")))
    _increasing([v for v, _ in out], f"{what} peer ids")
    return tuple(out)


def decode(data: bytes, *, config: SecAggConfig | None = None) -> Message:
    """Parse and validate one message; anything invalid → :class:`MalformedMessageError`.

    With ``config`` the ids must belong to the cohort, counts are limited by n, and a masked
    input must have exactly ``config.dimension`` values of ``config.bits`` bits.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessageError(f"a message must be bytes, not {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    limit = MAX_MESSAGE_BYTES if config is None else max_message_bytes(config)
    if size > limit:  # before copying anything
        raise MalformedMessageError(f"message of {size} bytes exceeds {limit}")
    try:
        return _decode(bytes(data), _Ctx(config))
    except MalformedMessageError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, struct.error, OverflowError) as exc:
        raise MalformedMessageError(f"unparseable message ({type(exc).__name__})") from exc


def max_message_bytes(config: SecAggConfig) -> int:
    """Largest valid message of a round: the masked input or an n-entry list (spec §10)."""
    per_entry = 4 + 2 + MAX_CIPHERTEXT_BYTES + 2 * KEY_BYTES + SIGNATURE_BYTES
    return HEADER_BYTES + 16 + max(config.dimension * config.word_bytes, config.n * per_entry)


def _decode(data: bytes, ctx: _Ctx) -> Message:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if len(data) < HEADER_BYTES:
        raise MalformedMessageError(f"message of {len(data)} bytes is shorter than the header")
    magic, version, mtype, stage, flags, session, round_index, sender, recipient, length = (
        HEADER.unpack_from(data, 0)
    )
    if magic != MAGIC:
        raise MalformedMessageError("bad magic (not a securefl SecAgg message)")
    if version != WIRE_VERSION:
        raise MalformedMessageError(f"unsupported wire version {version}")
    if mtype not in MESSAGE_CLASSES:
        raise MalformedMessageError(f"unknown message type {mtype}")
    cls = MESSAGE_CLASSES[MessageType(mtype)]
    if stage != cls.STAGE:
        raise MalformedMessageError(f"stage {stage} does not match message type {cls.__name__}")
    if flags != 0:
        raise MalformedMessageError("reserved header byte is not zero")
    if length != len(data) - HEADER_BYTES:
        raise MalformedMessageError(
            f"body length field {length} but {len(data) - HEADER_BYTES} body bytes"
        )
    client, server = (sender, recipient) if cls.FROM_CLIENT else (recipient, sender)
    if server != SERVER_ID:
        raise MalformedMessageError(f"{cls.__name__} must be addressed between client and server")
    ctx.check_id(client, "client id in header")
    head: dict[str, Any] = {
        "session_id": session,
        "round_index": round_index,
        "sender": sender,
        "recipient": recipient,
    }
    r = _Reader(data, HEADER_BYTES, len(data))
    msg = _BODY_READERS[cls.TYPE](r, ctx, head)
    r.done()
    return msg


def _r_advertise(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    return AdvertiseKeys(
        **head,
        cipher_pk=r.take(KEY_BYTES, "cipher public key"),
        mask_pk=r.take(KEY_BYTES, "mask public key"),
        signature=r.take(SIGNATURE_BYTES, "signature"),
    )


def _r_share_request(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    threshold = r.u32("threshold")
    if not 1 <= threshold <= ctx.max_entries:
        raise MalformedMessageError(f"threshold {threshold} out of range")
    n = r.count("peer keys", 4 + 2 * KEY_BYTES + SIGNATURE_BYTES, ctx.max_entries)
    peers = []
    for _ in range(n):
        v = r.client_id("peer id", ctx)
        peers.append(
            PeerKeys(
                v,
                r.take(KEY_BYTES, "cipher public key"),
                r.take(KEY_BYTES, "mask public key"),
                r.take(SIGNATURE_BYTES, "signature"),
            )
        )
    _increasing([p.client_id for p in peers], "peer ids")
    return ShareKeysRequest(**head, threshold=threshold, peers=tuple(peers))


def _r_share_keys(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    return ShareKeys(**head, ciphertexts=_read_ciphertexts(r, "share", ctx))


def _r_masked_request(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    return MaskedInputRequest(**head, ciphertexts=_read_ciphertexts(r, "share", ctx))


def _r_masked_input(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    dimension = r.u32("dimension")
    bits = r.u8("bits")
    word = r.u8("word size")
    if r.take(10, "reserved") != bytes(10):
        raise MalformedMessageError("reserved masked-input bytes are not zero")
    if not 1 <= bits <= 64:
        raise MalformedMessageError(f"bits {bits} out of range 1..64")
    dtype = _word_dtype(bits)
    if word != dtype.itemsize:
        raise MalformedMessageError(f"word size {word} but {bits}-bit values use {dtype.itemsize}")
    if not 1 <= dimension <= MAX_DIMENSION:
        raise MalformedMessageError(f"dimension {dimension} out of range 1..{MAX_DIMENSION}")
    cfg = ctx.config
    if cfg is not None and (dimension != cfg.dimension or bits != cfg.bits):
        raise MalformedMessageError(
            f"masked input has d={dimension}, b={bits}; the round has d={cfg.dimension}, "
            f"b={cfg.bits}"
        )
    if r.end - r.pos != dimension * word:
        raise MalformedMessageError(
            f"masked input body has {r.end - r.pos} bytes, expected {dimension * word}"
        )
    values = np.frombuffer(r.data, dtype=dtype, count=dimension, offset=r.pos)
    r.pos = r.end
    if bits < 8 * word and int(values.max()) >> bits:
        raise MalformedMessageError(f"a masked value is not below 2^{bits}")
    return MaskedInput(**head, bits=bits, values=values)


def _r_consistency_request(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    return ConsistencyRequest(**head, survivors=_read_ids(r, "survivors", ctx))


def _r_consistency(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    return ConsistencyCheck(**head, signature=r.take(SIGNATURE_BYTES, "signature"))


def _r_unmask_request(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    n = r.count("signatures", 4 + SIGNATURE_BYTES, ctx.max_entries)
    sigs = []
    for _ in range(n):
        v = r.client_id("signer id", ctx)
        sigs.append((v, r.take(SIGNATURE_BYTES, "signature")))
    _increasing([v for v, _ in sigs], "signer ids")
    alive = _read_ids(r, "alive list", ctx)
    dead = _read_ids(r, "dead list", ctx)
    return UnmaskRequest(**head, signatures=tuple(sigs), alive=alive, dead=dead)


def _r_unmask_response(r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
    n = r.count("shares", 7, ctx.max_entries)
    shares = []
    for _ in range(n):
        v = r.client_id("share peer id", ctx)
        kind = r.u8("share kind")
        if kind not in (0, 1):
            raise MalformedMessageError(f"unknown share kind {kind}")
        size = r.u16("share length")
        if size > MAX_SHARE_BYTES:
            raise MalformedMessageError(f"share of {size} bytes exceeds {MAX_SHARE_BYTES}")
        shares.append((v, ShareKind(kind), r.take(size, "share")))
    _increasing([v for v, _, _ in shares], "share peer ids")
    return UnmaskResponse(**head, shares=tuple(shares))


_BODY_READERS = {
    MessageType.ADVERTISE_KEYS: _r_advertise,
    MessageType.SHARE_KEYS_REQUEST: _r_share_request,
    MessageType.SHARE_KEYS: _r_share_keys,
    MessageType.MASKED_INPUT_REQUEST: _r_masked_request,
    MessageType.MASKED_INPUT: _r_masked_input,
    MessageType.CONSISTENCY_REQUEST: _r_consistency_request,
    MessageType.CONSISTENCY_CHECK: _r_consistency,
    MessageType.UNMASK_REQUEST: _r_unmask_request,
    MessageType.UNMASK_RESPONSE: _r_unmask_response,
}


def advertise_transcript(
    config: SecAggConfig, client_id: int, cipher_pk: bytes, mask_pk: bytes
) -> bytes:
    """Bytes signed in round 0: label, session id, round, client id, both public keys."""
    return (
        b"securefl/secagg/v1/advertise\x00"
        + config.session_id
        + struct.pack("<II", config.round_index, client_id)
        + cipher_pk
        + mask_pk
    )


def consistency_transcript(
    config: SecAggConfig,
    client_id: int,
    cipher_pk: bytes,
    mask_pk: bytes,
    survivors: Ids,
    *,
    packed: bytes | None = None,
) -> bytes:
    """Bytes signed in round 3: label, session id, round, signer id, the signer's *ephemeral*
    public keys of this attempt, then U3.

    The ephemeral keys make a signature unusable in any other run, even one that reuses the
    session id (a server re-running a round with the same config cannot replay last attempt's
    confirmations of a survivor set). ``packed`` may carry ``LE32(|U3|) || LE32(ids)``
    already computed for ``survivors``.
    """
    return (
        b"securefl/secagg/v1/consistency\x00"
        + config.session_id
        + struct.pack("<II", config.round_index, client_id)
        + cipher_pk
        + mask_pk
        + (_pack_ids(survivors) if packed is None else packed)
    )


def pack_ids(ids: Ids) -> bytes:
    """``LE32(count) || LE32(id)…`` as used in bodies and transcripts."""
    return _pack_ids(ids)
