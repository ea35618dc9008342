"""HKDF-SHA256 key derivation with an unambiguous, fully bound context (RFC 5869).

Every key in the protocol is ``HKDF-SHA256(ikm, salt=None, info=encode_info(...))``; ``info``
binds protocol name and version, a purpose label, the session id, the round index, both party ids,
caller ``extra`` context (tensor layout digest, global-model hash) and the output length. Each
field is length-prefixed or fixed-width, so two different contexts never encode to the same
bytes (domain separation, defeats cross-round / cross-pair mask reuse; REFERENCE "Known attacks").
Byte layout: ``protocols/secagg-primitives.md`` §2.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefl.errors import ConfigurationError

PROTOCOL_NAME = b"securefl/secagg"
PROTOCOL_VERSION = 1

#: Pairwise mask PRG key s_{u,v} (Bonawitz et al. 2017, §4 MaskedInputCollection).
LABEL_PAIRWISE_MASK = "pairwise-mask"
#: Per-pair AES-GCM key c_{u,v} encrypting Shamir shares (§4 ShareKeys).
LABEL_SHARE_ENCRYPTION = "share-encryption"
#: Self mask PRG key from the self-mask seed b_u.
LABEL_SELF_MASK = "self-mask"
#: Stochastic-rounding randomness of the encoder.
LABEL_STOCHASTIC_ROUNDING = "stochastic-rounding"
#: SecAgg+ neighbour graph from shared public randomness (Bell et al. 2020, §3).
LABEL_NEIGHBOUR_GRAPH = "neighbour-graph"

LABELS = frozenset(
    {
        LABEL_PAIRWISE_MASK,
        LABEL_SHARE_ENCRYPTION,
        LABEL_SELF_MASK,
        LABEL_STOCHASTIC_ROUNDING,
        LABEL_NEIGHBOUR_GRAPH,
    }
)

MAX_PARTY_ID = 2**32 - 1
MAX_ROUND = 2**32 - 1
MAX_LENGTH = 255 * 32  # RFC 5869 limit for SHA-256


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def encode_info(
    *,
    label: str,
    session_id: bytes,
    round_index: int,
    party_a: int,
    party_b: int,
    extra: bytes = b"",
    length: int = 32,
) -> bytes:
    """The HKDF ``info``: ``LP(name) u16(version) LP(label) LP(session_id) u32(round)
    u32(party_a) u32(party_b) LP(extra) u16(length)``, LP = u32 big-endian length prefix."""
    if not isinstance(label, str) or not label or not label.isascii():
        raise ConfigurationError("label must be a non-empty ASCII string", parameter="label")
    if not isinstance(session_id, bytes | bytearray) or not session_id:
        raise ConfigurationError("session_id must be non-empty bytes", parameter="session_id")
    if not isinstance(extra, bytes | bytearray):
        raise ConfigurationError("extra must be bytes", parameter="extra")
    for name, value, top in (
        ("round_index", round_index, MAX_ROUND),
        ("party_a", party_a, MAX_PARTY_ID),
        ("party_b", party_b, MAX_PARTY_ID),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ConfigurationError(f"must be an integer in [0, {top}]", parameter=name)
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
        raise ConfigurationError(f"must be an integer in [1, {MAX_LENGTH}]", parameter="length")
    return b"".join(
        (
            _lp(PROTOCOL_NAME),
            struct.pack(">H", PROTOCOL_VERSION),
            _lp(label.encode("ascii")),
            _lp(bytes(session_id)),
            struct.pack(">III", round_index, party_a, party_b),
            _lp(bytes(extra)),
            struct.pack(">H", length),
        )
    )


def derive_key(
    ikm: bytes,
    *,
    label: str,
    session_id: bytes,
    round_index: int,
    party_a: int,
    party_b: int,
    extra: bytes = b"",
    length: int = 32,
) -> bytes:
    """HKDF-SHA256 of ``ikm`` under the context above; party ids are used in the order given."""
    if not isinstance(ikm, bytes | bytearray) or len(ikm) < 16:
        raise ConfigurationError("ikm must be at least 16 bytes", parameter="ikm")
    info = encode_info(
        label=label,
        session_id=session_id,
        round_index=round_index,
        party_a=party_a,
        party_b=party_b,
        extra=extra,
        length=length,
    )
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(bytes(ikm))


def derive_pairwise_key(
    shared_secret: bytes,
    *,
    label: str,
    session_id: bytes,
    round_index: int,
    me: int,
    peer: int,
    extra: bytes = b"",
    length: int = 32,
) -> bytes:
    """Key both ends of a pair derive identically: ids are ordered ``(min, max)``."""
    if me == peer:
        raise ConfigurationError("a pairwise key needs two distinct parties", parameter="peer")
    return derive_key(
        shared_secret,
        label=label,
        session_id=session_id,
        round_index=round_index,
        party_a=min(me, peer),
        party_b=max(me, peer),
        extra=extra,
        length=length,
    )
