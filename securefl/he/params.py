"""CKKS parameter presets, the 128-bit security check and the stated precision bound.

Security follows the Homomorphic Encryption Standard (Albrecht et al. 2018, Table 1, ternary
secret, classical 128-bit): the total coefficient-modulus size log2(Q·P) may not exceed
27/54/109/218/438/881 bits for N = 1024 … 32768. SEAL (under TenSEAL) enforces the same table.

Aggregation only adds ciphertexts (and, for server-side weights, multiplies by one plaintext
scalar), so one data prime is enough: ciphertexts cost ≈ 32·L bytes per value for L data primes,
independent of N (REFERENCE.md). The precision bound is derived in ``protocols/he_ckks.md`` §4.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import cached_property

from securefl.errors import ConfigurationError
from securefl.he.errors import InsecureParametersError
from securefl.vocabulary import MAX_CLIENTS

#: HE Standard (2018) Table 1: max log2(Q·P) for 128-bit classical security, ternary secret.
HE_STANDARD_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: Per-ciphertext failure probability of the stated precision bound (tail bounds, §4).
BOUND_FAILURE_LOG2 = -40


@dataclass(frozen=True)
class HEPreset:
    """A CKKS parameter set for aggregation, with the limits under which its bound holds.

    ``scale_bits=None`` sets the scale Δ to the rescale prime q1 itself, so that a server-side
    plaintext multiply followed by a rescale divides by exactly Δ (TenSEAL resets the scale after
    rescaling, so any Δ ≠ q1 would add a relative error |q1/Δ − 1| ≈ 2^-23).
    """

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int | None
    max_abs_sum_bits: int
    max_clients: int
    purpose: str = ""
    allow_insecure: bool = False

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_128:
            raise ConfigurationError(
                f"must be a power of two in {sorted(HE_STANDARD_128)}",
                parameter="poly_modulus_degree",
            )
        sizes = self.coeff_mod_bit_sizes
        if len(sizes) < 2 or any(not 17 <= b <= 60 for b in sizes):
            raise ConfigurationError(
                "need ≥ 2 primes (data + special) of 17..60 bits", parameter="coeff_mod_bit_sizes"
            )
        if not 1 <= self.max_clients <= MAX_CLIENTS:
            raise ConfigurationError(f"must be in [1, {MAX_CLIENTS}]", parameter="max_clients")
        if not (1 <= len(self.name) <= 64 and self.name.isascii() and self.name.isprintable()):
            raise ConfigurationError("1–64 printable ASCII characters", parameter="name")
        if self.scale_bits is not None and not 20 <= self.scale_bits <= 60:
            raise ConfigurationError("must be in [20, 60] or None", parameter="scale_bits")
        if not 1 <= self.max_abs_sum_bits <= 60:
            raise ConfigurationError("must be in [1, 60]", parameter="max_abs_sum_bits")
        if self.scale_bits is None and len(sizes) < 3:
            raise ConfigurationError(
                "scale = q1 needs a rescale prime (≥ 3 primes)", parameter="scale_bits"
            )
        if not self.meets_128_bit and not self.allow_insecure:
            raise InsecureParametersError(
                f"log2(Q·P) = {self.total_bits} exceeds {HE_STANDARD_128[n]} for N = {n} "
                "(HE Standard, 128-bit); pass allow_insecure=True to override (recorded)",
                parameter="coeff_mod_bit_sizes",
            )
        headroom = sum(self.download_prime_bits) - 1 - self.scale_log2 - 1
        if self.max_abs_sum_bits > headroom:
            raise ConfigurationError(
                f"|sum| < 2^{self.max_abs_sum_bits} does not fit under the download modulus "
                f"with scale 2^{self.scale_log2:.1f} (headroom 2^{headroom:.1f})",
                parameter="max_abs_sum_bits",
            )

    # ----- derived quantities -------------------------------------------------------------
    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def meets_128_bit(self) -> bool:
        return self.total_bits <= HE_STANDARD_128[self.poly_modulus_degree]

    @property
    def security_level(self) -> str:
        return "128-bit (HE Standard)" if self.meets_128_bit else "BELOW 128-bit (override)"

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_prime_count(self) -> int:
        """Primes a fresh ciphertext carries (all but SEAL's special key-switching prime)."""
        return len(self.coeff_mod_bit_sizes) - 1

    @property
    def server_weighting(self) -> bool:
        """Plaintext weights on the server need one rescale prime (q1) and Δ = q1."""
        return self.scale_bits is None

    @property
    def download_level(self) -> int:
        """Primes left in the aggregate sent to the key holder (after mod-switch, §5)."""
        return 1 if self.server_weighting else self.data_prime_count

    @property
    def download_prime_bits(self) -> tuple[int, ...]:
        return self.coeff_mod_bit_sizes[: self.download_level]

    @cached_property
    def primes(self) -> tuple[int, ...]:
        """The exact primes SEAL's CoeffModulus.Create picks (deterministic given N, sizes)."""
        from tenseal import sealapi

        made = sealapi.CoeffModulus.Create(self.poly_modulus_degree, list(self.coeff_mod_bit_sizes))
        return tuple(int(m.value()) for m in made)

    @property
    def scale(self) -> float:
        if self.scale_bits is None:
            return float(self.primes[1])
        return float(2**self.scale_bits)

    @property
    def scale_log2(self) -> float:
        if self.scale_bits is None:
            # q1 < 2^bits; the headroom check must hold for any prime of that size.
            return float(self.coeff_mod_bit_sizes[1])
        return float(self.scale_bits)

    @property
    def max_abs_sum(self) -> float:
        """Bound on |Σ w_i·x_i| per coordinate: beyond it the sum would wrap mod q."""
        return float(2**self.max_abs_sum_bits)

    @property
    def max_abs_value(self) -> float:
        """Per-client bound |w·x| checked at encryption so that max_clients cannot wrap."""
        return self.max_abs_sum / self.max_clients

    # ----- identity -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return out

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HEPreset:
        try:
            sizes = data["coeff_mod_bit_sizes"]
            scale_bits = data["scale_bits"]
            if not isinstance(sizes, list) or not all(isinstance(b, int) for b in sizes):
                raise TypeError("coeff_mod_bit_sizes must be a list of ints")
            if scale_bits is not None and not isinstance(scale_bits, int):
                raise TypeError("scale_bits must be an int or null")
            return cls(
                name=str(data["name"]),
                poly_modulus_degree=int(str(data["poly_modulus_degree"])),
                coeff_mod_bit_sizes=tuple(sizes),
                scale_bits=scale_bits,
                max_abs_sum_bits=int(str(data["max_abs_sum_bits"])),
                max_clients=int(str(data["max_clients"])),
                purpose=str(data.get("purpose", "")),
                allow_insecure=bool(data.get("allow_insecure", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"invalid preset description ({exc})", parameter="preset"
            ) from exc

    def metadata(self) -> dict[str, object]:
        """What the audit ledger records about the parameters (incl. any security override)."""
        return {
            "preset": self.name,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "total_coeff_modulus_bits": self.total_bits,
            "he_standard_max_bits": HE_STANDARD_128[self.poly_modulus_degree],
            "security_level": self.security_level,
            "insecure_override": bool(self.allow_insecure and not self.meets_128_bit),
            "scale_log2": math.log2(self.scale),
            "download_level": self.download_level,
            "max_abs_sum": self.max_abs_sum,
            "max_clients": self.max_clients,
        }


PRESETS: dict[str, HEPreset] = {
    "fast": HEPreset(
        name="fast",
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 60),
        scale_bits=40,
        max_abs_sum_bits=18,
        max_clients=1024,
        purpose="add-only, smallest ciphertexts (≈32 B/value up and down); client-side weights",
    ),
    "weighted": HEPreset(
        name="weighted",
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 40, 60),
        scale_bits=None,
        max_abs_sum_bits=18,
        max_clients=1024,
        purpose="server-side plaintext weights; aggregate mod-switched to one prime for download",
    ),
    "precise": HEPreset(
        name="precise",
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 60, 60),
        scale_bits=52,
        max_abs_sum_bits=20,
        max_clients=1024,
        purpose="≈2^12 times tighter error than fast, at twice the bytes; client-side weights",
    ),
}


def get_preset(name: str) -> HEPreset:
    """Return a named preset (``fast``, ``weighted``, ``precise``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)}", parameter="preset"
        ) from None


# ----- precision bound (protocols/he_ckks.md §4) -------------------------------------------


def raw_error_bound(
    preset: HEPreset,
    n_clients: int,
    *,
    server_weight_sums: tuple[float, float] | None = None,
    max_abs: float | None = None,
    failure_log2: int = BOUND_FAILURE_LOG2,
) -> float:
    """Per-coordinate |decrypt(Σ ct_i) − Σ w_i·x_i| bound, holding except w.p. 2^failure_log2.

    Error polynomial of a fresh SEAL public-key encryption (after dividing by the special
    prime P): ε + τ0 + τ1·s, with ε the encoding rounding, τ0, τ1 the division rounding
    (coefficients in [−½, ½]) and s the ternary secret; the (u·e + e1 + e2·s)/P residue is < 1.
    In the canonical embedding, Re of a sum of N terms in [−½, ½] is sub-Gaussian with proxy
    N/8 (Hoeffding), and |s(ζ)| ≤ √2·√(N·L); a union bound over slots gives L = ln(8N/p).
    ``server_weight_sums`` = (Σ|w_i|, Σw_i²) when the server multiplied by plaintext weights;
    ``max_abs`` bounds |Σ w_i·x_i| (default: the preset's limit) for the floating-point term.
    """
    if n_clients < 1:
        raise ConfigurationError("must be ≥ 1", parameter="n_clients")
    if server_weight_sums is not None and not all(
        math.isfinite(w) and 0.0 <= w <= 2.0**64 for w in server_weight_sums
    ):
        raise ConfigurationError("must be finite, ≥ 0 and ≤ 2^64", parameter="server_weight_sums")
    n_deg = preset.poly_modulus_degree
    big_l = math.log(8 * n_deg) - failure_log2 * math.log(2)

    def tail(proxy: float) -> float:
        return math.sqrt(2.0 * proxy * big_l)

    s_bound = math.sqrt(2.0) * tail(n_deg / 2.0)

    def rounding_terms(sq: float) -> float:
        t = tail(sq * n_deg / 8.0)
        return 2.0 * t + math.sqrt(2.0) * t * s_bound

    if server_weight_sums is None:
        w1, w2 = float(n_clients), float(n_clients)
    else:
        w1, w2 = server_weight_sums
    scaled = rounding_terms(w2) + w1  # fresh encryptions, weighted, + key-switch residue
    magnitude = preset.max_abs_sum if max_abs is None else min(max_abs, preset.max_abs_sum)
    # decode: float64 CRT compose + size-N FFT, rounding ≤ 2^-53·log2(N)·N·max|value|
    value_units = magnitude * 2.0**-53 * math.log2(n_deg) * n_deg
    if server_weight_sums is not None:
        scaled += rounding_terms(1.0) + 1.0  # the rescale after the plaintext multiply
        # each weight w is encoded as round(w·Δ)/Δ: error ≤ |x|/(2Δ) per client
        value_units += n_clients * preset.max_abs_value / (2.0 * preset.scale)
    return scaled / preset.scale + value_units


def weight_sums(weights: tuple[float, ...] | list[float]) -> tuple[float, float]:
    """(Σ|w_i|, Σw_i²) of server-side weights, the inputs of :func:`raw_error_bound`."""
    return float(sum(abs(w) for w in weights)), float(sum(w * w for w in weights))


def release_grid(bound: float) -> float:
    """The rounding grid of the released aggregate: the smallest power of two ≥ the bound."""
    if not (math.isfinite(bound) and 0.0 < bound <= 2.0**64):
        raise ConfigurationError("must be a positive finite error bound ≤ 2^64", parameter="bound")
    return float(2.0 ** math.ceil(math.log2(bound)))


def released_error_bound(
    preset: HEPreset,
    n_clients: int,
    *,
    server_weight_sums: tuple[float, float] | None = None,
    max_abs: float | None = None,
) -> float:
    """The stated precision of what the key holder releases: raw bound + half a grid step."""
    raw = raw_error_bound(preset, n_clients, server_weight_sums=server_weight_sums, max_abs=max_abs)
    return raw + release_grid(raw) / 2.0
