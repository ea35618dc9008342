"""Typed errors of the crypto layer (subclasses of :mod:`securefl.errors`).

A peer-supplied key, ciphertext, signature or share that fails validation is the peer's fault,
so these derive from :class:`RemoteProtocolError`; running out of shares aborts the round.
"""

from __future__ import annotations

from securefl.errors import AbortError, RemoteProtocolError


class InvalidKeyError(RemoteProtocolError):
    """A peer's public key has the wrong length/encoding, or key agreement gives a low-order
    (all-zero) shared secret (RFC 7748 §6.1)."""


class SignatureError(RemoteProtocolError):
    """An Ed25519 signature does not verify under the claimed public key."""


class AuthenticationError(RemoteProtocolError):
    """AES-GCM authentication failed: wrong key, nonce, associated data, or tampering."""


class InvalidShareError(RemoteProtocolError):
    """A Shamir share is malformed, out of the field, duplicated, or inconsistent."""


class InsufficientSharesError(AbortError):
    """Fewer than the threshold of shares are available: the secret cannot be recovered."""


class UncorrectableSharesError(InvalidShareError):
    """Shares of one secret are inconsistent and too many are wrong to correct from the surplus
    (more than ⌊(s − t)/2⌋ of s): the secret is not released rather than possibly wrong."""
