"""AES-256-GCM with associated data for Shamir-share transport (Bonawitz et al. 2017, §4).

Keys come from :func:`securefl.crypto.kdf.derive_pairwise_key` with label
``share-encryption`` and are fresh for every (session, round, pair). The two members of a pair
share one key, so the nonce must differ by *direction*: :func:`direction_nonce` puts sender and
receiver ids (and a counter) into the 96-bit nonce, so a nonce never repeats under one key as
long as each sender seals at most one message per (counter, receiver). Associated data should
carry the session id, round, stage and both ids so a ciphertext cannot be replayed elsewhere.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from securefl.crypto.errors import AuthenticationError
from securefl.errors import ConfigurationError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

__all__ = ["KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "direction_nonce", "open_", "seal"]


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"must be {KEY_BYTES} bytes, got {len(key)}", parameter="key")
    if len(nonce) != NONCE_BYTES:
        raise ConfigurationError(
            f"must be {NONCE_BYTES} bytes, got {len(nonce)}", parameter="nonce"
        )


def direction_nonce(sender: int, receiver: int, counter: int = 0) -> bytes:
    """``u32(sender) || u32(receiver) || u32(counter)`` big-endian: unique per direction."""
    for name, value in (("sender", sender), ("receiver", receiver), ("counter", counter)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise ConfigurationError("must be an integer in [0, 2^32)", parameter=name)
    if sender == receiver:
        raise ConfigurationError("sender and receiver must differ", parameter="receiver")
    return struct.pack(">III", sender, receiver, counter)


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate; returns ``ciphertext || 16-byte tag``."""
    _check(key, nonce)
    return AESGCM(bytes(key)).encrypt(bytes(nonce), bytes(plaintext), bytes(associated_data))


def open_(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Decrypt; any mismatch (tampering, wrong key/nonce/AD) → :class:`AuthenticationError`."""
    _check(key, nonce)
    if len(ciphertext) < TAG_BYTES:
        raise AuthenticationError(
            f"ciphertext of {len(ciphertext)} bytes is shorter than the {TAG_BYTES}-byte tag"
        )
    try:
        return AESGCM(bytes(key)).decrypt(bytes(nonce), bytes(ciphertext), bytes(associated_data))
    except InvalidTag as exc:
        raise AuthenticationError("AES-GCM authentication failed") from exc
