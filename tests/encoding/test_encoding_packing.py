"""Bit-packing of ring elements (wire version 2, ``protocols/secagg.md`` §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.encoding.packing import CHUNK, pack_bits, packed_size, unpack_bits, word_dtype
from securefl.errors import ConfigurationError, MalformedMessageError

#: 16: fixed-point KATs; 24: DDGauss under distributed DP (engine bench); 20/31/32/33/64: edges
RING_WIDTHS = (1, 7, 8, 12, 16, 20, 24, 31, 32, 33, 48, 63, 64)


def _vectors(bits: int) -> st.SearchStrategy[np.ndarray]:
    dtype = word_dtype(bits)
    return st.lists(st.integers(0, (1 << bits) - 1), max_size=70).map(
        lambda xs: np.array(xs, dtype=dtype)
    )


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bits=st.sampled_from(RING_WIDTHS))
def test_round_trip_and_reference_layout(data: st.DataObject, bits: int) -> None:
    """unpack ∘ pack = id, and the bytes are the little-endian integer Σ v_i·2^(i·b)."""
    values = data.draw(_vectors(bits))
    blob = pack_bits(values, bits)
    assert len(blob) == packed_size(values.size, bits) == (values.size * bits + 7) // 8
    reference = sum(int(v) << (i * bits) for i, v in enumerate(values.tolist()))
    assert int.from_bytes(blob, "little") == reference
    back = unpack_bits(blob, values.size, bits)
    assert back.dtype == word_dtype(bits) and np.array_equal(back, values)


@pytest.mark.parametrize("bits", [12, 16, 24, 33])
def test_round_trip_across_chunks(bits: int) -> None:
    """Vectors longer than one chunk, with a ragged last chunk, pack like one stream."""
    n = 2 * CHUNK + 13
    rng = np.random.default_rng(bits)
    values = (rng.integers(0, 1 << 62, n, dtype=np.uint64) >> np.uint64(62 - bits)).astype(
        word_dtype(bits)
    ) & word_dtype(bits).type((1 << bits) - 1)
    blob = pack_bits(values, bits)
    assert np.array_equal(unpack_bits(blob, n, bits), values)
    head = pack_bits(values[:CHUNK], bits)  # a chunk boundary is a byte boundary
    assert blob[: len(head)] == head


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bits=st.sampled_from(RING_WIDTHS))
def test_wrong_length_and_pad_bits_rejected(data: st.DataObject, bits: int) -> None:
    values = data.draw(_vectors(bits).filter(lambda v: v.size > 0))
    blob = pack_bits(values, bits)
    for bad in (blob[:-1], blob + b"\x00", b""):
        with pytest.raises(MalformedMessageError, match="packed values have"):
            unpack_bits(bad, values.size, bits)
    pad = 8 * len(blob) - values.size * bits
    if pad:
        flip = data.draw(st.integers(8 - pad, 7))
        forged = blob[:-1] + bytes([blob[-1] | (1 << flip)])
        with pytest.raises(MalformedMessageError, match="pad bits"):
            unpack_bits(forged, values.size, bits)


@pytest.mark.parametrize("bits", [1, 12, 24, 32, 33])
def test_encoder_refuses_out_of_range_values(bits: int) -> None:
    """A value ≥ 2^b would be truncated silently: the packer refuses (local bug, typed)."""
    big = np.array([0, 1 << bits], dtype=np.uint64)
    with pytest.raises(ConfigurationError, match=f"below 2\\^{bits}"):
        pack_bits(big, bits)
    with pytest.raises(ConfigurationError):
        pack_bits(np.array([-1, 2], dtype=np.int64), bits)
    with pytest.raises(ConfigurationError, match="bits"):
        pack_bits(np.zeros(3, dtype=np.uint32), 65)


def test_offset_reads_the_tail_of_a_message() -> None:
    values = np.arange(9, dtype=np.uint32)
    blob = b"HEAD" + pack_bits(values, 5)
    assert np.array_equal(unpack_bits(blob, 9, 5, offset=4), values)
    with pytest.raises(MalformedMessageError):
        unpack_bits(blob, 9, 5, offset=3)
