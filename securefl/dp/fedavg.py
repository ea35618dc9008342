"""Client-level DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018) with central noise.

Per round: clip each client's update to L2 norm C (:func:`~securefl.dp.clipping.clip_l2`),
multiply by its weight wᵢ ∈ [0, W_max], sum, add noise of scale z·Δ, divide by a denominator
fixed in advance (the *expected* cohort size, McMahan et al. §2 "fixed-denominator
estimator"), never by the number of clients that replied: dividing by the realised count would
make one client's presence change the denominator too, and fewer replies would raise the
sensitivity silently.

Sensitivity (privacy unit: one client, add/remove adjacency): ‖wᵢ·clip(xᵢ)‖ ≤ W_max·C, so
Δ = W_max·C (weights multiply sensitivity; with replace-one adjacency Δ = 2·W_max·C).

Floating-point attacks (Mironov 2012): noise is *not* drawn as a float. The sum is put on the
grid 2^−f (nearest rounding of the float sum, or the exact integer sum of fixed-point
encodings from secure aggregation), an exact discrete Gaussian integer vector
(:func:`~securefl.dp.sampling.discrete_gaussian`, cryptographic source) is added there, and
only the noisy integer is converted back to floats — the released float is a deterministic
function of the noisy integer, so its low-order bits carry no information about the input.
Rounding adds at most √d grid units to the L2 sensitivity:
Δ_grid = W_max·C·2^f + √d (triangle inequality, |round(a) − round(b)| ≤ |a − b| + 1 per
coordinate; the same bound holds for stochastic rounding of each encoding). The noise scale
is σ_grid = ⌈z·Δ_grid⌉, so the recorded event is
``DiscreteGaussianEvent(σ_grid, Δ_grid, d)`` — its effective noise multiplier σ_grid/Δ_grid ≥ z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.accounting import _check_neighboring
from securefl.dp.clipping import clip_l2
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import DiscreteGaussianEvent
from securefl.dp.sampling import CryptoRandom, discrete_gaussian, round_sigma_up

FloatVector = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]

#: Largest |grid integer| we allow in an int64 sum (room for noise and n summands).
_MAX_GRID = float(1 << 60)


class GridNoiseParameters(Protocol):
    """The public parameters of exact discrete Gaussian noise on the 2^-f grid, shared by
    DP-FedAvg and DP-FTRL."""

    @property
    def clip(self) -> float: ...
    @property
    def noise_multiplier(self) -> float: ...
    @property
    def expected_cohort(self) -> float: ...
    @property
    def max_weight(self) -> float: ...
    @property
    def frac_bits(self) -> int: ...
    @property
    def neighboring(self) -> str: ...


def check_grid_noise_parameters(p: GridNoiseParameters) -> None:
    """Validate them once for every mechanism that adds grid noise (typed errors)."""
    v.positive("clip", p.clip)
    v.positive("noise_multiplier", p.noise_multiplier)
    v.positive("expected_cohort", p.expected_cohort)
    v.positive("max_weight", p.max_weight)
    v.count("frac_bits", p.frac_bits)
    if p.frac_bits > 40:
        raise InvalidParameterError("must be <= 40", parameter="frac_bits")
    _check_neighboring(p.neighboring)


@dataclass(frozen=True)
class DpFedAvgConfig:
    """Parameters of one DP-FedAvg round (all public; recorded with the event).

    ``expected_cohort`` is the fixed denominator: q·N under Poisson sampling, m for fixed-size
    sampling, N for full participation.
    """

    clip: float
    noise_multiplier: float
    expected_cohort: float
    max_weight: float = 1.0
    frac_bits: int = 16
    neighboring: str = "add_remove"

    def __post_init__(self) -> None:
        check_grid_noise_parameters(self)

    @property
    def l2_sensitivity(self) -> float:
        """Δ in float units: W_max·C (add/remove) or 2·W_max·C (replace-one)."""
        factor = 2.0 if self.neighboring == "replace_one" else 1.0
        return factor * self.max_weight * self.clip

    def grid_sensitivity(self, dimension: int) -> float:
        """Δ_grid = Δ·2^f + √d·(1 or 2): rounding slack included."""
        d = v.count("dimension", dimension, minimum=1)
        factor = 2.0 if self.neighboring == "replace_one" else 1.0
        return self.l2_sensitivity * 2.0**self.frac_bits + factor * math.sqrt(d)

    def grid_sigma(self, dimension: int) -> int:
        """σ_grid = ⌈z·Δ_grid⌉ (an integer, for the exact fast sampler)."""
        return round_sigma_up(self.noise_multiplier * self.grid_sensitivity(dimension))

    def round_event(self, dimension: int) -> DiscreteGaussianEvent:
        """The mechanism event of one round (wrap it with the sampling actually performed)."""
        return DiscreteGaussianEvent(
            sigma=float(self.grid_sigma(dimension)),
            l2_sensitivity=self.grid_sensitivity(dimension),
            dimension=dimension,
        )

    def to_dict(self, dimension: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mechanism": "dp_fedavg_central_discrete_gaussian",
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "expected_cohort": self.expected_cohort,
            "max_weight": self.max_weight,
            "frac_bits": self.frac_bits,
            "neighboring": self.neighboring,
            "privacy_unit": "client",
            "l2_sensitivity": self.l2_sensitivity,
            "denominator": "fixed_expected_cohort",
        }
        if dimension is not None:
            out["dimension"] = dimension
            out["grid_sensitivity"] = self.grid_sensitivity(dimension)
            out["grid_sigma"] = self.grid_sigma(dimension)
            out["effective_noise_multiplier"] = self.grid_sigma(dimension) / self.grid_sensitivity(
                dimension
            )
        return out


@dataclass(frozen=True)
class DpFedAvgResult:
    """The released average, its event and the public record of how it was made."""

    average: FloatVector
    noisy_grid_sum: IntVector
    event: DiscreteGaussianEvent
    params: dict[str, Any]
    clipped_clients: int


def clip_and_weight(
    update: npt.ArrayLike, config: DpFedAvgConfig, weight: float = 1.0
) -> tuple[FloatVector, bool]:
    """wᵢ·clip_C(xᵢ) and whether clipping was active; 0 ≤ wᵢ ≤ W_max is enforced."""
    w = v.non_negative("weight", weight)
    if w > config.max_weight:
        raise InvalidParameterError(
            f"{w} exceeds max_weight={config.max_weight} (would raise the sensitivity)",
            parameter="weight",
        )
    clipped, norm = clip_l2(update, config.clip)
    return clipped * w, norm > config.clip


def to_grid(vec: FloatVector, frac_bits: int) -> IntVector:
    """Nearest-integer image of ``vec·2^f`` (deterministic; a public function of the sum)."""
    scaled = np.asarray(vec, dtype=np.float64) * 2.0**frac_bits
    if not np.all(np.isfinite(scaled)) or (
        scaled.size and float(np.max(np.abs(scaled))) > _MAX_GRID
    ):
        raise InvalidParameterError("sum is not finite or too large for the grid", parameter="sum")
    return np.rint(scaled).astype(np.int64)


def add_grid_noise(
    grid_sum: IntVector, config: DpFedAvgConfig, *, rng: CryptoRandom | None = None
) -> IntVector:
    """grid_sum + N_Z(0, σ_grid²)^d, exact, from the cryptographic source."""
    arr = np.asarray(grid_sum)
    if arr.ndim != 1 or arr.dtype != np.int64:
        raise InvalidParameterError("must be a 1-D int64 vector", parameter="grid_sum")
    sigma = config.grid_sigma(arr.size)
    return arr + discrete_gaussian(arr.size, sigma, rng=rng)


def release(noisy_grid_sum: IntVector, config: DpFedAvgConfig) -> FloatVector:
    """Post-processing: noisy integer sum → float average with the FIXED denominator."""
    return np.asarray(noisy_grid_sum, dtype=np.float64) * (
        2.0**-config.frac_bits / config.expected_cohort
    )


def dp_fedavg_round(
    updates: Mapping[int, npt.ArrayLike],
    config: DpFedAvgConfig,
    *,
    weights: Mapping[int, float] | None = None,
    rng: CryptoRandom | None = None,
) -> DpFedAvgResult:
    """One plaintext-server DP-FedAvg round over the updates that arrived.

    The denominator is ``config.expected_cohort`` whatever ``len(updates)`` is.
    """
    if not updates:
        raise InvalidParameterError("no client updates", parameter="updates")
    dims = {np.asarray(u).shape for u in updates.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise InvalidParameterError(
            "updates must be flat vectors of one length", parameter="updates"
        )
    d = next(iter(dims))[0]
    total = np.zeros(d, dtype=np.float64)
    clipped = 0
    for cid, upd in updates.items():
        w = 1.0 if weights is None else weights.get(cid, 1.0)
        contrib, was_clipped = clip_and_weight(upd, config, w)
        total += contrib
        clipped += int(was_clipped)
    noisy = add_grid_noise(to_grid(total, config.frac_bits), config, rng=rng)
    return DpFedAvgResult(
        average=release(noisy, config),
        noisy_grid_sum=noisy,
        event=config.round_event(d),
        params=config.to_dict(d) | {"participants": len(updates)},
        clipped_clients=clipped,
    )
