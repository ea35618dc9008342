"""Cryptographic primitives for secure aggregation: thin typed wrappers over ``cryptography``.

Modules: :mod:`keys` (X25519, Ed25519), :mod:`kdf` (HKDF-SHA256 with bound context),
:mod:`drbg` (the one AES-CTR DRBG behind every keystream),
:mod:`aead` (AES-256-GCM), :mod:`prg` (AES-128-CTR mask PRG), :mod:`shamir` (t-of-n sharing),
:mod:`errors`. Normative description: ``protocols/secagg-primitives.md``.
"""

from __future__ import annotations

from securefl.crypto import aead, drbg, errors, kdf, keys, prg, shamir

__all__ = ["aead", "drbg", "errors", "kdf", "keys", "prg", "shamir"]
