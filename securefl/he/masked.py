"""Mitigation (b): CKKS over pairwise-masked ring elements (protocols/he_ckks.md §3).

Clients mask their fixed-point update in Z_{2^b} as in SecAgg (Bonawitz et al. 2017, §4: masks
PRG(k_ij) that cancel in the sum), then encrypt the masked elements split into 8-bit limbs.
Each limb sum is an integer < n·2^8, so with n·255 ≤ max |Σ| and CKKS error ≪ ½ the key holder
recovers limb sums exactly by rounding and recombines them modulo 2^b. A key holder colluding
with the server who decrypts one client's ciphertext sees only y_i = x_i + masks (uniform while
the client's pairwise peers are honest). The limb sums reveal the integer Σ y_i, whose
distribution given the masks depends only on Σ x_i mod 2^b: nothing beyond the ring sum.

Dropped clients' masks are handled as in SecAgg: the server reconstructs the uncancelled mask
sum in the clear and the key holder adds it after :func:`limbs_to_ring` (mod 2^b).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.he.errors import MalformedCiphertextError
from securefl.he.params import HEPreset

LIMB_BITS = 8
_LIMB_MAX = (1 << LIMB_BITS) - 1


def _limb_count(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ConfigurationError("must be an int in 1..64", parameter="bits")
    return -(-bits // LIMB_BITS)


def max_masked_clients(preset: HEPreset) -> int:
    """Largest n for which n limb values of ≤ 255 cannot wrap under the preset."""
    if preset.max_abs_value < _LIMB_MAX:
        return 0
    return min(preset.max_clients, int(preset.max_abs_sum // _LIMB_MAX))


def ring_to_limbs(values: npt.NDArray[np.unsignedinteger], bits: int) -> npt.NDArray[np.float64]:
    """Ring elements in [0, 2^bits) → ⌈bits/8⌉ limb blocks (limb-major), as float64 ≤ 255."""
    k = _limb_count(bits)
    v = np.asarray(values)
    if v.ndim != 1 or v.dtype not in (np.uint32, np.uint64):
        raise ConfigurationError("need a 1-D uint32 or uint64 array", parameter="values")
    if bits < 64 and np.any(v >> np.asarray(bits, dtype=v.dtype)):
        raise ConfigurationError(f"values must be < 2^{bits}", parameter="values")
    shifts = (np.arange(k, dtype=np.uint64) * LIMB_BITS)[:, None]
    limbs = (v.astype(np.uint64)[None, :] >> shifts) & np.uint64(_LIMB_MAX)
    return limbs.reshape(-1).astype(np.float64)


def limbs_to_ring(
    limb_sums: npt.NDArray[np.float64], bits: int, n_clients: int, tolerance: float
) -> npt.NDArray[np.uint64]:
    """Σ_i limbs(y_i) (decrypted, error ≤ tolerance < ½) → Σ_i y_i mod 2^bits, exactly."""
    k = _limb_count(bits)
    if not 0 < tolerance < 0.5:
        raise ConfigurationError("must be in (0, 0.5)", parameter="tolerance")
    s = np.asarray(limb_sums, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] % k:
        raise ConfigurationError(f"length must be a multiple of {k}", parameter="limb_sums")
    r = np.rint(s)
    if np.any(np.abs(s - r) > tolerance) or np.any(r < 0) or np.any(r > n_clients * _LIMB_MAX):
        raise MalformedCiphertextError(
            "limb sums are not integers in [0, n·255]: wrong n, a malicious client, or an "
            "error beyond the stated bound"
        )
    ints = r.astype(np.uint64).reshape(k, -1)
    total = np.zeros(ints.shape[1], dtype=np.uint64)
    for j in range(k):  # uint64 arithmetic wraps mod 2^64, a multiple of 2^bits
        total += ints[j] << np.uint64(j * LIMB_BITS)
    if bits < 64:
        total &= np.uint64((1 << bits) - 1)
    return total
