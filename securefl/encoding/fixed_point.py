"""Floats → fixed point mod 2^b with stochastic rounding, and back (Bonawitz et al. 2017, §3;
unbiased rounding as in Kairouz et al. 2021, "The Distributed Discrete Gaussian", §4).

``encode`` clips each coordinate to ``[−c, c]`` (and counts how many it clipped), scales by
``w·2^f`` and rounds ``v`` up with probability ``v − ⌊v⌋`` using 52-bit uniforms from the
AES-CTR PRG keyed by a fresh ``secrets`` key (or an injected ``rng_key`` for known answers),
so ``E[encode] = w·x·2^f`` (bias < 2^-52 per coordinate). The integer is stored mod 2^b in the
plan's word type. ``decode_sum`` reads a sum as a signed b-bit integer and divides by 2^f;
the planner guarantees the sum never wraps, so the only error is rounding: < n·2^−f.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto.drbg import CtrDrbg
from securefl.crypto.prg import PRG_KEY_BYTES
from securefl.encoding.ring import RingPlan
from securefl.errors import ConfigurationError

__all__ = ["EncodedVector", "decode_sum", "encode", "error_bound"]

_SHIFT = np.uint64(12)
_ONE_BITS = np.uint64(0x3FF0000000000000)  # exponent field of 1.0: (w >> 12) | this ∈ [1, 2)
#: Coordinates per fused chunk (128 KiB of float64): the working set stays in L2.
_CHUNK_WORDS = 16384


@dataclass(frozen=True)
class EncodedVector:
    """An encoded update: ``values`` (plan dtype, each < 2^b) and how many were clipped.

    ``values`` is a plaintext update: it is left out of ``repr`` so it never reaches a log.
    """

    values: npt.NDArray[Any] = field(repr=False)
    clipped: int = 0


def _as_flat(flat: object) -> npt.NDArray[np.float64]:
    if not isinstance(flat, np.ndarray):
        raise ConfigurationError(
            f"expected a 1-D numpy array, got {type(flat).__name__}", parameter="flat"
        )
    if flat.ndim != 1:
        raise ConfigurationError(f"expected a 1-D array, got shape {flat.shape}", parameter="flat")
    if not (np.issubdtype(flat.dtype, np.floating) or np.issubdtype(flat.dtype, np.integer)):
        raise ConfigurationError(f"unsupported dtype {flat.dtype}", parameter="flat")
    return np.ascontiguousarray(flat, dtype=np.float64)


def _round_stochastic(
    x: npt.NDArray[np.float64],
    c: float,
    scale: float,
    plan: RingPlan,
    key: bytes,
    *,
    needs_clip: bool,
    max_abs: float,
) -> npt.NDArray[Any]:
    """``sround(clip(x)·scale) mod 2^b``, fused chunk by chunk so every pass stays in cache.

    Uniforms: the top 52 bits of each little-endian uint64 PRG word ``w`` give
    ``u = 1 + (w >> 12)·2^−52`` ∈ [1, 2); round up iff ``u < 1 + (v − ⌊v⌋)`` (the sum rounded
    to the 2^−52 grid), so P(up) = v − ⌊v⌋ to within 2^−52.
    """
    d = x.shape[0]
    m = plan.max_abs_int
    narrow = plan.dtype is np.uint32  # |value| ≤ M < 2^31 then: int32 is exact
    out = np.empty(d, dtype=np.int32 if narrow else np.int64)
    # Rounding is monotone, so fl(|x|·scale) ≤ fl(max_abs·scale): clamp only if that could pass M.
    clamp = math.floor(min(max_abs, c) * scale) + 1 > m
    drbg = CtrDrbg(key)  # PRG(key) of spec §4: AES-128-CTR from counter block 0
    n_chunk = _CHUNK_WORDS
    ks = bytearray(8 * n_chunk + 16)
    words_buf = np.frombuffer(ks, dtype="<u8", count=n_chunk)
    v_buf = np.empty(n_chunk, dtype=np.float64)
    f_buf = np.empty(n_chunk, dtype=np.float64)
    up_buf = np.empty(n_chunk, dtype=np.bool_)
    for start in range(0, d, n_chunk):
        stop = min(start + n_chunk, d)
        n = stop - start
        full = n == n_chunk
        v, fl, up, words = (
            (v_buf, f_buf, up_buf, words_buf)
            if full
            else (v_buf[:n], f_buf[:n], up_buf[:n], words_buf[:n])
        )
        if needs_clip:
            np.clip(x[start:stop], -c, c, out=v)
            v *= scale
        else:
            np.multiply(x[start:stop], scale, out=v)
        np.floor(v, out=fl)
        v -= fl  # fractional part in [0, 1)
        v += 1.0
        drbg.read_into(ks, 8 * n)  # ks has 16 spare bytes: one update_into, no copy
        words >>= _SHIFT
        words |= _ONE_BITS
        np.less(words.view("<f8"), v, out=up)
        fl += up
        if clamp:
            np.clip(fl, -m, m, out=fl)
        np.copyto(out[start:stop], fl, casting="unsafe")
    if narrow:
        values = out.view(np.uint32)
        if plan.bits < 32:
            values &= np.uint32(plan.mask)
    else:
        values = out.view(np.uint64)
        if plan.bits < 64:
            values &= np.uint64(plan.mask)
    return values


def encode(
    flat: npt.NDArray[Any],
    plan: RingPlan,
    *,
    weight: float = 1.0,
    rng_key: bytes | None = None,
) -> EncodedVector:
    """Clip to ±clip, scale by ``weight·2^f``, round stochastically, reduce mod 2^b.

    NaN/Inf → :class:`ConfigurationError`; ``0 ≤ weight ≤ plan.max_weight``.
    """
    x = _as_flat(flat)
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.floating):
        raise ConfigurationError("must be a real number", parameter="weight")
    w = float(weight)
    if not (np.isfinite(w) and 0.0 <= w <= plan.max_weight):
        raise ConfigurationError(
            f"must be finite and in [0, max_weight={plan.max_weight}]", parameter="weight"
        )
    if rng_key is None:
        rng_key = secrets.token_bytes(PRG_KEY_BYTES)
    elif len(rng_key) != PRG_KEY_BYTES:
        raise ConfigurationError(f"must be {PRG_KEY_BYTES} bytes", parameter="rng_key")
    d = x.shape[0]
    if d == 0:
        return EncodedVector(np.zeros(0, dtype=plan.dtype), 0)
    lo, hi = float(x.min()), float(x.max())  # NaN propagates through min/max
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        first = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ConfigurationError(
            f"{bad} NaN or infinite coordinates (first at index {first})", parameter="flat"
        )
    c = plan.clip
    clipped = 0
    if lo < -c or hi > c:
        clipped = int(np.count_nonzero(x > c)) + int(np.count_nonzero(x < -c))
    values = _round_stochastic(
        x, c, w * plan.scale, plan, rng_key, needs_clip=clipped > 0, max_abs=max(-lo, hi)
    )
    return EncodedVector(values, clipped)


def decode_sum(total: npt.NDArray[Any], plan: RingPlan) -> npt.NDArray[np.float64]:
    """Signed reading of a sum mod 2^b (values ≥ 2^(b−1) are negative), divided by 2^f."""
    if not isinstance(total, np.ndarray) or total.ndim != 1:
        raise ConfigurationError("total must be a 1-D numpy array", parameter="total")
    if total.dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise ConfigurationError(
            f"total dtype must be uint32/uint64, got {total.dtype}", parameter="total"
        )
    if total.size and plan.bits < 8 * total.dtype.itemsize and int(total.max()) > plan.mask:
        raise ConfigurationError(f"total has values ≥ 2^{plan.bits}", parameter="total")
    if plan.bits == 64:
        signed = total.astype(np.uint64).view(np.int64)
    else:
        half = np.int64(1 << (plan.bits - 1))
        signed = total.astype(np.int64)
        signed ^= half  # sign extension: (u XOR h) − h
        signed -= half
    out = signed.astype(np.float64)
    out *= 1.0 / plan.scale
    return out


def error_bound(plan: RingPlan, n: int) -> float:
    """Max |decoded sum − Σ wᵢ·clip(xᵢ)| for n ≤ plan.n_clients encodings: < n·2^−f.

    Each stochastic rounding moves a coordinate by less than one unit 2^−f; the planner rules
    out wrap-around. Clipping error is not included (it is deliberate and counted).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= plan.n_clients:
        raise ConfigurationError(f"must be an integer in [1, {plan.n_clients}]", parameter="n")
    return n * 2.0**-plan.frac_bits
