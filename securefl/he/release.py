"""What leaves the key holder: the decrypted aggregate, rounded and optionally noise-flooded.

CKKS decryption returns m + e; the error e is a linear function of the secret key, so releasing
exact decryptions of ciphertexts an adversary helped build lets it recover the key
(Li–Micciancio, EUROCRYPT 2021, IND-CPA^D). SEAL/TenSEAL have no mitigation, so we apply one:

* ``round`` (default): round every coordinate to the grid g = 2^⌈log2 B⌉, B the stated raw
  error bound. This removes the low-order bits that carry e for coordinates away from a grid
  boundary; it is a heuristic (an adversary who chooses inputs near a boundary learns about one
  bit of e per query), documented as such in protocols/he_ckks.md §7.
* ``flood_sigma``: add discrete Gaussian noise on the same grid from a cryptographic sampler
  (``securefl.dp.sampling``). Errors e, e' within ±B ≤ g move the rounded value by k ≤ 2 grid
  steps, and a shift by k steps moves N_Z(0, (σ/g)²) by ≤ k·g/(2σ) in statistical distance
  (smudging), i.e. ≤ g/σ per coordinate: the metadata states ``flooding_bits = log2(σ/g)``.
  With central DP (securefl.dp) the DP noise, added here before release, is such flooding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError


@dataclass(frozen=True)
class ReleasePolicy:
    """How the key holder releases a decrypted aggregate (recorded in the metadata)."""

    flood_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.flood_sigma is not None and not (
            math.isfinite(self.flood_sigma) and self.flood_sigma > 0
        ):
            raise ConfigurationError("must be a positive finite float", parameter="flood_sigma")


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
