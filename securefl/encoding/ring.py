"""The overflow planner: choose the ring Z_{2^b} so a sum of n encodings can never wrap.

A client encodes ``w·x`` with ``|x| ≤ c`` (clipped) and weight ``0 ≤ w ≤ W`` as an integer of
absolute value at most ``M = ⌊W·c·2^f⌋ + 1`` (stochastic rounding moves a value by < 1). The
sum of n such integers lies in ``[−n·M, n·M]``; read as a signed b-bit integer it is exact iff
``n·M < 2^(b−1)``. The planner also enforces the rule ``n·W·(c·2^f + 1) < 2^(b−1)`` of
REFERENCE.md (identical up to rounding for W ≥ 1, weaker for W < 1), so b is the smallest
width meeting both. Anything that could wrap is refused (three bits too few silently turn a
sum of 990 into −34). Normative text: ``protocols/secagg-primitives.md`` §6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from securefl.errors import ConfigurationError

MAX_BITS = 64
MAX_FRAC_BITS = 52
#: Largest scaled magnitude W·c·2^f: float64 must still hold the fraction stochastic rounding uses.
MAX_SCALED = 2**52

__all__ = ["MAX_BITS", "MAX_FRAC_BITS", "RingPlan", "plan_ring"]


def _finite_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ConfigurationError("must be a real number", parameter=name)
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError("must be finite and > 0", parameter=name)
    return value


def _required_magnitude(n: int, clip: float, frac_bits: int, max_weight: float) -> Fraction:
    """Largest possible |sum| (exact rational): n · max(M, W·(c·2^f + 1))."""
    wc = Fraction(max_weight) * Fraction(clip) * 2**frac_bits
    per_client = max(
        Fraction(math.floor(wc) + 1), Fraction(max_weight) * (Fraction(clip) * 2**frac_bits + 1)
    )
    return Fraction(n * per_client)


@dataclass(frozen=True)
class RingPlan:
    """Fixed-point ring parameters; construction validates that n sums cannot wrap."""

    bits: int
    frac_bits: int
    clip: float
    n_clients: int
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("bits", "frac_bits", "n_clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigurationError("must be an integer", parameter=name)
        if not 1 <= self.bits <= MAX_BITS:
            raise ConfigurationError(f"must be in [1, {MAX_BITS}]", parameter="bits")
        if not 0 <= self.frac_bits <= MAX_FRAC_BITS:
            raise ConfigurationError(f"must be in [0, {MAX_FRAC_BITS}]", parameter="frac_bits")
        if self.n_clients < 1:
            raise ConfigurationError("must be ≥ 1", parameter="n_clients")
        object.__setattr__(self, "clip", _finite_positive(self.clip, "clip"))
        object.__setattr__(self, "max_weight", _finite_positive(self.max_weight, "max_weight"))
        if Fraction(self.max_weight) * Fraction(self.clip) * 2**self.frac_bits >= MAX_SCALED:
            raise ConfigurationError(
                "max_weight·clip·2^frac_bits ≥ 2^52: float64 cannot round it stochastically",
                parameter="frac_bits",
            )
        need = _required_magnitude(self.n_clients, self.clip, self.frac_bits, self.max_weight)
        if need >= 2 ** (self.bits - 1):
            raise ConfigurationError(
                f"a sum of {self.n_clients} encodings may reach {float(need):.4g} ≥ "
                f"2^{self.bits - 1}: the ring Z_2^{self.bits} could wrap",
                parameter="bits",
            )

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        """Word type in memory and in the masking accumulator (the SecAgg wire packs b bits
        per value, ``protocols/secagg.md`` §5)."""
        return np.uint32 if self.bits <= 32 else np.uint64

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def mask(self) -> int:
        """``2^b − 1``: AND with it reduces a word mod 2^b."""
        return (1 << self.bits) - 1

    @property
    def bytes_per_param(self) -> int:
        """Bytes of one :attr:`dtype` word (in memory; on the wire a value takes b/8)."""
        return 4 if self.bits <= 32 else 8

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def max_abs_int(self) -> int:
        """M = ⌊W·c·2^f⌋ + 1: bound on |one encoded coordinate|."""
        scaled = Fraction(self.max_weight) * Fraction(self.clip) * 2**self.frac_bits
        floor: int = math.floor(scaled)
        return floor + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "frac_bits": self.frac_bits,
            "clip": self.clip,
            "n_clients": self.n_clients,
            "max_weight": self.max_weight,
            "dtype": np.dtype(self.dtype).name,
            "modulus": str(self.modulus),
            "bytes_per_param": self.bytes_per_param,
            "max_abs_int": self.max_abs_int,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RingPlan:
        return cls(
            bits=int(data["bits"]),
            frac_bits=int(data["frac_bits"]),
            clip=float(data["clip"]),
            n_clients=int(data["n_clients"]),
            max_weight=float(data.get("max_weight", 1.0)),
        )


def plan_ring(
    n_clients: int,
    clip: float,
    frac_bits: int,
    max_weight: float = 1.0,
    *,
    bits: int | None = None,
) -> RingPlan:
    """Smallest ring width b whose signed range holds any sum of ``n_clients`` encodings.

    ``bits`` forces a width (validated: a width that could wrap is refused). Needing more
    than 64 bits raises :class:`ConfigurationError` saying which inputs to reduce.
    """
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise ConfigurationError("must be an integer ≥ 1", parameter="n_clients")
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int):
        raise ConfigurationError("must be an integer", parameter="frac_bits")
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise ConfigurationError(f"must be in [0, {MAX_FRAC_BITS}]", parameter="frac_bits")
    clip = _finite_positive(clip, "clip")
    max_weight = _finite_positive(max_weight, "max_weight")
    if bits is not None:
        return RingPlan(bits, frac_bits, clip, n_clients, max_weight)
    need = _required_magnitude(n_clients, clip, frac_bits, max_weight)
    # smallest b with need < 2^(b-1)
    b = max(1, math.floor(need).bit_length() + 1)
    while need >= 2 ** (b - 1):  # pragma: no cover - bit_length already ensures this
        b += 1
    if b > MAX_BITS:
        raise ConfigurationError(
            f"n_clients={n_clients}, clip={clip}, frac_bits={frac_bits}, "
            f"max_weight={max_weight} need a {b}-bit ring (> {MAX_BITS}); "
            "lower frac_bits or clip, or aggregate fewer clients",
            parameter="frac_bits",
        )
    return RingPlan(b, frac_bits, clip, n_clients, max_weight)
