"""What leaves the key holder: the decrypted aggregate, rounded and optionally noise-flooded.

CKKS decryption returns m + e; the error e is a linear function of the secret key, so releasing
exact decryptions of ciphertexts an adversary helped build lets it recover the key
(Li–Micciancio, EUROCRYPT 2021, IND-CPA^D). SEAL/TenSEAL have no mitigation, so we apply one:

* ``round`` (default): round every coordinate to the grid g = 2^⌈log2 B⌉, B the stated raw
  error bound, evaluated at the key holder's own cohort/weight caps (never a server claim).
  This removes the low-order bits that carry e for coordinates away from a grid boundary; it
  is a heuristic (an adversary who chooses inputs near a boundary learns about one
  bit of e per query), documented as such in protocols/he_ckks.md §7.
* ``flood_sigma``: add discrete Gaussian noise on the same grid from a cryptographic sampler
  (``securefl.dp.sampling``). Errors e, e' within ±B ≤ g move the rounded value by k ≤ 2 grid
  steps, and a shift by k steps moves N_Z(0, (σ/g)²) by ≤ k·g/(2σ) in statistical distance
  (smudging), i.e. ≤ g/σ per coordinate: the metadata states ``flooding_bits = log2(σ/g)``.
  With central DP (securefl.dp) the DP noise, added here before release, is such flooding.
* ``CentralNoise``: client-level central DP (DP-FedAvg, ``securefl.dp.fedavg``) applied *inside*
  the key holder: the decrypted sum is put on the 2^-f grid and the exact discrete Gaussian
  N_Z(0, σ_grid²) of the DP event is added before anything leaves it (McMahan et al. 2018 §2;
  Canonne–Kamath–Steinke 2020). Whoever receives the release — the server included — sees only
  the noisy sum; the key holder is the one party that sees the noiseless sum (he_ckks.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.tensors import TensorLayout

if TYPE_CHECKING:
    from securefl.dp.fedavg import DpFedAvgConfig


@dataclass(frozen=True)
class ReleasePolicy:
    """How the key holder releases a decrypted aggregate (recorded in the metadata)."""

    flood_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.flood_sigma is not None and not (
            math.isfinite(self.flood_sigma) and self.flood_sigma > 0
        ):
            raise ConfigurationError("must be a positive finite float", parameter="flood_sigma")


@dataclass(frozen=True)
class CentralNoise:
    """Central DP noise the key holder adds to the decrypted sum before releasing it.

    ``config`` is the DP-FedAvg configuration whose ``round_event(d)`` the caller records;
    ``tensors`` names the tensors of the layout that carry the model update (``None``: every
    coordinate). Coordinates outside ``tensors`` are released rounded only, so they may hold only
    what the receiver already knows (e.g. the count of unit weights, which the server sees).
    """

    config: DpFedAvgConfig
    tensors: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from securefl.dp.fedavg import DpFedAvgConfig

        if not isinstance(self.config, DpFedAvgConfig):
            raise ConfigurationError(
                "must be a securefl.dp.fedavg.DpFedAvgConfig", parameter="noise"
            )
        if self.tensors is not None and (
            not self.tensors
            or not all(isinstance(t, str) and t for t in self.tensors)
            or len(set(self.tensors)) != len(self.tensors)
        ):
            raise ConfigurationError(
                "a non-empty tuple of distinct tensor names, or None", parameter="noise.tensors"
            )

    def coordinates(self, layout: TensorLayout) -> npt.NDArray[np.int64]:
        """Indices of the noised coordinates in the flat vector (layout order)."""
        if self.tensors is None:
            return np.arange(layout.size, dtype=np.int64)
        missing = sorted(set(self.tensors) - set(layout.names))
        if missing:
            raise ConfigurationError(
                f"tensors {missing} are not in the aggregate's layout", parameter="noise.tensors"
            )
        wanted = set(self.tensors)
        parts = [
            np.arange(a, b, dtype=np.int64) for sp, a, b in layout.offsets() if sp.name in wanted
        ]
        return np.concatenate(parts)


def add_central_noise(
    values: npt.NDArray[np.float64], raw_bound: float, noise: CentralNoise
) -> tuple[npt.NDArray[np.int64], dict[str, object]]:
    """to_grid → + N_Z(0, σ_grid²) with securefl.dp.fedavg's own mechanism; the noisy integers.

    The CKKS error e (|e| ≤ ``raw_bound``) moves the grid integer by k ≤ ⌈raw·2^f⌉ + 1 steps,
    so the noise also floods e: statistical distance ≤ k/(2σ_grid) per coordinate (§7).
    """
    from securefl.dp.fedavg import add_grid_noise, to_grid

    cfg = noise.config
    d = int(values.shape[0])
    noisy = add_grid_noise(to_grid(values, cfg.frac_bits), cfg)
    sigma = cfg.grid_sigma(d)
    shift = math.ceil(raw_bound * 2.0**cfg.frac_bits) + 1
    meta: dict[str, object] = {
        "central_noise": {
            **cfg.to_dict(d),
            "noised_tensors": "all" if noise.tensors is None else list(noise.tensors),
            "sampler": "securefl.dp.sampling.discrete_gaussian (AES-CTR, os.urandom key)",
            "added_by": "key_holder",
        },
        "noise_grid_sigma": sigma,
        "noise_grid": 2.0**-cfg.frac_bits,
        "flooding_bits": math.log2(2.0 * sigma / shift),
    }
    return noisy, meta


def _discrete_gaussian(size: int, sigma: int) -> npt.NDArray[np.int64]:
    try:
        from securefl.dp import sampling
    except ImportError as exc:
        raise ConfigurationError(
            "noise flooding needs securefl.dp.sampling.discrete_gaussian (dp layer)",
            parameter="flood_sigma",
        ) from exc
    draw: Any = sampling.discrete_gaussian
    return np.asarray(draw(size, sigma), dtype=np.int64)


def apply(
    values: npt.NDArray[np.float64], raw_bound: float, grid: float, policy: ReleasePolicy
) -> tuple[npt.NDArray[np.float64], dict[str, object]]:
    """Round to ``grid`` (and flood if asked); return released values and what was done."""
    steps = np.rint(values / grid)
    meta: dict[str, object] = {
        "release": "round",
        "release_grid": grid,
        "raw_error_bound": raw_bound,
        "released_error_bound": raw_bound + grid / 2.0,
    }
    if policy.flood_sigma is not None:
        # integer σ in grid steps takes the sampler's exact vectorised path (CKS 2020)
        sigma_steps = max(1, round(policy.flood_sigma / grid))
        if sigma_steps > 2**30:
            raise ConfigurationError("too large for the release grid", parameter="flood_sigma")
        steps = steps + _discrete_gaussian(values.shape[0], sigma_steps)
        sigma = sigma_steps * grid
        meta["release"] = "round+flood"
        meta["flood_sigma"] = sigma
        meta["flooding_bits"] = math.log2(sigma / grid)
    return steps * grid, meta
