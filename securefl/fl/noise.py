"""Central Gaussian noise for DP-FedAvg, from a cryptographic source.

Uses :mod:`securefl.dp.sampling` when present. The fallback draws Box–Muller normals from
``os.urandom`` (53-bit uniforms): cryptographic randomness, but floating-point Gaussian sampling
has known precision leaks (Mironov 2012) that the dp layer's sampler is meant to address.
"""

from __future__ import annotations

import os

import numpy as np

from securefl.errors import ConfigurationError
from securefl.tensors import FloatVector


def _uniform_open(n: int) -> FloatVector:
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return (words.astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1)


def gaussian(d: int, sigma: float) -> FloatVector:
    """d i.i.d. N(0, σ²) values from a cryptographic source."""
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ConfigurationError("must be finite and ≥ 0", parameter="sigma")
    if sigma == 0 or d == 0:
        return np.zeros(d, dtype=np.float64)
    try:
        from securefl.dp import sampling

        fn = getattr(sampling, "gaussian", None)
        if fn is not None:
            return np.asarray(fn(d, sigma), dtype=np.float64)
    except ImportError:
        pass
    half = (d + 1) // 2
    u1, u2 = _uniform_open(half), _uniform_open(half)
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return sigma * z[:d]
