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

Round loops drive :class:`AdaptiveClipping` (client_extra → secure sum → server_update): the
bit travels as one extra coordinate of the secure sum. Its "joint" mode noises that
coordinate with the update mechanism (central or DDGauss) at a scale that reproduces the
§3.1 split exactly; its "separate" mode adds the count noise below (central only).

Floating-point safety (separate mode, :class:`AdaptiveClipper`): the count is released on an
integer grid like the update sum — the integer Σ(2bᵢ − 1)·2^g gets exact discrete Gaussian
noise N_Z(0, ⌈2σ_b·2^g⌉²) (sensitivity 2^g under add/remove).
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
from securefl.vocabulary import MAX_CLIENTS


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


# ------------------------------------------------------------------ orchestrator interface


class AdaptiveClipping:
    """Adaptive clipping driven by a round loop with secure aggregation (protocols/dp.md §4.4).

    Each client appends ONE extra coordinate, :meth:`client_extra`, to its clipped update, so
    the clipped-indicator bits travel inside the secure sum and the server only ever sees
    their (noisy) total. Two ways to noise that coordinate:

    ``mode="joint"`` (default; works with central noise AND with distributed DDGauss): the
    extra coordinate is λ_t·(bᵢ − ½) with λ_t = 2κ·C_t, and the mechanism is configured with
    clip :attr:`mechanism_clip` = C_t·√(1 + κ²) (the update clipped to C_t plus the extra
    coordinate) and the TARGET noise multiplier z. Every coordinate gets noise z·C_t·√(1+κ²),
    so the update sees z_Δ = z·√(1+κ²) and the count Σ(bᵢ − ½) sees σ_b = z·√(1+κ²)/(2κ)
    (constant over rounds). κ = z/√(4σ_b² − z²) makes these exactly Andrew et al. §3.1's
    split, (z_Δ⁻² + (2σ_b)⁻²)^(−½) = z: the mechanism's own event (one Gaussian on the joint
    vector) IS the composition of the update and count queries, so :meth:`round_event`
    returns it unchanged.

    ``mode="separate"`` (central noise only): the extra coordinate is bᵢ − ½, NOT covered by
    the update mechanism (the server strips it before noising the update with
    :attr:`update_noise_multiplier`); :meth:`noisy_count` adds exact discrete Gaussian noise
    σ_b to it on the 2^−g grid, and :meth:`round_event` composes the update event with
    :meth:`AdaptiveClipConfig.count_event`. Under DDGauss this mode is wrong (the rotation
    mixes the coordinate into the update) and the class cannot tell: use "joint" there.

    Either way the server then calls :meth:`server_update` with the noisy Σ of the extra
    coordinate; the estimate uses the FIXED expected cohort m (Andrew et al. Alg. 1).
    """

    def __init__(
        self,
        config: AdaptiveClipConfig,
        noise_multiplier: float,
        *,
        mode: str = "joint",
        rng: CryptoRandom | None = None,
    ) -> None:
        if mode not in ("joint", "separate"):
            raise InvalidParameterError("must be 'joint' or 'separate'", parameter="mode")
        self.config = config
        self.mode = mode
        self.noise_multiplier = v.positive("noise_multiplier", noise_multiplier)
        # validates 2σ_b > z and gives z_Δ (same formula in both modes)
        self.update_noise_multiplier = update_noise_multiplier(noise_multiplier, config.sigma_b)
        z, sb = self.noise_multiplier, config.sigma_b
        self.kappa = z / math.sqrt(4 * sb * sb - z * z)
        self.clip = float(config.initial_clip)
        self.rounds = 0
        self._rng = rng

    @property
    def count_scale(self) -> float:
        """λ_t: the extra coordinate is λ_t·(bᵢ − ½) (1 in separate mode)."""
        return 2 * self.kappa * self.clip if self.mode == "joint" else 1.0

    @property
    def mechanism_clip(self) -> float:
        """The L2 clip to configure the DP mechanism with this round (joint: C_t·√(1+κ²);
        separate: C_t, the update alone)."""
        if self.mode == "joint":
            return self.clip * math.sqrt(1 + self.kappa**2)
        return self.clip

    @property
    def mechanism_noise_multiplier(self) -> float:
        """The z to configure the mechanism with (joint: the target z; separate: z_Δ)."""
        return self.noise_multiplier if self.mode == "joint" else self.update_noise_multiplier

    def client_extra(self, update_norm: float) -> float:
        """The extra coordinate of a client whose UNCLIPPED update has norm ``update_norm``."""
        bit = AdaptiveClipper.client_bit(update_norm, self.clip)
        return self.count_scale * (bit - 0.5)

    def noisy_count(self, extra_sum: float) -> float:
        """Separate mode: exact discrete Gaussian noise σ_b on Σ(bᵢ − ½) (grid 2^−g)."""
        if self.mode != "separate":
            raise InvalidParameterError("joint mode: the mechanism noises it", parameter="mode")
        total = v.finite("extra_sum", extra_sum)
        doubled = 2 * total  # Σ(2bᵢ − 1), an integer
        if abs(doubled - round(doubled)) > 1e-6 or abs(doubled) > MAX_CLIENTS:
            raise InvalidParameterError("must be a sum of ±½ values", parameter="extra_sum")
        g = self.config.count_frac_bits
        noise = int(discrete_gaussian(1, self.config.count_grid_sigma, rng=self._rng)[0])
        return (round(doubled) * (1 << g) + noise) / (1 << (g + 1))

    def server_update(self, noisy_extra_sum: float, expected_cohort: float | None = None) -> float:
        """C ← C·exp(−η(b̄ − γ)) with b̄ = noisy Σ(bᵢ − ½)/m + ½; returns the new clip.

        Call once per round, after every :meth:`client_extra` of that round (λ_t is the
        scale of the clip those extras were computed with).

        ``noisy_extra_sum`` is the released (noised) sum of the extra coordinate; m defaults
        to the config's expected cohort (a fixed public value, never the realised count)."""
        s = v.finite("noisy_extra_sum", noisy_extra_sum)
        m = v.positive(
            "expected_cohort",
            self.config.expected_cohort if expected_cohort is None else expected_cohort,
        )
        frac = (s / self.count_scale) / m + 0.5
        self.clip *= math.exp(-self.config.learning_rate * (frac - self.config.target_quantile))
        self.rounds += 1
        return self.clip

    def round_event(self, update_event: DpEvent) -> DpEvent:
        """The round's event (wrap it with the sampling performed). Joint: the mechanism's
        event already covers the count (see the class doc); separate: update ∘ count."""
        if self.mode == "joint":
            return update_event
        return round_event(update_event, self.config)

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict() | {
            "mode": self.mode,
            "noise_multiplier": self.noise_multiplier,
            "update_noise_multiplier": self.update_noise_multiplier,
            "kappa": self.kappa,
            "clip": self.clip,
            "count_scale": self.count_scale,
            "mechanism_clip": self.mechanism_clip,
            "rounds": self.rounds,
        }
