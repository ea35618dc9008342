"""Key handling: raw/PEM/hex round trips (no byte ever stripped), file modes, wrong key types."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from securefl.audit.keys import (
    fingerprint,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_key_raw,
    write_keypair,
)
from securefl.errors import ConfigurationError


def test_raw_public_keys_round_trip_even_with_whitespace_bytes() -> None:
    # 300 keys: a raw key starting or ending with 0x09/0x0a/0x20 shows up with high probability.
    for _ in range(300):
        key = generate_signing_key()
        raw = public_key_raw(key.public_key())
        assert public_key_raw(load_public_key(raw)) == raw
        assert public_key_raw(load_public_key(raw.hex().encode())) == raw


def test_pem_files_round_trip(tmp_path: Path) -> None:
    pub = write_keypair(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    key = load_signing_key(tmp_path / "k.pem")
    assert fingerprint(load_public_key(pub)) == fingerprint(key)
    assert load_signing_key(key.private_bytes_raw()).private_bytes_raw() == key.private_bytes_raw()
    with pytest.raises(ConfigurationError):
        write_keypair(tmp_path / "k.pem")


def test_wrong_key_types_rejected(tmp_path: Path) -> None:
    x = X25519PrivateKey.generate()
    pem = x.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError):
        load_signing_key(pem)
    with pytest.raises(ConfigurationError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigurationError):
        load_signing_key(tmp_path / "missing.pem")
