"""SecAgg(+) messages and their versioned binary wire format (spec ``protocols/secagg.md`` §5).

One message type per direction and stage of Bonawitz et al. 2017, Fig. 4 (malicious-server
variant). Every message carries a fixed 56-byte header — magic, version, type, stage, session
id, round, sender, recipient, body length — then a body of fixed-width or length-prefixed
fields, little-endian. :func:`decode` validates everything before building an object: exact
lengths, counts within limits, ids in range, lists strictly increasing (so no duplicates and
exactly one encoding per value), reserved bytes zero, masked values packed at b bits with zero
pad bits (so each is below 2^b), and, when a config is given, ids in the cohort and
dimension/bits equal to the config. Anything else is a
:class:`~securefl.errors.MalformedMessageError`; a parser exception never escapes.

Lists are fixed-width records (a list of ciphertexts or shares has one length for all its
entries), so every check runs on numpy views of the buffer, never per entry in Python; the
entries themselves are built on first access (:class:`Records`), so decoding a maximal
message costs milliseconds whatever its 2^20 entries (issue 12, hole 8).

Each message class holds its body's encoder (``_body``) and decoder (``_read``) one after the
other, so the two can be compared line by line; the header's writer (:meth:`Message.encode`)
and reader (:func:`_decode`) stand together the same way, and so do each list shape's writer
and reader.

The dataclasses themselves accept any values (tests forge malicious messages with them); the
state machines re-check every semantic rule on the objects they receive.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar, overload

import numpy as np
import numpy.typing as npt

from securefl.encoding.packing import pack_bits, packed_size, unpack_bits
from securefl.errors import MalformedMessageError
from securefl.secagg.config import MAX_CLIENT_ID, MAX_DIMENSION, SecAggConfig
from securefl.vocabulary import MAX_CLIENTS

MAGIC = b"SFSA"
#: 2: masked inputs are bit-packed at the ring width b (``ceil(d·b/8)`` bytes, §5); a
#: version-1 message (one 32/64-bit word per value) is rejected as an unsupported version.
WIRE_VERSION = 2
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

Ids: TypeAlias = Sequence[int]
_T = TypeVar("_T")


class Stage(IntEnum):
    """Protocol stages (Bonawitz et al. 2017, Fig. 4 rounds 0–4)."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASK = 4

    @property
    def label(self) -> str:
        """The stage's name off the wire (``"masked_input"``): dropout plans, transcripts,
        timings and the fl layer all spell stages this way."""
        return self.name.lower()


#: Every stage's :attr:`Stage.label`, in protocol order: the one list of stage names.
STAGE_LABELS: tuple[str, ...] = tuple(stage.label for stage in Stage)


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


_KINDS = (ShareKind.SELF_MASK_SEED, ShareKind.MASK_KEY)


# ------------------------------------------------------- building blocks: each writer by its reader


class _Reader:
    """Bounds-checked cursor: every read states what it reads, for the error message."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data = data
        self.pos = start
        self.end = end

    def skip(self, n: int, what: str) -> int:
        """Bounds-check ``n`` bytes, advance past them, return where they start (no copy)."""
        if n < 0 or self.pos + n > self.end:
            raise MalformedMessageError(
                f"truncated: {what} needs {n} bytes, {self.end - self.pos} left"
            )
        self.pos += n
        return self.pos - n

    def take(self, n: int, what: str) -> bytes:
        start = self.skip(n, what)
        return self.data[start : start + n]

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


class Records(Sequence[_T], Generic[_T]):
    """A decoded list, validated in bulk; its entries are built on first access.

    Compares and hashes like the tuple of its entries, so decoded messages equal the
    messages that were encoded.
    """

    __slots__ = ("_build", "_items", "_n")

    def __init__(self, n: int, build: Callable[[], tuple[_T, ...]]) -> None:
        self._n = n
        self._build: Callable[[], tuple[_T, ...]] | None = build
        self._items: tuple[_T, ...] | None = None

    def _all(self) -> tuple[_T, ...]:
        if self._items is None:
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...
    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[_T]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple | Records):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def _check_ids(ids: npt.NDArray[np.uint32], what: str, ctx: _Ctx, *, ordered: bool) -> None:
    """Vectorised id checks: client ids, strictly increasing (if ``ordered``), in the cohort."""
    if ids.size == 0:
        return
    ids = np.ascontiguousarray(ids)  # one pass over the strided records, then 4 bytes each
    bad = (ids < 1) | (ids > MAX_CLIENT_ID)
    if bad.any():
        raise MalformedMessageError(f"{what} {int(ids[int(bad.argmax())])} is not a client id")
    if ordered:
        down = ids[1:] <= ids[:-1]
        if down.any():
            i = int(down.argmax())
            raise MalformedMessageError(
                f"{what} must be strictly increasing (saw {int(ids[i])} then {int(ids[i + 1])})"
            )
    if ctx.config is not None:
        cohort = ctx.config.id_array
        pos = np.minimum(np.searchsorted(cohort, ids), cohort.size - 1)
        out = cohort[pos] != ids
        if out.any():
            raise MalformedMessageError(
                f"{what} {int(ids[int(out.argmax())])} is not in the cohort"
            )


def _records(
    r: _Reader, n: int, stride: int, fields: dict[str, tuple[str, int]], what: str
) -> npt.NDArray[Any]:
    """``n`` fixed-width records of ``stride`` bytes as a structured numpy view."""
    start = r.skip(n * stride, f"{what} entries")
    dtype = np.dtype(
        {
            "names": list(fields),
            "formats": [f for f, _ in fields.values()],
            "offsets": [o for _, o in fields.values()],
            "itemsize": stride,
        }
    )
    return np.frombuffer(r.data, dtype=dtype, count=n, offset=start)


def _slices(data: bytes, start: int, n: int, stride: int, size: int) -> list[bytes]:
    return [data[o : o + size] for o in range(start, start + n * stride, stride)]


def _pairs(
    ids: npt.NDArray[Any], data: bytes, start: int, stride: int, size: int
) -> Callable[[], tuple[tuple[int, bytes], ...]]:
    """Builder of ``(id, bytes)`` entries: ``size`` bytes at ``start + i·stride``."""
    n = ids.size
    return lambda: tuple(zip(ids.tolist(), _slices(data, start, n, stride, size), strict=True))


def _same_length_list(
    r: _Reader, n: int, head: int, limit: int, what: str
) -> tuple[int, int, npt.NDArray[Any]]:
    """(length, start, records) of ``n`` entries ``id:u32 [kind:u8] len:u16 bytes[len]`` that
    all carry the same ``len`` (the canonical form: honest lists are uniform)."""
    start = r.pos
    if n == 0:
        return 0, start, _records(r, 0, head, {"id": ("<u4", 0)}, what)
    if r.end - r.pos < head:
        raise MalformedMessageError(f"truncated: {what} entry needs {head} bytes")
    size = int.from_bytes(r.data[r.pos + head - 2 : r.pos + head], "little")
    if size > limit:
        raise MalformedMessageError(f"{what} of {size} bytes exceeds {limit}")
    fields = {"id": ("<u4", 0), "len": ("<u2", head - 2)}
    if head == 7:
        fields["kind"] = ("u1", 4)
    recs = _records(r, n, head + size, fields, what)
    if (np.ascontiguousarray(recs["len"]) != size).any():
        raise MalformedMessageError(f"{what} lengths differ within one list")
    return size, start, recs


#: Masked-input body head: ``d:u32 b:u8 reserved[11]``, then the packed values.
_MASKED_HEAD = struct.Struct("<IB11x")


def pack_ids(ids: Ids) -> bytes:
    """``LE32(count) || LE32(id)…`` as used in bodies and transcripts."""
    return struct.pack(f"<I{len(ids)}I", len(ids), *ids)


def _read_ids(r: _Reader, what: str, ctx: _Ctx) -> Ids:
    """A counted list of ids (U3 lists have n entries for n clients)."""
    n = r.count(what, 4, ctx.max_entries)
    ids = _records(r, n, 4, {"id": ("<u4", 0)}, what)["id"]
    _check_ids(ids, f"{what} entry", ctx, ordered=True)
    return Records(n, lambda: tuple(ids.tolist()))


# ------------------------------------------------------------------------ header and dispatch


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

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        """Parse and validate the body after a checked header (the inverse of :meth:`_body`)."""
        raise NotImplementedError


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
    msg = cls._read(r, ctx, head)
    r.done()
    return msg


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
    masked = packed_size(config.dimension, config.bits)
    return HEADER_BYTES + _MASKED_HEAD.size + max(masked, config.n * per_entry)


# ------------------------------------------------- one class per message: encoder, then decoder


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

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        return cls(
            **head,
            cipher_pk=r.take(KEY_BYTES, "cipher public key"),
            mask_pk=r.take(KEY_BYTES, "mask public key"),
            signature=r.take(SIGNATURE_BYTES, "signature"),
        )


@dataclass(frozen=True)
class ShareKeysRequest(Message):
    """Round 1, server → client: the advertisements of the recipient's live neighbours (U1)."""

    threshold: int
    peers: Sequence[PeerKeys]
    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS_REQUEST
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        parts = [struct.pack("<II", self.threshold, len(self.peers))]
        for p in self.peers:
            parts.append(struct.pack("<I", p.client_id) + p.cipher_pk + p.mask_pk + p.signature)
        return b"".join(parts)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        threshold = r.u32("threshold")
        if not 1 <= threshold <= ctx.max_entries:
            raise MalformedMessageError(f"threshold {threshold} out of range")
        stride = 4 + 2 * KEY_BYTES + SIGNATURE_BYTES
        n = r.count("peer keys", stride, ctx.max_entries)
        start = r.pos
        ids = np.ascontiguousarray(_records(r, n, stride, {"id": ("<u4", 0)}, "peer keys")["id"])
        _check_ids(ids, "peer id", ctx, ordered=True)
        data = r.data

        def build() -> tuple[PeerKeys, ...]:
            k, sig = KEY_BYTES, SIGNATURE_BYTES
            return tuple(
                PeerKeys(
                    v, data[o : o + k], data[o + k : o + 2 * k], data[o + 2 * k : o + 2 * k + sig]
                )
                for v, o in zip(
                    ids.tolist(), range(start + 4, start + 4 + n * stride, stride), strict=True
                )
            )

        return cls(**head, threshold=threshold, peers=Records(n, build))


@dataclass(frozen=True)
class _CiphertextList(Message):
    """Body of :class:`ShareKeys` and :class:`MaskedInputRequest`: ``LE32(count)`` then
    ``LE32(peer) || LE16(len) || e`` per entry, peers strictly increasing, one ``len`` for all."""

    ciphertexts: Sequence[tuple[int, bytes]]

    def _body(self) -> bytes:
        parts = [struct.pack("<I", len(self.ciphertexts))]
        parts.extend(struct.pack("<IH", v, len(ct)) + ct for v, ct in self.ciphertexts)
        return b"".join(parts)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        n = r.count("share", 6, ctx.max_entries)
        size, start, recs = _same_length_list(r, n, 6, MAX_CIPHERTEXT_BYTES, "share ciphertext")
        ids = np.ascontiguousarray(recs["id"])
        _check_ids(ids, "share peer id", ctx, ordered=True)
        return cls(**head, ciphertexts=Records(n, _pairs(ids, r.data, start + 6, 6 + size, size)))


@dataclass(frozen=True)
class ShareKeys(_CiphertextList):
    """Round 1, client → server: AES-GCM share ciphertexts, one per neighbour (routed);
    ``ciphertexts`` holds ``(recipient v, e_{u,v})``."""

    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    FROM_CLIENT: ClassVar[bool] = True


@dataclass(frozen=True)
class MaskedInputRequest(_CiphertextList):
    """Round 2, server → client: the ciphertexts addressed to it by neighbours in U2;
    ``ciphertexts`` holds ``(sender v, e_{v,u})``."""

    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT_REQUEST
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    FROM_CLIENT: ClassVar[bool] = False


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Round 2, client → server: y_u mod 2^b, bit-packed: ⌈d·b/8⌉ bytes (3 per value at b = 24).

    Values are held as uint32 (b ≤ 32) or uint64 words in memory and sent as the little-endian
    b-bit stream of :mod:`securefl.encoding.packing` (spec §5, wire version 2).
    """

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
        d = self.values.shape[0]
        return _MASKED_HEAD.pack(d, self.bits) + pack_bits(self.values, self.bits)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        dimension = r.u32("dimension")
        bits = r.u8("bits")
        if r.take(11, "reserved") != bytes(11):
            raise MalformedMessageError("reserved masked-input bytes are not zero")
        if not 1 <= bits <= 64:
            raise MalformedMessageError(f"bits {bits} out of range 1..64")
        if not 1 <= dimension <= MAX_DIMENSION:
            raise MalformedMessageError(f"dimension {dimension} out of range 1..{MAX_DIMENSION}")
        cfg = ctx.config
        if cfg is not None and (dimension != cfg.dimension or bits != cfg.bits):
            raise MalformedMessageError(
                f"masked input has d={dimension}, b={bits}; the round has d={cfg.dimension}, "
                f"b={cfg.bits}"
            )
        # exact length and zero pad bits: every b-bit field is then < 2^b by construction
        values = unpack_bits(memoryview(r.data)[: r.end], dimension, bits, offset=r.pos)
        r.pos = r.end
        return cls(**head, bits=bits, values=values)


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Round 3, server → client: the survivor set U3 whose masked inputs the server holds."""

    survivors: Ids
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_REQUEST
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        return pack_ids(self.survivors)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        return cls(**head, survivors=_read_ids(r, "survivors", ctx))


@dataclass(frozen=True)
class ConsistencyCheck(Message):
    """Round 3, client → server: Ed25519 signature over (session, round, U3)."""

    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_CHECK
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        return self.signature

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        return cls(**head, signature=r.take(SIGNATURE_BYTES, "signature"))


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Round 4, server → client: neighbours' U3 signatures, then alive and dead neighbour lists."""

    signatures: Sequence[tuple[int, bytes]]
    alive: Ids
    dead: Ids
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_REQUEST
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FROM_CLIENT: ClassVar[bool] = False

    def _body(self) -> bytes:
        parts = [struct.pack("<I", len(self.signatures))]
        parts.extend(struct.pack("<I", v) + sig for v, sig in self.signatures)
        return b"".join(parts) + pack_ids(self.alive) + pack_ids(self.dead)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        stride = 4 + SIGNATURE_BYTES
        n = r.count("signatures", stride, ctx.max_entries)
        start = r.pos
        ids = np.ascontiguousarray(_records(r, n, stride, {"id": ("<u4", 0)}, "signatures")["id"])
        _check_ids(ids, "signer id", ctx, ordered=True)
        data = r.data
        sigs = Records(n, _pairs(ids, data, start + 4, stride, SIGNATURE_BYTES))
        alive = _read_ids(r, "alive list", ctx)
        dead = _read_ids(r, "dead list", ctx)
        return cls(**head, signatures=sigs, alive=alive, dead=dead)


@dataclass(frozen=True)
class UnmaskResponse(Message):
    """Round 4, client → server: one Shamir share per listed neighbour."""

    shares: Sequence[tuple[int, ShareKind, bytes]]  # (peer v, kind, share)
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_RESPONSE
    STAGE: ClassVar[Stage] = Stage.UNMASK
    FROM_CLIENT: ClassVar[bool] = True

    def _body(self) -> bytes:
        parts = [struct.pack("<I", len(self.shares))]
        for v, kind, share in self.shares:
            parts.append(struct.pack("<IBH", v, int(kind), len(share)) + share)
        return b"".join(parts)

    @classmethod
    def _read(cls, r: _Reader, ctx: _Ctx, head: dict[str, Any]) -> Message:
        n = r.count("shares", 7, ctx.max_entries)
        size, start, recs = _same_length_list(r, n, 7, MAX_SHARE_BYTES, "share")
        ids = np.ascontiguousarray(recs["id"])
        _check_ids(ids, "share peer id", ctx, ordered=True)
        kinds = np.ascontiguousarray(recs["kind"]) if n else np.zeros(0, dtype=np.uint8)
        if (kinds > 1).any():
            raise MalformedMessageError(f"unknown share kind {int(kinds.max())}")
        data = r.data
        return cls(
            **head,
            shares=Records(
                n,
                lambda: tuple(
                    (v, _KINDS[k], b)
                    for v, k, b in zip(
                        ids.tolist(),
                        kinds.tolist(),
                        _slices(data, start + 7, n, 7 + size, size),
                        strict=True,
                    )
                ),
            ),
        )


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
