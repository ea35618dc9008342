"""X25519 / Ed25519 wrappers and AES-GCM: agreement, validation, tamper detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import aead, keys
from securefl.crypto.errors import AuthenticationError, InvalidKeyError, SignatureError
from securefl.errors import ConfigurationError, RemoteProtocolError


def test_x25519_agreement_is_symmetric_and_roundtrips_raw_keys() -> None:
    a, b = keys.generate_x25519(), keys.generate_x25519()
    pa, pb = keys.x25519_public_bytes(a), keys.x25519_public_bytes(b)
    assert len(pa) == keys.PUBLIC_KEY_BYTES
    assert keys.exchange(a, pb) == keys.exchange(b, keys.load_x25519_public(pa))
    again = keys.x25519_private_from_bytes(keys.private_bytes(a))
    assert keys.x25519_public_bytes(again) == pa


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_public_key_of_wrong_length_is_a_remote_error(length: int) -> None:
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        keys.load_x25519_public(bytes(length))
    with pytest.raises(InvalidKeyError):
        keys.load_ed25519_public(bytes(length))


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),  # 0
        (1).to_bytes(32, "little"),  # 1: order 1
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_low_order_public_key_is_rejected(point: bytes) -> None:
    with pytest.raises(InvalidKeyError, match="low-order"):
        keys.exchange(keys.generate_x25519(), point)
    assert issubclass(InvalidKeyError, RemoteProtocolError)


def test_ed25519_sign_verify_and_tamper() -> None:
    sk = keys.generate_ed25519()
    pk = keys.ed25519_public_bytes(sk)
    sig = keys.sign(sk, b"advertise keys")
    keys.verify(pk, sig, b"advertise keys")
    with pytest.raises(SignatureError):
        keys.verify(pk, sig, b"advertise keyz")
    bad = bytearray(sig)
    bad[5] ^= 1
    with pytest.raises(SignatureError):
        keys.verify(pk, bytes(bad), b"advertise keys")
    with pytest.raises(SignatureError, match="64 bytes"):
        keys.verify(pk, sig[:-1], b"advertise keys")
    with pytest.raises(SignatureError):
        keys.verify(keys.ed25519_public_bytes(keys.generate_ed25519()), sig, b"advertise keys")


def test_private_key_loaders_validate_length() -> None:
    with pytest.raises(ConfigurationError):
        keys.x25519_private_from_bytes(bytes(31))
    with pytest.raises(ConfigurationError):
        keys.ed25519_private_from_bytes(bytes(33))


KEY = bytes(range(32))


@given(
    plaintext=st.binary(max_size=200),
    ad=st.binary(max_size=64),
    where=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_aead_roundtrip_and_any_bit_flip_is_detected(
    plaintext: bytes, ad: bytes, where: int, bit: int
) -> None:
    nonce = aead.direction_nonce(3, 7)
    ct = aead.seal(KEY, nonce, plaintext, ad)
    assert len(ct) == len(plaintext) + aead.TAG_BYTES
    assert aead.open_(KEY, nonce, ct, ad) == plaintext
    flipped = bytearray(ct)
    flipped[where % len(ct)] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        aead.open_(KEY, nonce, bytes(flipped), ad)
    with pytest.raises(AuthenticationError):
        aead.open_(KEY, nonce, ct, ad + b"x")
    with pytest.raises(AuthenticationError):
        aead.open_(KEY, aead.direction_nonce(7, 3), ct, ad)
    other = bytearray(KEY)
    other[where % 32] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        aead.open_(bytes(other), nonce, ct, ad)


def test_aead_rejects_short_ciphertext_and_bad_sizes() -> None:
    nonce = aead.direction_nonce(1, 2)
    with pytest.raises(AuthenticationError, match="shorter"):
        aead.open_(KEY, nonce, bytes(15), b"")
    with pytest.raises(ConfigurationError):
        aead.seal(KEY[:16], nonce, b"", b"")
    with pytest.raises(ConfigurationError):
        aead.seal(KEY, nonce[:8], b"", b"")


def test_direction_nonces_differ_by_direction_and_validate() -> None:
    assert aead.direction_nonce(1, 2) != aead.direction_nonce(2, 1)
    assert aead.direction_nonce(1, 2, 1) != aead.direction_nonce(1, 2, 0)
    with pytest.raises(ConfigurationError):
        aead.direction_nonce(1, 1)
    with pytest.raises(ConfigurationError):
        aead.direction_nonce(-1, 2)
    with pytest.raises(ConfigurationError):
        aead.direction_nonce(1, 2**32)
