"""t-of-n Shamir secret sharing over GF(p), p = 2^256 + 297 (Shamir 1979; Bonawitz et al. §4).

p is the smallest prime above 2^256, so any 32-byte secret (self-mask seed b_u, X25519 mask
key s_u^SK) is one field element. The share of holder ``i`` is ``f(i + 1)`` (x = 0 would reveal
the secret), encoded as 33 big-endian bytes; the holder id travels beside it, not inside.
Polynomial coefficients are 48-byte (384-bit) strings reduced mod p: statistical distance from
uniform ≤ 2^-127 each. Randomness is drawn from ``secrets`` unless injected (known answers).
Reconstruction uses Lagrange interpolation at 0 with coefficients cached per holder set, so a
server unmasking many clients with the same responders pays the O(t²) setup once; inverses are
batched (Montgomery's trick: one modular inversion per set).

Shares of one secret are a Reed–Solomon codeword of length s and dimension t (McEliece and
Sarwate 1981), so s > t shares carry redundancy: :func:`reconstruct_robust` checks that every
surplus share lies on the polynomial (fast path), and only if one does not, decodes with Gao's
algorithm (Gao 2003), which corrects up to ⌊(s − t)/2⌋ wrong shares and names their holders.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from securefl.crypto.errors import (
    InsufficientSharesError,
    InvalidShareError,
    UncorrectableSharesError,
)
from securefl.errors import ConfigurationError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33
COEFF_RANDOM_BYTES = 48
MAX_HOLDER_ID = 2**32 - 2
_LAZY = 16  # reduce mod p every 16 small factors (≤ 257 + 16·33 bits in between)

__all__ = [
    "COEFF_RANDOM_BYTES",
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "Recovery",
    "UncorrectableSharesError",
    "reconstruct",
    "reconstruct_robust",
    "split",
]


def _check_id(holder: object) -> int:
    if isinstance(holder, bool) or not isinstance(holder, int) or not 0 <= holder <= MAX_HOLDER_ID:
        raise ConfigurationError(
            f"holder id must be an integer in [0, {MAX_HOLDER_ID}]", parameter="holders"
        )
    return holder


def split(
    secret: bytes,
    threshold: int,
    holders: Sequence[int],
    *,
    randomness: bytes | None = None,
) -> dict[int, bytes]:
    """Share a 32-byte secret so that any ``threshold`` holders recover it and fewer learn nothing.

    ``randomness`` (for known-answer vectors only) must be ``(threshold-1)·48`` bytes.
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) != SECRET_BYTES:
        raise ConfigurationError(f"secret must be {SECRET_BYTES} bytes", parameter="secret")
    ids = [_check_id(h) for h in holders]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("holder ids must be distinct", parameter="holders")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigurationError("threshold must be a positive integer", parameter="threshold")
    if threshold > len(ids):
        raise ConfigurationError(
            f"threshold {threshold} exceeds the number of holders {len(ids)}", parameter="threshold"
        )
    need = (threshold - 1) * COEFF_RANDOM_BYTES
    if randomness is None:
        randomness = secrets.token_bytes(need)
    elif len(randomness) != need:
        raise ConfigurationError(f"randomness must be {need} bytes", parameter="randomness")
    coeffs = [int.from_bytes(secret, "big")]
    for j in range(threshold - 1):
        chunk = randomness[j * COEFF_RANDOM_BYTES : (j + 1) * COEFF_RANDOM_BYTES]
        coeffs.append(int.from_bytes(chunk, "big") % PRIME)
    out: dict[int, bytes] = {}
    top = coeffs[::-1]
    for holder in ids:
        x = holder + 1
        y = 0
        for j, c in enumerate(top):  # Horner, reducing lazily: x < 2^33 adds ≤ 33 bits a step
            y = y * x + c
            if j % _LAZY == _LAZY - 1:
                y %= PRIME
        out[holder] = (y % PRIME).to_bytes(SHARE_BYTES, "big")
    return out


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """λ_i = Π_{j≠i} x_j / (x_j − x_i) mod p, cached per (sorted) x set."""
    total = _prod_mod(xs)
    denoms = [
        _prod_mod([xi, *(xj - xi for j, xj in enumerate(xs) if j != i)]) for i, xi in enumerate(xs)
    ]
    return tuple(total * inv % PRIME for inv in _batch_inverse(denoms))


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses mod p of non-zero ``values`` with one modular inversion (Montgomery's trick)."""
    prefix = []
    acc = 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % PRIME
    inv = pow(acc, -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out


def _prod_mod(values: Iterable[int]) -> int:
    """Product mod p of small integers (|v| < 2^33), reducing only every few factors."""
    acc = 1
    for j, v in enumerate(values):
        acc *= v
        if j % _LAZY == _LAZY - 1:
            acc %= PRIME
    return acc % PRIME


def _parse(
    shares: Mapping[int, bytes] | Iterable[tuple[int, bytes]], *, erasures: set[int] | None = None
) -> dict[int, int]:
    """holder → y. An encoding ≥ p raises, or with ``erasures`` is recorded there and skipped."""
    items = shares.items() if isinstance(shares, Mapping) else shares
    parsed: dict[int, int] = {}
    seen: set[int] = set()
    for holder, share in items:
        if isinstance(holder, bool) or not isinstance(holder, int):
            raise InvalidShareError("share holder id is not an integer")
        if not 0 <= holder <= MAX_HOLDER_ID:
            raise InvalidShareError(f"share holder id {holder} out of range")
        if holder in seen:
            raise InvalidShareError(f"duplicate share for holder {holder}")
        seen.add(holder)
        if not isinstance(share, bytes | bytearray) or len(share) != SHARE_BYTES:
            raise InvalidShareError(f"share of holder {holder} is not {SHARE_BYTES} bytes")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            if erasures is None:
                raise InvalidShareError(f"share of holder {holder} is not a field element")
            erasures.add(holder)
            continue
        parsed[holder] = y
    return parsed


def _weights(xs: Sequence[int]) -> list[int]:
    """Barycentric weights w_i = 1 / Π_{j≠i} (x_i − x_j) mod p (distinct x)."""
    return _batch_inverse([math.prod([xi - xj for xj in xs if xj != xi]) % PRIME for xi in xs])


def _is_codeword(points: dict[int, int], ids: Sequence[int], t: int) -> bool:
    """True if the shares of ``ids`` all lie on one polynomial of degree < t.

    The parity checks of the Reed–Solomon code (its dual is again one): with barycentric
    weights w_i = 1 / Π_{j≠i} (x_i − x_j), Σ_i w_i x_i^j y_i = 0 for j < s − t exactly when
    the s points lie on a polynomial of degree < t (Σ_i w_i h(x_i) is the x^{s−1} coefficient
    of the interpolant of h). One batched inversion and s·(s − t) small multiplications, so
    the honest path costs about as much as the interpolation itself.
    """
    xs = [h + 1 for h in ids]
    terms = [w * points[h] % PRIME for w, h in zip(_weights(xs), ids, strict=True)]
    for _ in range(len(ids) - t):
        if sum(terms) % PRIME:
            return False
        terms = [c * x % PRIME for c, x in zip(terms, xs, strict=True)]
    return True


def _to_secret(value: int) -> bytes:
    if value >= 2 ** (8 * SECRET_BYTES):
        raise InvalidShareError("shares do not interpolate to a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def _check_threshold(threshold: object) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigurationError("threshold must be a positive integer", parameter="threshold")
    return threshold


def _at_zero(points: dict[int, int], chosen: Sequence[int]) -> int:
    lambdas = _lagrange_at_zero(tuple(h + 1 for h in chosen))
    return sum(lam * points[h] for lam, h in zip(lambdas, chosen, strict=True)) % PRIME


def reconstruct(
    shares: Mapping[int, bytes] | Iterable[tuple[int, bytes]],
    threshold: int,
    *,
    check_consistency: bool = False,
) -> bytes:
    """Recover the 32-byte secret from at least ``threshold`` shares (holder id → share).

    Uses the ``threshold`` shares of the smallest ids. With ``check_consistency`` every extra
    share must lie on the same polynomial (detects a corrupted share when > t are available).
    A result ≥ 2^256 cannot be a 32-byte secret → :class:`InvalidShareError`. A server facing
    peers should call :func:`reconstruct_robust`.
    """
    t = _check_threshold(threshold)
    parsed = _parse(shares)
    if len(parsed) < t:
        raise InsufficientSharesError(f"{len(parsed)} shares available, threshold is {t}")
    ids = sorted(parsed)
    if check_consistency and not _is_codeword(parsed, ids, t):
        coeffs = _gao_decode([h + 1 for h in ids], [parsed[h] for h in ids], t)
        off = [h for h in ids if coeffs is None or _horner(coeffs, h + 1) != parsed[h]]
        which = off[0] if len(off) == 1 else off[:8]
        raise InvalidShareError(f"share of holder {which} is inconsistent with the others")
    return _to_secret(_at_zero(parsed, ids[:t]))


@dataclass(frozen=True)
class Recovery:
    """A reconstructed secret and the holders whose shares were wrong (corrected around)."""

    secret: bytes
    inconsistent: frozenset[int]


def reconstruct_robust(
    shares: Mapping[int, bytes] | Iterable[tuple[int, bytes]], threshold: int
) -> Recovery:
    """Recover the secret from s ≥ t shares of which up to ⌊(s − t)/2⌋ may be wrong.

    Fast path: all s shares lie on the polynomial through the t smallest ids. Otherwise Gao
    decoding (Gao 2003) finds the unique polynomial of degree < t that agrees with all but at
    most ⌊(s − t)/2⌋ shares and names the others; a share encoding ≥ p counts as erased (its
    holder is named, the bound is then ⌊(s − ε − t)/2⌋). If no such polynomial exists →
    :class:`UncorrectableSharesError`, never a value. Guarantees: any e ≤ ⌊(s − t)/2⌋ wrong
    shares, however chosen, are corrected; more wrong shares are detected unless they are
    chosen to lie on another polynomial of degree < t (which needs ≥ (s − t + 1) − ⌊(s − t)/2⌋
    colluding holders); with exactly t shares nothing can be checked. Shares that are
    inconsistent may equally mean that the *dealer* dealt bad shares: the named holders are
    the ones off the majority polynomial.
    """
    t = _check_threshold(threshold)
    erased: set[int] = set()
    parsed = _parse(shares, erasures=erased)
    s_all = len(parsed) + len(erased)
    if s_all < t:
        raise InsufficientSharesError(f"{s_all} shares available, threshold is {t}")
    ids = sorted(parsed)
    if not erased and (len(ids) == t or _is_codeword(parsed, ids, t)):
        return Recovery(_to_secret(_at_zero(parsed, ids[:t])), frozenset())
    coeffs = _gao_decode([h + 1 for h in ids], [parsed[h] for h in ids], t)
    if coeffs is None:
        raise UncorrectableSharesError(
            f"{s_all} shares (threshold {t}, {s_all - t} surplus, {len(erased)} not field "
            f"elements) do not determine one polynomial of degree < {t}: more than "
            f"⌊(s − t)/2⌋ shares are wrong; holders {sorted(parsed)[:8]}…"
        )
    wrong = {h for h in ids if _horner(coeffs, h + 1) != parsed[h]}
    return Recovery(_to_secret(coeffs[0] if coeffs else 0), frozenset(wrong | erased))


# ------------------------------------------------------------------ polynomial arithmetic
# Coefficient lists, lowest degree first, no trailing zeros (the zero polynomial is []).


def _trim(a: list[int]) -> list[int]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _horner(a: Sequence[int], x: int) -> int:
    y = 0
    for c in reversed(a):
        y = (y * x + c) % PRIME
    return y


def _mul(a: Sequence[int], b: Sequence[int]) -> list[int]:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] += ai * bj
    return _trim([c % PRIME for c in out])


def _sub(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = max(len(a), len(b))
    out = [((a[i] if i < len(a) else 0) - (b[i] if i < len(b) else 0)) % PRIME for i in range(n)]
    return _trim(out)


def _divmod(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
    rem = list(a)
    if len(rem) < len(b):
        return [], _trim(rem)
    inv_lead = pow(b[-1], -1, PRIME)
    quot = [0] * (len(rem) - len(b) + 1)
    for k in range(len(quot) - 1, -1, -1):
        c = rem[k + len(b) - 1] * inv_lead % PRIME
        quot[k] = c
        if c:
            for j, bj in enumerate(b):
                rem[k + j] = (rem[k + j] - c * bj) % PRIME
    return _trim(quot), _trim(rem[: len(b) - 1])


def _gao_decode(xs: Sequence[int], ys: Sequence[int], t: int) -> list[int] | None:
    """Gao's Reed–Solomon decoder: the polynomial f, deg f < t, with f(x_i) ≠ y_i for at most
    ⌊(s − t)/2⌋ of the s points, or None. Needs distinct non-zero x_i; O(s²) field operations.

    g0 = Π (x − x_i); g1 interpolates all points (deg < s); run the extended Euclidean
    algorithm on (g0, g1) until the remainder g has deg g < (s + t)/2, with g = u·g0 + v·g1;
    then f = g / v if v divides g and deg f < t (Gao 2003, Algorithm 1).
    """
    s = len(xs)
    if s < t:
        return None
    g0 = [1]
    for x in xs:  # multiply by (X − x)
        g0 = _sub([0, *g0], [x * c for c in g0])
    g1: list[int] = [0] * s
    for x, w, y in zip(xs, _weights(xs), ys, strict=True):
        # g0 / (X − x) by synthetic division, scaled by w·y: the Lagrange basis polynomial
        scale = w * y % PRIME
        carry = 0
        for k in range(s, 0, -1):
            carry = (g0[k] + carry * x) % PRIME
            g1[k - 1] += scale * carry
    r0, r1 = g0, _trim([c % PRIME for c in g1])
    v0: list[int] = []
    v1: list[int] = [1]
    while 2 * (len(r1) - 1) >= s + t:
        q, r = _divmod(r0, r1)
        r0, r1 = r1, r
        v0, v1 = v1, _sub(v0, _mul(q, v1))
    f, rem = _divmod(r1, v1)
    if rem or len(f) > t:
        return None
    if sum(1 for x, y in zip(xs, ys, strict=True) if _horner(f, x) != y) > (s - t) // 2:
        return None
    return f
