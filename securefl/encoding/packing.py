"""Bit-packing of ring elements on the wire: b bits per value instead of a 32/64-bit word.

A masked input lives in Z_{2^b}; sending it as one uint32 per coordinate wastes ``32 − b``
bits each (8 of 32 under DDGauss's 24-bit ring). The packed form is the little-endian bit
stream of the values: value ``i`` occupies stream bits ``[i·b, (i+1)·b)``, least significant
bit first, and stream bit ``j`` is bit ``j mod 8`` of byte ``⌊j/8⌋``; the ``8·⌈d·b/8⌉ − d·b``
pad bits of the last byte are zero. Normative text: ``protocols/secagg.md`` §5 (wire version
2). Every ``b``-bit field is below ``2^b`` by construction, so a receiver that checks the exact
length and the zero pad bits has checked every value's range; there is exactly one encoding
of every vector (the canonical-form property the wire tests rely on).

Both directions are vectorised (``numpy.unpackbits``/``packbits`` on the ``⌈b/8⌉`` low bytes
of each word; byte-aligned widths are a plain byte slice; unpacking b ≤ 57 reads each value
from an 8-byte window at its first byte) and run in chunks of
:data:`CHUNK` values, so the extra memory is O(chunk) beyond the input and output arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError, MalformedMessageError

__all__ = ["CHUNK", "pack_bits", "pack_into", "packed_size", "unpack_bits", "word_dtype"]

#: Values per chunk (a multiple of 8, so every chunk starts on a byte boundary).
CHUNK = 1 << 16


def word_dtype(bits: int) -> np.dtype[Any]:
    """In-memory word of a ``bits``-bit ring element: little-endian uint32 (b ≤ 32) or uint64."""
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 64:
        raise ConfigurationError("must be an integer in [1, 64]", parameter="bits")
    return int(bits)


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` packed ``bits``-bit values: ⌈count·b/8⌉."""
    return (count * _check_bits(bits) + 7) // 8


def pack_into(out: npt.NDArray[np.uint8], values: npt.NDArray[Any], bits: int) -> None:
    """Write the packed stream of ``values`` into ``out`` (exactly ``packed_size`` bytes).

    ``values`` must be unsigned integers below ``2^bits``; anything else is a local bug and
    raises :class:`ConfigurationError` (``parameter="values"``) before a byte is written.
    """
    bits = _check_bits(bits)
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind != "u":
        raise ConfigurationError("must be a 1-D unsigned integer array", parameter="values")
    n = values.shape[0]
    if out.dtype != np.uint8 or out.shape != (packed_size(n, bits),):
        raise ConfigurationError(f"must be {packed_size(n, bits)} uint8", parameter="out")
    if n and bits < 8 * values.dtype.itemsize and int(values.max()) >> bits:
        raise ConfigurationError(f"a value is not below 2^{bits}", parameter="values")
    width = (bits + 7) // 8  # low bytes of each word that hold its bits
    word = word_dtype(bits) if values.dtype.itemsize <= word_dtype(bits).itemsize else values.dtype
    for start in range(0, n, CHUNK):
        chunk = np.ascontiguousarray(values[start : start + CHUNK], dtype=word.newbyteorder("<"))
        low = chunk.view(np.uint8).reshape(-1, word.itemsize)[:, :width]
        o0 = start * bits // 8
        o1 = packed_size(start + chunk.shape[0], bits)
        if bits % 8 == 0:
            out[o0:o1] = low.reshape(-1)
        else:
            stream = np.unpackbits(low, axis=1, bitorder="little")[:, :bits]
            out[o0:o1] = np.packbits(stream.reshape(-1), bitorder="little")


def pack_bits(values: npt.NDArray[Any], bits: int) -> bytes:
    """The packed stream of ``values`` (see the module docstring) as bytes."""
    n = values.shape[0] if isinstance(values, np.ndarray) and values.ndim == 1 else 0
    out = np.empty(packed_size(n, bits), dtype=np.uint8)
    pack_into(out, values, bits)
    return out.tobytes()


def unpack_bits(
    data: bytes | bytearray | memoryview, count: int, bits: int, *, offset: int = 0
) -> npt.NDArray[Any]:
    """``count`` values of ``bits`` bits from ``data[offset:]``, as :func:`word_dtype` words.

    The bytes from ``offset`` to the end must be exactly ``packed_size(count, bits)`` and the
    pad bits of the last byte zero; otherwise :class:`MalformedMessageError` says which.
    """
    bits = _check_bits(bits)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigurationError("must be an integer ≥ 0", parameter="count")
    raw = np.frombuffer(data, dtype=np.uint8)
    if not 0 <= offset <= raw.shape[0]:
        raise MalformedMessageError(f"packed values start at {offset}, past the end")
    raw = raw[offset:]
    need = packed_size(count, bits)
    if raw.shape[0] != need:
        raise MalformedMessageError(
            f"packed values have {raw.shape[0]} bytes, expected {need} ({count} × {bits} bits)"
        )
    pad = 8 * need - count * bits
    if pad and int(raw[-1]) >> (8 - pad):
        raise MalformedMessageError(f"the {pad} pad bits after the last {bits}-bit value are not 0")
    word = word_dtype(bits)
    width = (bits + 7) // 8
    out = np.zeros(count, dtype=word)
    lanes = out.view(np.uint8).reshape(-1, word.itemsize)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        part = raw[start * bits // 8 : packed_size(stop, bits)]
        if bits % 8 == 0:
            lanes[start:stop, :width] = part.reshape(-1, width)
        elif bits <= 57:  # an 8-byte window at each value's first byte holds all its bits
            window = np.zeros(part.shape[0] + 8, dtype=np.uint8)
            window[: part.shape[0]] = part
            at = np.arange(stop - start, dtype=np.int64) * bits
            rows = np.lib.stride_tricks.as_strided(window, (part.shape[0], 8), (1, 1))[at >> 3]
            words = np.ascontiguousarray(rows).view("<u8").reshape(-1)
            words >>= (at & 7).astype(np.uint64)
            words &= np.uint64((1 << bits) - 1)
            out[start:stop] = words
        else:
            stream = np.unpackbits(part, bitorder="little", count=(stop - start) * bits)
            fields = stream.reshape(-1, bits)
            padded = np.zeros((stop - start, 8 * width), dtype=np.uint8)
            padded[:, :bits] = fields
            lanes[start:stop, :width] = np.packbits(padded, axis=1, bitorder="little")
    return out
