"""Where the protocol's secret randomness comes from, with an explicit hook for test vectors.

Production code uses :class:`SystemRandomness` (``secrets``, the OS CSPRNG) and nothing else by
default. :class:`DeterministicRandomness` exists only so that a known-answer vector can pin a
whole round: it must be passed in explicitly and is never selected implicitly.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from securefl.crypto.drbg import CtrDrbg
from securefl.errors import ConfigurationError


class RandomSource(Protocol):
    """Source of secret random bytes (keys, self-mask seeds, Shamir coefficients)."""

    def token_bytes(self, n: int) -> bytes: ...


class SystemRandomness:
    """The OS CSPRNG via :func:`secrets.token_bytes` (the default everywhere)."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class DeterministicRandomness(CtrDrbg):
    """FOR KNOWN-ANSWER VECTORS AND TESTS ONLY: the AES-256-CTR DRBG of a fixed 32-byte seed."""

    __slots__ = ()

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
            raise ConfigurationError("must be 32 bytes", parameter="seed")
        super().__init__(seed)
