"""X25519 key agreement and Ed25519 signatures (Bonawitz et al. 2017, §4: KA and SIG).

Thin typed wrappers over ``cryptography``: keys stay typed objects; on the wire a public key is
its raw 32-byte encoding (RFC 7748 / RFC 8032) and every decoding is validated. A shared secret
of all zeros (the peer sent a low-order point) is rejected as the peer's fault.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from securefl.crypto.errors import InvalidKeyError, SignatureError
from securefl.errors import ConfigurationError

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SHARED_SECRET_BYTES = 32
SIGNATURE_BYTES = 64

__all__ = [
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "SHARED_SECRET_BYTES",
    "SIGNATURE_BYTES",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "X25519PrivateKey",
    "X25519PublicKey",
    "ed25519_private_from_bytes",
    "ed25519_public_bytes",
    "exchange",
    "generate_ed25519",
    "generate_x25519",
    "load_ed25519_public",
    "load_x25519_public",
    "private_bytes",
    "sign",
    "verify",
    "x25519_private_from_bytes",
    "x25519_public_bytes",
]

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


def _check_len(raw: bytes, expected: int, what: str) -> None:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidKeyError(f"{what} must be bytes, got {type(raw).__name__}")
    if len(raw) != expected:
        raise InvalidKeyError(f"{what} must be {expected} bytes, got {len(raw)}")


def generate_x25519() -> X25519PrivateKey:
    """A fresh ephemeral X25519 key from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def x25519_private_from_bytes(raw: bytes) -> X25519PrivateKey:
    """Load a private key from 32 raw bytes (for known-answer vectors and tests)."""
    if len(raw) != PRIVATE_KEY_BYTES:
        raise ConfigurationError(
            f"X25519 private key must be {PRIVATE_KEY_BYTES} bytes, got {len(raw)}",
            parameter="raw",
        )
    return X25519PrivateKey.from_private_bytes(bytes(raw))


def x25519_public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """Raw 32-byte encoding of the public key (of a private key: its public half)."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(_RAW, _RAW_PUB)


def load_x25519_public(raw: bytes) -> X25519PublicKey:
    """Decode a peer's X25519 public key; wrong length → :class:`InvalidKeyError`."""
    _check_len(raw, PUBLIC_KEY_BYTES, "X25519 public key")
    try:
        return X25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError as exc:  # pragma: no cover - every 32-byte string decodes
        raise InvalidKeyError("X25519 public key does not decode") from exc


def exchange(private: X25519PrivateKey, peer: X25519PublicKey | bytes) -> bytes:
    """X25519 shared secret; a low-order peer key (all-zero result) → InvalidKeyError.

    The raw shared secret is never used directly as a key: pass it to
    :func:`securefl.crypto.kdf.derive_key` with a label and the full context.
    """
    public = load_x25519_public(peer) if not isinstance(peer, X25519PublicKey) else peer
    try:
        return private.exchange(public)
    except ValueError as exc:  # cryptography rejects the all-zero shared secret
        raise InvalidKeyError("X25519 key agreement gave a low-order (all-zero) result") from exc


def generate_ed25519() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def ed25519_private_from_bytes(raw: bytes) -> Ed25519PrivateKey:
    """Load a signing key from its 32-byte seed (for known-answer vectors and tests)."""
    if len(raw) != PRIVATE_KEY_BYTES:
        raise ConfigurationError(
            f"Ed25519 private key must be {PRIVATE_KEY_BYTES} bytes, got {len(raw)}",
            parameter="raw",
        )
    return Ed25519PrivateKey.from_private_bytes(bytes(raw))


def ed25519_public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Raw 32-byte encoding of the verification key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(_RAW, _RAW_PUB)


def load_ed25519_public(raw: bytes) -> Ed25519PublicKey:
    """Decode a peer's Ed25519 public key; wrong length or invalid point → InvalidKeyError."""
    _check_len(raw, PUBLIC_KEY_BYTES, "Ed25519 public key")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError as exc:
        raise InvalidKeyError("Ed25519 public key does not decode") from exc


def private_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """Raw 32-byte private key (only for Shamir-sharing the mask key, §4 ShareKeys)."""
    return key.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes, deterministic per RFC 8032)."""
    return key.sign(message)


def verify(public: Ed25519PublicKey | bytes, signature: bytes, message: bytes) -> None:
    """Verify or raise :class:`SignatureError` (also for a malformed signature length)."""
    key = load_ed25519_public(public) if not isinstance(public, Ed25519PublicKey) else public
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        key.verify(bytes(signature), message)
    except InvalidSignature as exc:
        raise SignatureError("Ed25519 signature does not verify") from exc
