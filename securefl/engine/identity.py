"""Long-term node identities and the registry of their public keys (the PKI of the protocol).

Each node holds one Ed25519 identity key in a file only it can read; the registry maps every
securefl client id (1..2^32−2) to the public key, and is distributed out of band to the server
and, ideally, to every node (Bonawitz et al. 2017 §4: a malicious server that could pick the
keys could simulate all other clients). Flower node ids are random 64-bit numbers assigned by
the SuperLink; they are *not* securefl ids — the mapping is learned per round from the signed
AdvertiseKeys message and the node's binding signature over its own challenge (see
``protocols/engine-flower.md`` §3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefl.crypto import keys
from securefl.errors import ConfigurationError, SecureFLError
from securefl.secagg.config import MAX_CLIENT_ID

_KEY_FILE_HEADER = "securefl-ed25519-identity-v1"


@dataclass(frozen=True)
class NodeIdentity:
    """A node's securefl client id and its long-term Ed25519 signing key."""

    client_id: int
    key: keys.Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_client_id(self.client_id)

    @property
    def public(self) -> bytes:
        return keys.ed25519_public_bytes(self.key)


def check_client_id(client_id: object) -> int:
    if type(client_id) is not int or not 1 <= client_id <= MAX_CLIENT_ID:
        raise ConfigurationError(f"must be an int in 1..{MAX_CLIENT_ID}", parameter="client_id")
    return client_id


def generate_identity(path: str | Path, client_id: int) -> NodeIdentity:
    """Create a fresh identity (OS CSPRNG) and write it to ``path`` with mode 0600."""
    identity = NodeIdentity(check_client_id(client_id), keys.generate_ed25519())
    text = json.dumps(
        {
            "format": _KEY_FILE_HEADER,
            "client_id": client_id,
            "private_key": keys.private_bytes(identity.key).hex(),
        }
    )
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return identity


def load_identity(path: str | Path) -> NodeIdentity:
    """Read an identity file written by :func:`generate_identity`."""
    try:
        doc = _json_object(path)
        if doc.get("format") != _KEY_FILE_HEADER:
            raise ValueError("not a securefl identity file")
        key = keys.ed25519_private_from_bytes(bytes.fromhex(doc["private_key"]))
        client_id = doc["client_id"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError, SecureFLError) as exc:
        raise ConfigurationError(
            f"cannot load identity key {path}: {type(exc).__name__}", parameter="identity-key"
        ) from None
    return NodeIdentity(check_client_id(client_id), key)


def save_registry(path: str | Path, public_keys: Mapping[int, bytes]) -> None:
    """Write ``{client id: Ed25519 public key}`` as JSON (public data)."""
    doc = {str(check_client_id(u)): bytes(pk).hex() for u, pk in sorted(public_keys.items())}
    Path(path).write_text(json.dumps({"format": "securefl-registry-v1", "keys": doc}, indent=1))


def load_registry(path: str | Path, *, minimum: int = 2) -> dict[int, bytes]:
    """Read a registry; every key must be a valid Ed25519 public key and ids in range."""
    try:
        doc = _json_object(path)
        if doc.get("format") != "securefl-registry-v1":
            raise ValueError("not a securefl registry")
        out = {check_client_id(int(u)): bytes.fromhex(pk) for u, pk in doc["keys"].items()}
        for pk in out.values():
            keys.load_ed25519_public(pk)
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        RecursionError,
        SecureFLError,
    ) as exc:
        raise ConfigurationError(
            f"cannot load registry {path}: {type(exc).__name__}: {exc}", parameter="registry"
        ) from None
    if len(out) < minimum:
        raise ConfigurationError(f"needs at least {minimum} clients", parameter="registry")
    return out


def _json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in a UTF-8 file (ValueError if it is anything else; RecursionError if
    nested deeper than the parser's limit: callers turn both into ConfigurationError)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object but {type(doc).__name__}")
    return doc
