"""Adaptive clipping to a quantile of update norms (Andrew, Thakkar, McMahan, Ramaswamy,
"Differentially Private Learning with Adaptive Clipping", NeurIPS 2021).

Each round, every participating client also reports bᵢ = 1[‖Δᵢ‖ ≤ C]. The server releases a
noisy fraction b̄ = (Σ(bᵢ − ½) + N)/m + ½ (m = expected cohort, FIXED in advance) and takes a
geometric step C ← C·exp(−η(b̄ − γ)) (§3, Alg. 1) so C tracks the γ-quantile of norms.

The count query is *not free*: its centred summands have sensitivity ½, so noise of std σ_b
gives it noise multiplier 2σ_b. Composed with the update query (multiplier z_Δ) the round is
one Gaussian mechanism with z = (z_Δ⁻² + (2σ_b)⁻²)^(−1/2) (§3.1); to keep a target z the update
noise must grow to z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) (:func:`update_noise_multiplier`). We record
both queries as one ``ComposedEvent`` so every accountant composes them (for RDP this is
exactly the paper's formula).

Floating-point safety: the count is released on an integer grid like the update sum — the
integer Σ(2bᵢ − 1)·2^g gets exact discrete Gaussian noise N_Z(0, ⌈2σ_b·2^g⌉²) (sensitivity
2^g under add/remove).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import ComposedEvent, DiscreteGaussianEvent, DpEvent
from securefl.dp.sampling import CryptoRandom, discrete_gaussian


def update_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """z_Δ such that (z_Δ⁻² + (2σ_b)⁻²)^(−1/2) = z (Andrew et al. §3.1)."""
    z = v.positive("noise_multiplier", noise_multiplier)
    sb = v.positive("count_noise_std", count_noise_std)
    rest = z**-2 - (2 * sb) ** -2
    if rest <= 0:
        raise InvalidParameterError(
            f"2·count_noise_std={2 * sb} must exceed noise_multiplier={z}",
            parameter="count_noise_std",
        )
    return float(rest**-0.5)


@dataclass(frozen=True)
class AdaptiveClipConfig:
    """Parameters of the quantile tracker (Andrew et al. defaults: η = 0.2, σ_b = m/20)."""

    initial_clip: float
    target_quantile: float
    expected_cohort: float
    learning_rate: float = 0.2
    count_noise_std: float | None = None
    count_frac_bits: int = 8

    def __post_init__(self) -> None:
        v.positive("initial_clip", self.initial_clip)
        q = v.finite("target_quantile", self.target_quantile)
        if not 0 < q < 1:
            raise InvalidParameterError("must be in (0, 1)", parameter="target_quantile")
        v.positive("expected_cohort", self.expected_cohort)
        v.positive("learning_rate", self.learning_rate)
        if self.count_noise_std is not None:
            v.positive("count_noise_std", self.count_noise_std)
        v.count("count_frac_bits", self.count_frac_bits)
        if self.count_frac_bits > 30:
            raise InvalidParameterError("must be <= 30", parameter="count_frac_bits")

    @property
    def sigma_b(self) -> float:
        return (
            self.count_noise_std if self.count_noise_std is not None else self.expected_cohort / 20
        )

    @property
    def count_grid_sigma(self) -> int:
        """Integer σ of the noise on Σ(2bᵢ − 1)·2^g: ⌈2σ_b·2^g⌉."""
        return max(1, math.ceil(2 * self.sigma_b * (1 << self.count_frac_bits)))

    def count_event(self) -> DiscreteGaussianEvent:
        """The clipped-count query of one round (sensitivity 2^g on the grid, 1-D)."""
        return DiscreteGaussianEvent(
            sigma=float(self.count_grid_sigma),
            l2_sensitivity=float(1 << self.count_frac_bits),
            dimension=1,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mechanism": "adaptive_clipping_quantile",
            "initial_clip": self.initial_clip,
            "target_quantile": self.target_quantile,
            "expected_cohort": self.expected_cohort,
            "learning_rate": self.learning_rate,
            "count_noise_std": self.sigma_b,
            "count_frac_bits": self.count_frac_bits,
            "count_grid_sigma": self.count_grid_sigma,
        }


def round_event(update_event: DpEvent, config: AdaptiveClipConfig) -> ComposedEvent:
    """Update query + clipped-count query of one round (wrap with the sampling performed)."""
    return ComposedEvent((update_event, config.count_event()))


class AdaptiveClipper:
    """Server-side state of the geometric quantile update (sans-I/O: bits in, clip out)."""

    def __init__(self, config: AdaptiveClipConfig, *, rng: CryptoRandom | None = None) -> None:
        self.config = config
        self.clip = float(config.initial_clip)
        self._rng = rng

    @staticmethod
    def client_bit(update_norm: float, clip: float) -> int:
        """bᵢ = 1 if the (unclipped) update norm is at most the current clip."""
        return int(v.non_negative("update_norm", update_norm) <= v.positive("clip", clip))

    def noisy_fraction(self, bits: Iterable[int]) -> float:
        """b̄ = (Σ(bᵢ − ½) + noise)/m + ½ computed on the integer grid (exact noise)."""
        total = 0
        for b in bits:
            if b not in (0, 1):
                raise InvalidParameterError("clipped-count bits must be 0 or 1", parameter="bits")
            total += 2 * b - 1
        g = self.config.count_frac_bits
        noise = int(discrete_gaussian(1, self.config.count_grid_sigma, rng=self._rng)[0])
        noisy_centred = (total * (1 << g) + noise) / (1 << (g + 1))  # = Σ(bᵢ − ½) + N(0, σ_b²)
        return float(noisy_centred / self.config.expected_cohort + 0.5)

    def update(self, bits: Iterable[int]) -> float:
        """C ← C·exp(−η(b̄ − γ)); returns the new clip."""
        frac = self.noisy_fraction(bits)
        self.clip *= math.exp(-self.config.learning_rate * (frac - self.config.target_quantile))
        return self.clip
