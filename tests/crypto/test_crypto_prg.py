"""Mask PRG: equals AES-128-CTR from counter 0, masks cancel, outputs are uniform mod 2^b."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import prg
from securefl.errors import ConfigurationError

CHUNK32 = prg.CHUNK_BYTES // 4
SIZES = [0, 1, 3, 1000, CHUNK32 - 1, CHUNK32, CHUNK32 + 1, 2 * CHUNK32 + 7]
DTYPES = [np.uint32, np.uint64]
keys16 = st.binary(min_size=16, max_size=16)


def _reference_words(key: bytes, d: int, dtype: Any) -> np.ndarray[Any, Any]:
    """Independent reference: AES-ECB of big-endian counter blocks 0, 1, 2, … (NIST SP 800-38A)."""
    nbytes = d * np.dtype(dtype).itemsize
    blocks = b"".join(i.to_bytes(16, "big") for i in range(math.ceil(nbytes / 16)))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # reference only, never for data
    stream = ecb.update(blocks) + ecb.finalize()
    return np.frombuffer(stream[:nbytes], dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [0, 1, 5, CHUNK32 + 3])
def test_words_are_the_aes_ctr_keystream(d: int, dtype: Any) -> None:
    key = bytes(range(16))
    expected = _reference_words(key, d, dtype)
    assert np.array_equal(prg.mask_words(key, d, dtype), expected)
    acc = np.zeros(d, dtype=dtype)
    prg.add_mask(acc, key)
    assert np.array_equal(acc, expected)


@given(
    key_a=keys16,
    key_b=keys16,
    d=st.sampled_from(SIZES),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_pairwise_masks_cancel_and_add_masks_matches_add_mask(
    key_a: bytes, key_b: bytes, d: int, dtype: Any, seed: int
) -> None:
    info = np.iinfo(dtype)
    x = np.random.default_rng(seed).integers(0, info.max, size=d, dtype=dtype, endpoint=True)
    y = np.random.default_rng(seed + 1).integers(0, info.max, size=d, dtype=dtype, endpoint=True)
    # u < v: u adds +PRG(s_uv), v adds −PRG(s_uv); both add their self masks, later removed.
    mu, mv = x.copy(), y.copy()
    prg.add_masks(mu, [(key_a, 1), (key_b, 1)])
    prg.add_masks(mv, [(key_a, -1)])
    total = mu + mv
    prg.add_mask(total, key_b, negate=True)
    assert np.array_equal(total, x + y)
    one_by_one = x.copy()
    prg.add_mask(one_by_one, key_a)
    prg.add_mask(one_by_one, key_b)
    assert np.array_equal(one_by_one, mu)


def test_masking_changes_every_word_with_overwhelming_probability() -> None:
    acc = np.zeros(4096, dtype=np.uint32)
    prg.add_mask(acc, os.urandom(16))
    assert np.count_nonzero(acc == 0) < 5  # expected 4096 / 2^32 zeros


def _chi2_upper_quantile(df: int, z: float) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile at standard-normal score z."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize(("bits", "dtype"), [(8, np.uint32), (5, np.uint32), (11, np.uint64)])
def test_masked_values_are_uniform_mod_2_to_the_b(bits: int, dtype: Any) -> None:
    """Chi-square goodness of fit of (constant input + mask) mod 2^b over 2^b bins.

    z = 5.0 in the Wilson–Hilferty quantile: false-failure rate ≈ 3e-7 per case.
    """
    bins = 1 << bits
    samples = bins * 200
    acc = np.full(samples, 12345, dtype=dtype)
    prg.add_mask(acc, os.urandom(16))
    acc &= dtype((1 << bits) - 1)
    counts = np.bincount(acc.astype(np.int64), minlength=bins)
    expected = samples / bins
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < _chi2_upper_quantile(bins - 1, 5.0)


def test_high_bits_of_uint32_words_are_uniform() -> None:
    words = prg.mask_words(os.urandom(16), 256 * 200, np.uint32)
    counts = np.bincount((words >> np.uint32(24)).astype(np.int64), minlength=256)
    stat = float(((counts - 200) ** 2 / 200).sum())
    assert stat < _chi2_upper_quantile(255, 5.0)


@pytest.mark.parametrize(
    "acc",
    [
        np.zeros(4, dtype=np.int64),
        np.zeros(4, dtype=np.float64),
        np.zeros((2, 2), dtype=np.uint32),
        np.zeros(8, dtype=np.uint32)[::2],
    ],
)
def test_bad_accumulators_are_refused(acc: np.ndarray[Any, Any]) -> None:
    with pytest.raises(ConfigurationError, match="acc"):
        prg.add_mask(acc, bytes(16))


def test_bad_keys_and_signs_are_refused() -> None:
    acc = np.zeros(4, dtype=np.uint32)
    with pytest.raises(ConfigurationError, match="16 bytes"):
        prg.add_mask(acc, bytes(32))
    with pytest.raises(ConfigurationError, match="sign"):
        prg.add_masks(acc, [(bytes(16), 2)])
    with pytest.raises(ConfigurationError):
        prg.mask_words(bytes(16), -1)
    with pytest.raises(ConfigurationError):
        prg.mask_words(bytes(16), 4, np.int32)
    assert not acc.any()


@given(
    bits=st.integers(1, 64),
    d=st.sampled_from(SIZES),
    dtype=st.sampled_from(DTYPES),
    key=keys16,
)
def test_in_loop_reduction_equals_masking_then_and(
    bits: int, d: int, dtype: Any, key: bytes
) -> None:
    width = 8 * np.dtype(dtype).itemsize
    if bits > width:
        with pytest.raises(ConfigurationError, match="bits"):
            prg.add_mask(np.zeros(1, dtype=dtype), key, bits=bits)
        return
    acc = np.arange(d, dtype=dtype)
    expected = acc.copy()
    prg.add_masks(expected, [(key, 1), (key[::-1], -1)])
    if bits < width:
        expected &= dtype((1 << bits) - 1)
    prg.add_masks(acc, [(key, 1), (key[::-1], -1)], bits=bits)
    assert np.array_equal(acc, expected)
    only_reduce = np.arange(d, dtype=dtype)
    prg.add_masks(only_reduce, [], bits=bits)
    assert np.array_equal(only_reduce, np.arange(d, dtype=dtype) & dtype((1 << bits) - 1))
