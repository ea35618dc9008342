"""L2 clipping whose output provably never exceeds the clip norm C.

DP sensitivity arguments need ‖clip(x)‖₂ ≤ C *exactly*; x·(C/‖x‖) in floating point can
land a few ulps above C. We scale by min(1, C/‖x‖), re-measure, and while the result is still
above C·(1 − 2^−36) shrink the factor by one ulp-scale step (at most a handful of
iterations). The 2^−36 slack dominates the rounding error of the (pairwise-summed) norm
itself (≈ log₂(d)·2^−53), so the *exact* norm of the returned floats is ≤ C too.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError

FloatVector = npt.NDArray[np.float64]


def l2_norm(flat: FloatVector) -> float:
    """‖x‖₂ computed without overflow for large finite entries."""
    peak = float(np.max(np.abs(flat))) if flat.size else 0.0
    if peak == 0.0:
        return 0.0
    scaled = flat / peak
    return peak * math.sqrt(float(np.dot(scaled, scaled)))


def clip_l2(flat: npt.ArrayLike, clip: float) -> tuple[FloatVector, float]:
    """Return (x·min(1, C/‖x‖₂), ‖x‖₂) with ‖output‖₂ ≤ C guaranteed.

    Raises :class:`InvalidParameterError` for C ≤ 0, NaN/inf C, or NaN/inf entries.
    """
    c = v.positive("clip", clip)
    x = np.asarray(flat, dtype=np.float64)
    if x.ndim != 1:
        raise InvalidParameterError(f"must be a flat vector, got shape {x.shape}", parameter="flat")
    if not np.all(np.isfinite(x)):
        raise InvalidParameterError("contains NaN or infinite entries", parameter="flat")
    norm = l2_norm(x)
    if norm <= c:
        return x.copy(), norm
    target = c * (1.0 - 2.0**-36)
    factor = target / norm
    out = x * factor
    while l2_norm(out) > target:
        factor = math.nextafter(factor, 0.0) * (1.0 - 2.0**-50)
        out = x * factor
    return out, norm
