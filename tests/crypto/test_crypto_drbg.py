"""The one CTR-DRBG: NIST SP 800-38A CTR vectors, an independent ECB reference, read-pattern
independence, and a recorded output of every stream that was written separately before it."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import prg
from securefl.crypto.drbg import CHUNK_BYTES, CtrDrbg
from securefl.errors import ConfigurationError

# NIST SP 800-38A, Appendix F.5.1 (CTR-AES128.Encrypt) and F.5.5 (CTR-AES256.Encrypt).
SP800_38A_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
SP800_38A_PLAINTEXT = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
SP800_38A = {
    "2b7e151628aed2a6abf7158809cf4f3c": (
        "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
        "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"
    ),
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4": (
        "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"
    ),
}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _reference(key: bytes, n: int, first_block: int = 0) -> bytes:
    """AES-ECB of big-endian counter blocks (mod 2^128): an independent construction."""
    blocks = b"".join(
        ((first_block + i) % (1 << 128)).to_bytes(16, "big") for i in range(math.ceil(n / 16))
    )
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # reference only
    return (ecb.update(blocks) + ecb.finalize())[:n]


@pytest.mark.parametrize("key_hex", sorted(SP800_38A))
def test_nist_sp800_38a_ctr_vectors(key_hex: str) -> None:
    drbg = CtrDrbg(bytes.fromhex(key_hex), initial_block=SP800_38A_COUNTER)
    keystream = drbg.read_bytes(len(SP800_38A_PLAINTEXT))
    assert _xor(keystream, SP800_38A_PLAINTEXT).hex() == SP800_38A[key_hex]


@pytest.mark.parametrize("key_len", [16, 24, 32])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 5])
def test_keystream_matches_ecb_reference(key_len: int, n: int) -> None:
    key = bytes(range(7, 7 + key_len))
    assert CtrDrbg(key).read_bytes(n) == _reference(key, n)


def test_counter_is_the_whole_128_bit_block_and_wraps() -> None:
    key = bytes(range(16))
    last = (1 << 128) - 2
    drbg = CtrDrbg(key, initial_block=last.to_bytes(16, "big"))
    assert drbg.read_bytes(64) == _reference(key, 64, first_block=last)


@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8))
def test_any_read_pattern_yields_the_same_stream(sizes: list[int]) -> None:
    """Reads of any sizes and kinds are consecutive slices of one keystream."""
    key = bytes(range(32))
    drbg = CtrDrbg(key)
    got = b""
    for i, size in enumerate(sizes):
        kind = i % 4
        if kind == 0:
            got += drbg.read_bytes(size)
        elif kind == 1:
            got += drbg.uint32(size).astype("<u4").tobytes()
        elif kind == 2:
            got += drbg.uint64(size).astype("<u8").tobytes()
        else:
            exact = bytearray(size)  # no spare room: the last block goes through a temporary
            drbg.read_into(exact)
            got += bytes(exact)
    assert got == _reference(key, len(got))


def test_read_into_buffers() -> None:
    key = bytes(range(16))
    n = CHUNK_BYTES + 100
    expected = _reference(key, 3 * n)
    arr = np.zeros(n // 4, dtype=np.uint32)
    spare = bytearray(n + 16)
    drbg = CtrDrbg(key)
    drbg.read_into(arr)
    drbg.read_into(spare, n)
    view = memoryview(bytearray(n))
    drbg.read_into(view)
    assert arr.tobytes() + bytes(spare[:n]) + bytes(view) == expected[: 3 * n]


def test_words_are_little_endian() -> None:
    key = bytes(32)
    raw = _reference(key, 8)
    assert int(CtrDrbg(key).uint32(1)[0]) == int.from_bytes(raw[:4], "little")
    assert int(CtrDrbg(key).uint64(1)[0]) == int.from_bytes(raw, "little")
    assert CtrDrbg(key).uint32(3).dtype == np.dtype(np.uint32)


@pytest.mark.parametrize("key", [b"", bytes(15), bytes(17), bytes(33), "k" * 16])
def test_rejects_non_aes_keys(key: object) -> None:
    with pytest.raises(ConfigurationError) as err:
        CtrDrbg(key)  # type: ignore[arg-type]
    assert err.value.parameter == "key"


def test_rejects_bad_reads() -> None:
    drbg = CtrDrbg(bytes(16))
    with pytest.raises(ConfigurationError):
        drbg.read_bytes(-1)
    with pytest.raises(ConfigurationError):
        drbg.read_into(bytearray(4), 5)
    with pytest.raises(ConfigurationError):
        drbg.read_into(b"\x00" * 32)
    with pytest.raises(ConfigurationError):
        CtrDrbg(bytes(16), initial_block=bytes(8))


# ----------------------------------------------------------- every former stream, recorded
# Outputs recorded from the code before the streams were unified (commit d727625), except
# ``crypto_normal`` (the audit demo's normals were a ChaCha20 stream; now the AES-256 DRBG).
K32 = bytes(range(32))
K16 = bytes(range(100, 116))


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def test_graph_permutation_recorded() -> None:
    from securefl.secagg.graph import permutation

    assert permutation(tuple(range(50)), K32) == [
        38, 5, 7, 22, 2, 15, 1, 42, 49, 6, 34, 44, 39, 16, 23, 47, 31, 3, 28, 37, 4, 29, 10,
        36, 27, 11, 40, 35, 24, 21, 46, 19, 12, 30, 26, 48, 25, 45, 33, 8, 17, 20, 43, 14, 32,
        0, 13, 9, 41, 18,
    ]  # fmt: skip


def test_deterministic_randomness_recorded() -> None:
    from securefl.secagg.randomness import DeterministicRandomness

    r = DeterministicRandomness(K32)
    assert _h(r.token_bytes(5) + r.token_bytes(100)) == "fdca67d139d0f7c3cd95f64250e1f38b"


def test_engine_round_randomness_recorded() -> None:
    from securefl.engine.client import RoundRandomness

    r = RoundRandomness(K32)
    assert _h(r.token_bytes(33) + r.token_bytes(7)) == "dec288b6edebe5cd42b2218f91480876"


def test_dp_crypto_random_recorded() -> None:
    from securefl.dp.sampling import CryptoRandom

    c = CryptoRandom(K32)
    data = (
        c.random_bytes(3)
        + c.uint32(5).tobytes()
        + c.uint64(3).tobytes()
        + c.below(7, 9).tobytes()
        + c.bits(13).tobytes()
        + c.bernoulli(3, 10, 8).tobytes()
    )
    assert _h(data) == "1b1c5de9069da2c8a3bff829a8c60073"
    assert _h(CryptoRandom(K16).uint64(70000).tobytes()) == "36608aba1091583adc86a5616e71b0d1"


def test_dp_rotation_signs_recorded() -> None:
    from securefl.dp.distributed import rotation_signs

    assert _h(rotation_signs(K32, 64).tobytes()) == "4d304d1e81c094ad96f5178208b538ee"


def test_stochastic_rounding_recorded() -> None:
    from securefl.encoding import encode, plan_ring

    values = encode(np.linspace(-1.5, 1.5, 40000), plan_ring(10, 1.0, 16), rng_key=K16).values
    assert _h(values.tobytes()) == "185a7a06121b2fb0537f5394ae461b6f"


def test_mask_prg_recorded() -> None:
    assert _h(prg.mask_words(K16, 40001).tobytes()) == "db74214352dfbbd75c630842bb742aa3"
    assert _h(prg.mask_words(K16, 40001, np.uint64).tobytes()) == (
        "cb3879f6cf6a11acc628599c3b929018"
    )
    acc = np.zeros(70000, np.uint32)
    prg.add_masks(acc, [(K16, 1), (bytes(16), -1)], bits=20)
    assert _h(acc.tobytes()) == "bc6ba9cfbb4b0f68322109a78d5834b8"


def test_audit_demo_normals_recorded() -> None:
    from securefl.audit.empirical import _CryptoNormal

    assert _h(_CryptoNormal(K32).normal(11).tobytes()) == "cac0d0a032bbf868725c8f2dd31f553f"
