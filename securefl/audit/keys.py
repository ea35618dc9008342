"""Ed25519 keys for signing the ledger head.

The signing key stays with the party that runs training; auditors need only the public key
(or its fingerprint) to check a ledger. Keys are :mod:`cryptography` key objects, never bare
bytes inside the package (pyca's "keys are types" habit); this module is the only place that
parses or writes key files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefl.errors import ConfigurationError

SigningKeySource = Ed25519PrivateKey | bytes | str | os.PathLike[str]
PublicKeySource = Ed25519PublicKey | Ed25519PrivateKey | bytes | str | os.PathLike[str]


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key from the OS CSPRNG (via OpenSSL)."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what an auditor pins or publishes."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(public_key_raw(pub)).hexdigest()


def _read(source: bytes | str | os.PathLike[str], what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} file {path}: {exc.strerror}", parameter=what
        ) from exc


def load_signing_key(source: SigningKeySource) -> Ed25519PrivateKey:
    """A signing key from a key object, PEM/raw bytes, or a PEM file path."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    data = _read(source, "signing_key")
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            "not an unencrypted PEM Ed25519 private key", parameter="signing_key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("key is not Ed25519", parameter="signing_key")
    return key


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """A verification key from a key object, PEM/raw bytes, or a PEM/hex file path."""
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, bytes) and len(source) == 32:  # raw key: never strip its bytes
        return Ed25519PublicKey.from_public_bytes(source)
    data = _read(source, "public_key").strip()
    if len(data) == 64 and not data.startswith(b"-----"):
        try:
            data = bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigurationError("not a hex public key", parameter="public_key") from exc
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError("not a PEM Ed25519 public key", parameter="public_key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("key is not Ed25519", parameter="public_key")
    return key


def write_keypair(private_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a new signing key (PEM, mode 0600) and its public key beside it (``.pub``).

    Returns the public key path. Refuses to overwrite an existing key unless asked: losing a
    signing key means the ledger cannot be extended under the same pinned identity.
    """
    priv = Path(private_path)
    pub = priv.with_name(priv.name + ".pub")
    if not overwrite and (priv.exists() or pub.exists()):
        raise ConfigurationError(f"{priv} or {pub} already exists", parameter="key_path")
    key = generate_signing_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(priv, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub
