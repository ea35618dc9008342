"""Parameter checks shared by events, accountants and mechanisms (fail closed, name the field)."""

from __future__ import annotations

import math
import numbers

from securefl.dp.errors import InvalidParameterError


def finite(name: str, value: object) -> float:
    """Return ``value`` as a finite float or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            f"must be a real number, got {type(value).__name__}", parameter=name
        )
    out = float(value)
    if math.isnan(out) or math.isinf(out):
        raise InvalidParameterError(f"must be finite, got {out}", parameter=name)
    return out


def positive(name: str, value: object) -> float:
    out = finite(name, value)
    if out <= 0:
        raise InvalidParameterError(f"must be > 0, got {out}", parameter=name)
    return out


def non_negative(name: str, value: object) -> float:
    out = finite(name, value)
    if out < 0:
        raise InvalidParameterError(f"must be >= 0, got {out}", parameter=name)
    return out


def probability(name: str, value: object) -> float:
    """A sampling probability in (0, 1]."""
    out = finite(name, value)
    if not 0 < out <= 1:
        raise InvalidParameterError(f"must be in (0, 1], got {out}", parameter=name)
    return out


def delta(name: str, value: object) -> float:
    """A DP δ in the open interval (0, 1)."""
    out = finite(name, value)
    if not 0 < out < 1:
        raise InvalidParameterError(f"must be in (0, 1), got {out}", parameter=name)
    return out


def count(name: str, value: object, *, minimum: int = 0) -> int:
    """A whole number ≥ ``minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(
            f"must be an integer, got {type(value).__name__}", parameter=name
        )
    out = int(value)
    if out < minimum:
        raise InvalidParameterError(f"must be >= {minimum}, got {out}", parameter=name)
    return out
