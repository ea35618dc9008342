"""Cryptographic randomness and exact discrete samplers for DP noise.

All randomness comes from :class:`CryptoRandom`, the AES-256-CTR DRBG of
:mod:`securefl.crypto.drbg` keyed from ``os.urandom`` — or from caller-given key bytes, for
reproducible tests and known-answer vectors only. numpy's generators are never used for noise.

The discrete Gaussian sampler is the exact rejection sampler of Canonne, Kamath, Steinke
("The Discrete Gaussian for Differential Privacy", NeurIPS 2020): Alg. 1 (Bernoulli(exp(−γ))
with rational γ), Alg. 2 (discrete Laplace) and Alg. 3 (discrete Gaussian from a discrete
Laplace proposal), vectorised over batches of proposals. No floating point is used anywhere
on the sampling path: Bernoulli(n/d) is "uniform integer in [0, d) < n".

Fast path (integer σ = s, 1 ≤ s ≤ 2^30): we use the proposal scale t = s (Alg. 3 is correct
for every t > 0; CKS pick ⌊σ⌋+1 only for speed, and t = σ is as fast). Then σ²/t = s is an
integer and the acceptance exponent is γ = (|Y| − s)²/(2s²): with w = |Y| − s every quantity is
an int64 as long as w² < 2^63 and 2s² < 2^63, which we check per element; the (astronomically
rare, probability < e^(−2^31/s)) proposals beyond that bound are finished in exact Python
integers. Non-integer σ uses the exact Python-rational path (slow; meant for small batches).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from securefl.crypto.drbg import CtrDrbg
from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_CHUNK = 1 << 16

#: Largest integer σ handled by the vectorised int64 path (2σ² < 2^63 with room to spare).
MAX_FAST_SIGMA = 1 << 30
_INT64_SQRT = math.isqrt((1 << 63) - 1)


class CryptoRandom:
    """AES-256-CTR keystream as a source of uniform integers (no modulo bias).

    ``key=None`` draws a fresh 32-byte key from ``os.urandom``; passing key bytes makes the
    stream reproducible and must be reserved for tests and known-answer vectors.
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(32)
        if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
            raise InvalidParameterError("must be 16, 24 or 32 bytes", parameter="key")
        self._drbg = CtrDrbg(key)

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        v.count("n", n)
        return self._drbg.read_bytes(n)

    def _words(self, n: int, dtype: type[np.unsignedinteger]) -> npt.NDArray[np.unsignedinteger]:
        if dtype is np.uint64:
            return self._drbg.uint64(n)
        return self._drbg.uint32(n)

    def uint64(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` independent uniform 64-bit words (little-endian keystream words)."""
        return self._drbg.uint64(n)

    def uint32(self, n: int) -> npt.NDArray[np.uint32]:
        """``n`` independent uniform 32-bit words (little-endian keystream words)."""
        return self._drbg.uint32(n)

    def bits(self, n: int) -> BoolArray:
        """``n`` fair coins."""
        raw = np.frombuffer(self.random_bytes((n + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw, count=n).astype(np.bool_)

    def _threshold_words(self, n: int, den: int) -> tuple[npt.NDArray[np.unsignedinteger], int]:
        """``n`` words uniform on [0, L) with L the largest multiple of ``den`` below the word
        range (rejected draws are redrawn: no bias), and L // den."""
        wide = den > 1 << 32
        span = 1 << (64 if wide else 32)
        per = span // den
        limit = per * den
        dtype = np.uint64 if wide else np.uint32
        r = self._words(n, dtype)  # a fresh array: safe to overwrite rejected entries
        if limit < span:
            bad = np.nonzero(r >= limit)[0]
            while bad.size:
                r[bad] = self._words(bad.size, dtype)
                bad = bad[r[bad] >= limit]
        return r, per

    def below(self, bound: int, n: int) -> IntArray:
        """``n`` uniform integers in [0, bound), 1 ≤ bound ≤ 2^63 (rejection, then reduction
        modulo ``bound`` of a word uniform on a multiple of ``bound``: no modulo bias)."""
        bound = v.count("bound", bound, minimum=1)
        if bound > 1 << 63:
            raise InvalidParameterError("must be <= 2**63", parameter="bound")
        if bound == 1:
            return np.zeros(n, dtype=np.int64)
        r, _ = self._threshold_words(n, bound)
        return (r % r.dtype.type(bound)).astype(np.int64)

    def bernoulli(self, num: IntArray | int, den: int, n: int) -> BoolArray:
        """``n`` exact Bernoulli(num/den) draws, 0 ≤ num ≤ den < 2^63 (num may be an array):
        a word uniform on [0, per·den) is below num·per with probability exactly num/den."""
        if den == 1:
            return np.broadcast_to(np.asarray(num) >= 1, (n,)).copy()
        r, per = self._threshold_words(n, den)
        if isinstance(num, int):
            return r.astype(np.uint64) < np.uint64(num * per)
        return r.astype(np.uint64) < num.astype(np.uint64) * np.uint64(per)

    def below_int(self, bound: int) -> int:
        """One uniform Python integer in [0, bound) for any bound ≥ 1 (exact fallback)."""
        if bound < 1:
            raise InvalidParameterError("must be >= 1", parameter="bound")
        nbits = (bound - 1).bit_length()
        while True:
            r = int.from_bytes(self.random_bytes((nbits + 7) // 8), "little")
            r >>= (8 * ((nbits + 7) // 8)) - nbits
            if r < bound:
                return r


def uniform_integers(
    size: int, low: int, high: int, *, rng: CryptoRandom | None = None
) -> IntArray:
    """``size`` uniform integers in [low, high) without modulo bias."""
    v.count("size", size)
    if high <= low:
        raise InvalidParameterError("must be > low", parameter="high")
    rng = rng or CryptoRandom()
    return rng.below(high - low, size) + np.int64(low)


# ----------------------------------------------------------------- CKS Algorithm 1 (vectorised)


def _bern_exp_frac(rng: CryptoRandom, num: IntArray, den: int) -> BoolArray:
    """Bernoulli(exp(−num/den)) per element, 0 ≤ num ≤ den < 2^63 (CKS Alg. 1, γ ∈ [0, 1]).

    K ← 1; while Bernoulli(γ/K): K ← K + 1; return [K odd]. Bernoulli(num/(den·K)) is one
    threshold draw while den·K < 2^63, else [J = 0] ∧ [V < num] (J uniform in [0, K), V uniform
    in [0, den)), so no overflow for any K.
    """
    out = np.empty(num.size, dtype=np.bool_)
    idx = np.arange(num.size)
    cur = num
    k = 1
    while idx.size:
        if den * k < 1 << 63:
            a = rng.bernoulli(cur, den * k, idx.size)
        else:
            a = rng.bernoulli(1, k, idx.size) & rng.bernoulli(cur, den, idx.size)
        out[idx[~a]] = k % 2 == 1
        idx, cur = idx[a], cur[a]
        k += 1
    return out


def _bern_exp_one(rng: CryptoRandom, n: int) -> BoolArray:
    """``n`` draws of Bernoulli(exp(−1)) (CKS Alg. 1 with γ = 1: Bernoulli(1/K))."""
    out = np.empty(n, dtype=np.bool_)
    idx = np.arange(n)
    k = 2  # Bernoulli(1/1) always succeeds
    while idx.size:
        a = rng.bernoulli(1, k, idx.size)
        out[idx[~a]] = k % 2 == 1
        idx = idx[a]
        k += 1
    return out


def _bern_exp_int(rng: CryptoRandom, counts: IntArray) -> BoolArray:
    """Bernoulli(exp(−c)) for non-negative integers c: c independent Bernoulli(exp(−1)) all 1."""
    ok = np.ones(counts.size, dtype=np.bool_)
    idx = np.nonzero(counts > 0)[0]
    left = counts[idx].copy()
    while idx.size:
        b = _bern_exp_one(rng, idx.size)
        ok[idx[~b]] = False
        left = left - 1
        keep = b & (left > 0)
        idx, left = idx[keep], left[keep]
    return ok


def _geometric_exp1(rng: CryptoRandom, n: int) -> IntArray:
    """V with P(V ≥ k) = e^(−k): the number of Bernoulli(exp(−1)) successes before a failure."""
    out = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    while idx.size:
        b = _bern_exp_one(rng, idx.size)
        idx = idx[b]
        out[idx] += 1
    return out


# ----------------------------------------------------------------- certified fast Bernoulli
#
# u ~ U[0, 1) is drawn lazily: its first 64 bits r come from the keystream, further bits only
# if needed. Bernoulli(exp(−γ)) = [u < exp(−γ)]. For γ < 45 we compare r with float64 bounds
# p·(1 ∓ 2^−20)·2^64, where p = exp(−γ) in float64: float64 evaluation (γ from int64 num/den,
# then exp) is accurate to < 2^−40 relative, 2^20 times inside the margin, so a decision
# outside the margin is the decision an exact computation would make. For γ ≥ 45,
# exp(−γ) < 2^−64, so r ≥ 1 decides "reject". Draws inside the margin (probability
# ≈ 2^−19) are settled exactly by :func:`_exact_less_than_exp` in Python Decimal/Fraction
# arithmetic with a rigorous error bound, extending u by 64 fresh bits at a time. The output
# distribution is therefore exactly Bernoulli(exp(−γ)).

_MARGIN = 2.0**-20
_TWO64 = 2.0**64


class _LazyUniform:
    """u ∈ [0, 1) known to its first ``bits`` bits (``top``); further bits drawn on demand."""

    def __init__(self, r: int, rng: CryptoRandom) -> None:
        self.top, self.bits, self.rng = r, 64, rng

    def bounds(self) -> tuple[Fraction, Fraction]:
        return Fraction(self.top, 1 << self.bits), Fraction(self.top + 1, 1 << self.bits)

    def extend(self) -> None:
        self.top = (self.top << 64) | int(self.rng.uint64(1)[0])
        self.bits += 64


def _exp_bounds(gamma: Fraction, prec: int) -> tuple[Fraction, Fraction]:
    """Rigorous rational bounds on exp(−γ) from a ``prec``-digit Decimal computation."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = prec
        g = Decimal(gamma.numerator) / Decimal(gamma.denominator)
        p = (-g).exp()
        # |p − exp(−γ)| ≤ (2γ + 2)·10^(1−prec) (correctly rounded ÷ and exp); take 10× that.
        err = (g + 2) * Decimal(10) ** (2 - prec)
        return Fraction(p - err), Fraction(p + err)


def _lazy_less_than_exp(u: _LazyUniform, gamma: Fraction) -> bool:
    """Exactly decide u < exp(−γ) (never equal: exp(−γ) is irrational for rational γ > 0)."""
    if gamma == 0:
        return True
    prec = 40
    while True:
        p_lo, p_hi = _exp_bounds(gamma, prec)
        u_lo, u_hi = u.bounds()
        if u_hi <= p_lo:
            return True
        if u_lo >= p_hi:
            return False
        u.extend()
        prec += 20


def _exact_less_than_exp(r: int, gamma: Fraction, rng: CryptoRandom) -> bool:
    """Is u < exp(−γ), where u's first 64 bits are ``r`` (more bits drawn on demand)?"""
    return _lazy_less_than_exp(_LazyUniform(r, rng), gamma)


def _bern_exp_fast(rng: CryptoRandom, num: IntArray, den: int) -> BoolArray:
    """Exact Bernoulli(exp(−num/den)) per element (num ≥ 0 int64, 1 ≤ den < 2^63).

    Compares the top 53 bits r₅₃ of u with float64 bounds: accept iff r₅₃ + 1 ≤ p(1−m)2^53,
    reject iff r₅₃ ≥ p(1+m)2^53 (m = 2^−20); both sides are exact floats up to one rounding.
    """
    r = rng.uint64(num.size)
    r53 = (r >> np.uint64(11)).view(np.int64).astype(np.float64)
    with np.errstate(under="ignore"):
        p = np.exp(-(num.astype(np.float64) / float(den)))
    big = (num // np.int64(den)) >= 45
    accept = (r53 + 1.0 <= p * _LO53) & ~big
    reject = np.where(big, r53 >= 1.0, r53 >= p * _HI53)
    out = accept
    for i in np.nonzero(~(accept | reject))[0]:
        out[i] = _exact_less_than_exp(int(r[i]), Fraction(int(num[i]), den), rng)
    return out


_LO53 = (1.0 - _MARGIN) * 2.0**53
_HI53 = (1.0 + _MARGIN) * 2.0**53

#: Largest σ for which per-σ threshold tables (16·11σ bytes) are built.
_TABLE_MAX_SIGMA = 1 << 17


def _threshold_table(
    num: IntArray, den: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Integer thresholds for Bernoulli(exp(−num/den)) on a 64-bit uniform r:
    accept iff r < LO (then u < (r+1)/2^64 ≤ LO/2^64 < e^(−γ)), reject iff r > HIm1 (then
    u ≥ r/2^64 ≥ HI/2^64 > e^(−γ)); LO, HI = p·(1 ∓ 2^−20)·2^64 from float64 p (error
    < 2^−40, far inside the margin), HI ≥ 2^64 meaning "never reject"."""
    with np.errstate(under="ignore"):
        p = np.exp(-(num.astype(np.float64) / float(den)))
    lo = np.floor(p * ((1.0 - _MARGIN) * _TWO64)).astype(np.uint64)
    hi = np.ceil(p * ((1.0 + _MARGIN) * _TWO64))
    him1 = np.where(hi >= _TWO64, np.float64(np.nextafter(_TWO64, 0)), np.maximum(hi, 1.0) - 1.0)
    him1_u = him1.astype(np.uint64)
    him1_u[hi >= _TWO64] = np.iinfo(np.uint64).max
    return lo, him1_u


def _bern_exp_table(
    rng: CryptoRandom,
    idx: IntArray,
    lo: npt.NDArray[np.uint64],
    him1: npt.NDArray[np.uint64],
    gamma_of: Callable[[int], Fraction],
) -> BoolArray:
    """Exact Bernoulli(exp(−γ(idx))) with precomputed thresholds (exact fallback in the gap)."""
    r = rng.uint64(idx.size)
    out = r < lo[idx]
    amb = np.nonzero(~out & (r <= him1[idx]))[0]
    for i in amb:
        out[i] = _exact_less_than_exp(int(r[i]), gamma_of(int(idx[i])), rng)
    return out


@functools.lru_cache(maxsize=4)
def _tables(s: int) -> tuple[npt.NDArray[np.uint64], ...]:
    """Threshold tables for σ = t = s: DLap step exp(−u/s), u < s; Alg. 3 acceptance
    exp(−(x − s)²/(2s²)) for x ≤ 11s (beyond, γ > 45 and exp(−γ) < 2^−64)."""
    u = np.arange(s, dtype=np.int64)
    x = np.arange(11 * s + 1, dtype=np.int64)
    lo_u, hi_u = _threshold_table(u, s)
    lo_x, hi_x = _threshold_table((x - s) * (x - s), 2 * s * s)
    return lo_u, hi_u, lo_x, hi_x


def _e1_bounds() -> tuple[int, int]:
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        scaled = int(Decimal(-1).exp() * Decimal(2**64))  # floor, error ≪ 1
    return scaled - 1, scaled + 2  # r < lo ⇒ u < e⁻¹; r ≥ hi ⇒ u > e⁻¹


_E1_LO, _E1_HI = _e1_bounds()


def _bern_exp_one_fast(rng: CryptoRandom, n: int) -> BoolArray:
    """``n`` exact Bernoulli(exp(−1)) draws (constant thresholds, exact fallback in between)."""
    r = rng.uint64(n)
    out = r < np.uint64(_E1_LO)
    for i in np.nonzero(~out & (r < np.uint64(_E1_HI)))[0]:
        out[i] = _exact_less_than_exp(int(r[i]), Fraction(1), rng)
    return out


def _geometric_exp1_fast(rng: CryptoRandom, n: int) -> IntArray:
    out = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    while idx.size:
        idx = idx[_bern_exp_one_fast(rng, idx.size)]
        out[idx] += 1
    return out


# ----------------------------------------------------------------- discrete Laplace (Alg. 2)


_INV_MARGIN = 2.0**-30


def _geometric_inversion(rng: CryptoRandom, n: int, t: int) -> tuple[IntArray, BoolArray]:
    """``n`` exact draws of X ∈ ℕ with P(X ≥ x) = exp(−x/t), by certified inversion.

    X = #{x ≥ 1 : u < e^(−x/t)} = ⌈L⌉ − 1 with L = −t·ln u. With u ∈ [a, b) known from 53 bits,
    L ∈ (−t ln b, −t ln a]; widened by a relative 2^−30 (float64 log is accurate to 2^−50) the
    interval certifies X when it contains no integer. Otherwise (probability ≈ t·2^−29, or
    u < 2^−53) X is found exactly by comparing the lazily extended u with e^(−x/t).

    Also returns one fair coin per draw: the lowest bit of r where X was certified from the
    top 53 bits alone (so it is independent of X), a fresh bit elsewhere.
    """
    r = rng.uint64(n)
    r53 = (r >> np.uint64(11)).view(np.int64).astype(np.float64)
    scale = float(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        # −t ln b ≥ −t ln a − t/r₅₃ since ln(b/a) = ln(1 + 1/r₅₃) ≤ 1/r₅₃: one log suffices.
        # r₅₃ = 0 gives inf/nan bounds, which are never "certain" (exact path).
        l_hi = np.log(r53 * 2.0**-53)
        l_hi *= -scale * (1.0 + _INV_MARGIN)
        l_lo = l_hi * ((1.0 - _INV_MARGIN) / (1.0 + _INV_MARGIN))
        l_lo -= (scale * (1.0 + _INV_MARGIN)) / r53
        f_lo = np.floor(l_lo)
        certain = f_lo == np.floor(l_hi)
        certain &= l_hi != f_lo
        out = np.where(certain, f_lo, 0.0).astype(np.int64)
    coin = (r & np.uint64(1)).astype(np.bool_)
    unsure = np.nonzero(~certain)[0]
    if unsure.size:
        coin[unsure] = rng.bits(unsure.size)
    for i in unsure:
        u = _LazyUniform(int(r[i]), rng)
        start = float(f_lo[i])
        x = int(start) if math.isfinite(start) and start > 0 else 0  # X ≥ ⌊L_lo⌋ holds
        while _lazy_less_than_exp(u, Fraction(x + 1, t)):
            x += 1
        out[i] = x
    return out, coin


def _dlap_magnitude(rng: CryptoRandom, n: int, t: int, fast: bool) -> IntArray:
    """Up to ``n`` draws of X ∈ ℕ with P(X = x) ∝ exp(−x/t) (Alg. 2 steps 1–5, s = 1)."""
    if fast:
        return _geometric_inversion(rng, n, t)[0]
    u = rng.below(t, n)
    if fast and t <= _TABLE_MAX_SIGMA:
        lo, him1 = _tables(t)[:2]
        keep = _bern_exp_table(rng, u, lo, him1, lambda i: Fraction(i, t))
    elif fast:
        keep = _bern_exp_fast(rng, u, t)
    else:
        keep = _bern_exp_frac(rng, u, t)
    u = u[keep]
    vv = _geometric_exp1_fast(rng, u.size) if fast else _geometric_exp1(rng, u.size)
    ok = vv <= ((1 << 62) // t) - 1  # always true in practice (P < e^(−2^62/t)); stay in int64
    return u[ok] + np.int64(t) * vv[ok]


def _dlap_signed(rng: CryptoRandom, n: int, t: int, fast: bool = True) -> IntArray:
    """Up to ``n`` discrete Laplace draws (Alg. 2 steps 6–8: random sign, reject "−0")."""
    x: IntArray
    b: BoolArray
    if fast:
        x, b = _geometric_inversion(rng, n, t)
    else:
        x = _dlap_magnitude(rng, n, t, fast)
        b = rng.bits(x.size)
    keep = ~(b & (x == 0))
    x, b = x[keep], b[keep]
    np.negative(x, out=x, where=b)
    return x


def discrete_laplace(size: int, scale: int, *, rng: CryptoRandom | None = None) -> IntArray:
    """``size`` exact draws of the discrete Laplace P(y) ∝ exp(−|y|/scale), integer scale ≥ 1."""
    v.count("size", size)
    t = v.count("scale", scale, minimum=1)
    rng = rng or CryptoRandom()
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        y = _dlap_signed(rng, int(need * 1.05) + 16, t)[:need]
        out[filled : filled + y.size] = y
        filled += y.size
    return out


# ----------------------------------------------------------------- discrete Gaussian (Alg. 3)


def _dgauss_fast(rng: CryptoRandom, n: int, s: int) -> IntArray:
    """Fused fast path of Alg. 3 for integer σ = t = s ≤ 2^17 (tables cached per s)."""
    x, neg = _geometric_inversion(rng, n, s)
    lo, him1 = _tables(s)[2:]
    two_s2 = 2 * s * s
    inside = x <= 11 * s
    idx = np.minimum(x, 11 * s)
    r = rng.uint64(n)
    acc = r < lo[idx]
    acc &= inside
    acc &= ~(neg & (x == 0))  # Alg. 2: reject the "−0" draw
    amb = np.nonzero(~acc & (r <= him1[idx]) & inside & ~(neg & (x == 0)))[0]
    for i in amb:
        acc[i] = _exact_less_than_exp(int(r[i]), Fraction((int(x[i]) - s) ** 2, two_s2), rng)
    for i in np.nonzero(~inside)[0]:  # γ > 45: exact (almost surely a rejection)
        acc[i] = _bern_exp_rational(rng, Fraction((int(x[i]) - s) ** 2, two_s2))
    np.negative(x, out=x, where=neg)
    return x[acc]


def _dgauss_batch_int(rng: CryptoRandom, n: int, s: int, fast: bool = True) -> IntArray:
    """Accepted samples of N_Z(0, s²) from ``n`` proposals, integer s, proposal scale t = s.

    Acceptance Bernoulli(exp(−(|Y| − s)²/(2s²))) with γ = w²/(2s²), w = |Y| − s, in int64
    while w² < 2^63 (checked per element); beyond that, exact Python integers.
    """
    if fast and s <= _TABLE_MAX_SIGMA:
        return _dgauss_fast(rng, n, s)
    y = _dlap_signed(rng, n, s, fast)
    x = np.abs(y)
    two_s2 = 2 * s * s
    if fast and s <= _TABLE_MAX_SIGMA:
        lo, him1 = _tables(s)[2:]
        inside = x <= 11 * s
        gamma_of: Callable[[int], Fraction] = lambda i: Fraction((i - s) * (i - s), two_s2)  # noqa: E731
        if bool(inside.all()):
            return y[_bern_exp_table(rng, x, lo, him1, gamma_of)]
        acc = np.zeros(y.size, dtype=np.bool_)
        ids = np.nonzero(inside)[0]
        acc[ids] = _bern_exp_table(rng, x[ids], lo, him1, gamma_of)
        for i in np.nonzero(~inside)[0]:  # γ > 45: exact (almost surely a rejection)
            acc[i] = _bern_exp_rational(rng, Fraction((int(x[i]) - s) ** 2, two_s2))
        return y[acc]
    small = x <= s + _INT64_SQRT
    acc = np.zeros(y.size, dtype=np.bool_)
    ids = np.nonzero(small)[0]
    w = x[ids] - np.int64(s)
    nn = w * w
    if fast:
        acc[ids] = _bern_exp_fast(rng, nn, two_s2)
    else:
        whole = nn // np.int64(two_s2)
        frac = nn - whole * np.int64(two_s2)
        ok = _bern_exp_int(rng, whole)
        sel = np.nonzero(ok)[0]
        if sel.size:
            ok[sel] = _bern_exp_frac(rng, frac[sel], two_s2)
        acc[ids] = ok
    for i in np.nonzero(~small)[0]:  # exact Python-int fallback (w² ≥ 2^63)
        acc[i] = _bern_exp_rational(rng, Fraction((int(x[i]) - s) ** 2, two_s2))
    return y[acc]


def _bern_exp_rational(rng: CryptoRandom, gamma: Fraction) -> bool:
    """Exact Bernoulli(exp(−γ)) for any rational γ ≥ 0: [u < exp(−γ)] decided exactly."""
    return _exact_less_than_exp(int(rng.uint64(1)[0]), gamma, rng)


def _dgauss_exact_rational(rng: CryptoRandom, size: int, sigma2: Fraction) -> IntArray:
    """Reference path for any rational σ² (CKS Alg. 3 verbatim in Python integers)."""
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1
    out = np.empty(size, dtype=np.int64)
    i = 0
    while i < size:
        proposal = _dlap_signed(rng, 1, t)
        if proposal.size == 0:
            continue
        y = int(proposal[0])
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if _bern_exp_rational(rng, gamma):
            out[i] = y
            i += 1
    return out


def discrete_gaussian(
    size: int,
    sigma: float | int | Fraction,
    *,
    rng: CryptoRandom | None = None,
    method: str = "fast",
) -> IntArray:
    """``size`` exact draws of the discrete Gaussian N_Z(0, σ²): P(y) ∝ exp(−y²/(2σ²)).

    Integer σ ≤ 2^30 takes the vectorised path; ``method="fast"`` (default) decides each
    Bernoulli(exp(−γ)) by the certified float comparison with exact fallback (see above),
    ``method="integer"`` runs CKS Alg. 1 verbatim in int64 (slower reference; both are exact).
    Any other σ (the exact rational value of the float) takes the exact Python path.
    Mechanisms round σ *up* to an integer (:func:`round_sigma_up`) to hit the fast path.
    """
    v.count("size", size)
    if method not in ("fast", "integer"):
        raise InvalidParameterError("must be 'fast' or 'integer'", parameter="method")
    if isinstance(sigma, Fraction):
        if sigma <= 0:
            raise InvalidParameterError("must be > 0", parameter="sigma")
        frac_sigma = sigma
    else:
        frac_sigma = Fraction(v.positive("sigma", sigma))
    rng = rng or CryptoRandom()
    if frac_sigma.denominator == 1 and frac_sigma.numerator <= MAX_FAST_SIGMA:
        s = frac_sigma.numerator
        out = np.empty(size, dtype=np.int64)
        filled = 0
        # Alg. 3 with t = σ accepts a proposal w.p. ≈ 0.76 (the integer path's DLap step also
        # rejects ≈ 37 %): draw a little more than expected, top up if short. Chunks of 2^16
        # keep the working set in cache (≈ 2× faster than one pass over 2^20).
        factor = 1.35 if method == "fast" else 2.15
        while filled < size:
            need = min(size - filled, _CHUNK)
            y = _dgauss_batch_int(rng, int(need * factor) + 64, s, method == "fast")[:need]
            out[filled : filled + y.size] = y
            filled += y.size
        return out
    return _dgauss_exact_rational(rng, size, frac_sigma**2)


def round_sigma_up(sigma: float) -> int:
    """The integer σ used on a grid: ⌈σ⌉ (more noise never weakens the guarantee)."""
    s = v.positive("sigma", sigma)
    return max(1, math.ceil(s))


def discrete_gaussian_pmf(
    values: npt.ArrayLike, sigma: float, *, tail: int | None = None
) -> npt.NDArray[np.float64]:
    """P(Y = y) of N_Z(0, σ²) (normaliser summed over |y| ≤ tail, default 40σ + 10)."""
    s = v.positive("sigma", sigma)
    bound = int(tail if tail is not None else 40 * s + 10)
    support = np.arange(-bound, bound + 1, dtype=np.float64)
    norm = float(np.exp(-(support**2) / (2 * s * s)).sum())
    y = np.asarray(values, dtype=np.float64)
    return np.exp(-(y**2) / (2 * s * s)) / norm
