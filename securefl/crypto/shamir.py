"""t-of-n Shamir secret sharing over GF(p), p = 2^256 + 297 (Shamir 1979; Bonawitz et al. §4).

p is the smallest prime above 2^256, so any 32-byte secret (self-mask seed b_u, X25519 mask
key s_u^SK) is one field element. The share of holder ``i`` is ``f(i + 1)`` (x = 0 would reveal
the secret), encoded as 33 big-endian bytes; the holder id travels beside it, not inside.
Polynomial coefficients are 48-byte (384-bit) strings reduced mod p: statistical distance from
uniform ≤ 2^-127 each. Randomness is drawn from ``secrets`` unless injected (known answers).
Reconstruction uses Lagrange interpolation at 0 with coefficients cached per holder set, so a
server unmasking many clients with the same responders pays the O(t²) setup once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from securefl.crypto.errors import InsufficientSharesError, InvalidShareError
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
    "reconstruct",
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
    lambdas = []
    for i, xi in enumerate(xs):
        denom = _prod_mod([xi, *(xj - xi for j, xj in enumerate(xs) if j != i)])
        lambdas.append(total * pow(denom, -1, PRIME) % PRIME)
    return tuple(lambdas)


def _prod_mod(values: Iterable[int]) -> int:
    """Product mod p of small integers (|v| < 2^33), reducing only every few factors."""
    acc = 1
    for j, v in enumerate(values):
        acc *= v
        if j % _LAZY == _LAZY - 1:
            acc %= PRIME
    return acc % PRIME


def _parse(shares: Mapping[int, bytes] | Iterable[tuple[int, bytes]]) -> dict[int, int]:
    items = shares.items() if isinstance(shares, Mapping) else shares
    parsed: dict[int, int] = {}
    for holder, share in items:
        if isinstance(holder, bool) or not isinstance(holder, int):
            raise InvalidShareError("share holder id is not an integer")
        if not 0 <= holder <= MAX_HOLDER_ID:
            raise InvalidShareError(f"share holder id {holder} out of range")
        if holder in parsed:
            raise InvalidShareError(f"duplicate share for holder {holder}")
        if not isinstance(share, bytes | bytearray) or len(share) != SHARE_BYTES:
            raise InvalidShareError(f"share of holder {holder} is not {SHARE_BYTES} bytes")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            raise InvalidShareError(f"share of holder {holder} is not a field element")
        parsed[holder] = y
    return parsed


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange interpolation of the polynomial through ``points`` (x, y) evaluated at ``at``."""
    acc = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        acc = (acc + yi * num * pow(den, -1, PRIME)) % PRIME
    return acc


def reconstruct(
    shares: Mapping[int, bytes] | Iterable[tuple[int, bytes]],
    threshold: int,
    *,
    check_consistency: bool = False,
) -> bytes:
    """Recover the 32-byte secret from at least ``threshold`` shares (holder id → share).

    Uses the ``threshold`` shares of the smallest ids. With ``check_consistency`` every extra
    share must lie on the same polynomial (detects a corrupted share when > t are available).
    A result ≥ 2^256 cannot be a 32-byte secret → :class:`InvalidShareError`.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigurationError("threshold must be a positive integer", parameter="threshold")
    parsed = _parse(shares)
    if len(parsed) < threshold:
        raise InsufficientSharesError(f"{len(parsed)} shares available, threshold is {threshold}")
    ids = sorted(parsed)
    chosen = ids[:threshold]
    xs = tuple(h + 1 for h in chosen)
    lambdas = _lagrange_at_zero(xs)
    value = sum(lam * parsed[h] for lam, h in zip(lambdas, chosen, strict=True)) % PRIME
    if check_consistency and len(ids) > threshold:
        points = [(h + 1, parsed[h]) for h in chosen]
        for h in ids[threshold:]:
            if _interpolate(points, h + 1) != parsed[h]:
                raise InvalidShareError(f"share of holder {h} is inconsistent with the others")
    if value >= 2 ** (8 * SECRET_BYTES):
        raise InvalidShareError("shares do not interpolate to a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")
