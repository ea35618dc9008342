"""The mask PRG: AES-128-CTR keystream read as little-endian words (Bonawitz et al. 2017, §4).

``PRG(key)`` is :class:`~securefl.crypto.drbg.CtrDrbg` with a 16-byte key: AES-128 in CTR mode
under a single-use key (from HKDF with a label that binds session, round, pair and tensor
layout) with the initial counter block all zero, encrypting zeros. Keystream bytes
``4i..4i+3`` (uint32 accumulators) or ``8i..8i+7`` (uint64) form word ``i``, little-endian.
Because every key is used for exactly one keystream, the fixed counter start never repeats a
(key, counter) pair.

Masks are added modulo the word size 2^32 or 2^64 (numpy wrapping arithmetic); a ring
Z_{2^b} with b < word size is obtained by the caller's final ``& (2^b - 1)``. Since 2^b divides
2^32 (or 2^64), the low b bits of a uniform word are exactly uniform: no modular bias.

Speed: the keystream is generated with ``CtrDrbg.read_into`` (one ``update_into``) into one
cache-sized buffer that is reused, and added with ``np.add(..., out=...)``; the loop runs
chunk-major (all keys for one slice of ``acc`` before the next slice) so the slice stays in
cache across the k+1 keystreams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto.drbg import CHUNK_BYTES, CtrDrbg
from securefl.errors import ConfigurationError

PRG_KEY_BYTES = 16

__all__ = ["CHUNK_BYTES", "PRG_KEY_BYTES", "add_mask", "add_masks", "mask_words"]


def _stream(key: bytes) -> CtrDrbg:
    if not isinstance(key, bytes | bytearray) or len(key) != PRG_KEY_BYTES:
        raise ConfigurationError(
            f"PRG key must be {PRG_KEY_BYTES} bytes (AES-128), got "
            f"{len(key) if isinstance(key, bytes | bytearray) else type(key).__name__}",
            parameter="key",
        )
    return CtrDrbg(key)


def _check_acc(acc: npt.NDArray[Any]) -> np.dtype[Any]:
    if not isinstance(acc, np.ndarray) or acc.ndim != 1:
        raise ConfigurationError("acc must be a 1-D numpy array", parameter="acc")
    if acc.dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise ConfigurationError(
            f"acc dtype must be uint32 or uint64, got {acc.dtype}", parameter="acc"
        )
    if not acc.flags.c_contiguous or not acc.flags.writeable:
        raise ConfigurationError("acc must be C-contiguous and writeable", parameter="acc")
    return np.dtype(acc.dtype).newbyteorder("<")


def add_masks(
    acc: npt.NDArray[Any],
    keys_and_signs: Iterable[tuple[bytes, int]],
    *,
    bits: int | None = None,
) -> None:
    """In place: ``acc += sign · PRG(key)`` for each ``(key, sign)``, ``sign`` ∈ {+1, −1}.

    Wraps modulo 2^32 / 2^64 according to ``acc.dtype``. With ``bits = b`` the result is also
    reduced mod 2^b (``& (2^b − 1)``) chunk by chunk while in cache, saving the caller a pass.
    """
    word = _check_acc(acc)
    width = 8 * word.itemsize
    if bits is not None and (
        isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= width
    ):
        raise ConfigurationError(f"must be an integer in [1, {width}]", parameter="bits")
    reduce = None if bits is None or bits == width else acc.dtype.type((1 << bits) - 1)
    pairs: Sequence[tuple[bytes, int]] = list(keys_and_signs)
    streams: list[tuple[CtrDrbg, bool]] = []
    for key, sign in pairs:
        if sign not in (1, -1) or isinstance(sign, bool):
            raise ConfigurationError("sign must be +1 or -1", parameter="keys_and_signs")
        streams.append((_stream(key), sign < 0))
    if acc.size == 0:
        return
    if not streams:
        if reduce is not None:
            acc &= reduce
        return
    itemsize = word.itemsize
    words_per_chunk = CHUNK_BYTES // itemsize
    buf = bytearray(CHUNK_BYTES + 16)  # 16 spare bytes: read_into is then one update_into
    view = np.frombuffer(buf, dtype=word, count=words_per_chunk)
    total = acc.size
    for start in range(0, total, words_per_chunk):
        stop = min(start + words_per_chunk, total)
        n = stop - start
        part = acc[start:stop]
        nbytes = n * itemsize
        ks = view if n == words_per_chunk else view[:n]
        for drbg, negate in streams:
            drbg.read_into(buf, nbytes)
            if negate:
                np.subtract(part, ks, out=part)
            else:
                np.add(part, ks, out=part)
        if reduce is not None:
            part &= reduce


def add_mask(
    acc: npt.NDArray[Any], key: bytes, *, negate: bool = False, bits: int | None = None
) -> None:
    """In place: ``acc ± PRG(key)`` modulo the word size of ``acc`` (uint32 or uint64), then
    mod 2^bits if ``bits`` is given."""
    add_masks(acc, [(key, -1 if negate else 1)], bits=bits)


def mask_words(key: bytes, d: int, dtype: npt.DTypeLike = np.uint32) -> npt.NDArray[Any]:
    """The first ``d`` PRG words of ``key`` as a new array of ``dtype`` (uint32 / uint64).

    Equal to ``add_mask(np.zeros(d, dtype), key)``, but written straight into the result.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ConfigurationError("must be a non-negative integer", parameter="d")
    word = np.dtype(dtype)
    if word not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise ConfigurationError(f"dtype must be uint32 or uint64, got {word}", parameter="dtype")
    drbg = _stream(key)
    if word == np.dtype(np.uint32):
        return drbg.uint32(d)
    return drbg.uint64(d)
