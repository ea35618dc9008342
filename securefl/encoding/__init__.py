"""Fixed-point encoding of float updates into Z_{2^b} and the overflow planner.

See ``protocols/secagg-primitives.md`` §5–6. Public API: :func:`plan_ring`, :class:`RingPlan`,
:func:`encode`, :class:`EncodedVector`, :func:`decode_sum`, :func:`error_bound`.
"""

from __future__ import annotations

from securefl.encoding.fixed_point import EncodedVector, decode_sum, encode, error_bound
from securefl.encoding.ring import MAX_BITS, MAX_FRAC_BITS, RingPlan, plan_ring

__all__ = [
    "MAX_BITS",
    "MAX_FRAC_BITS",
    "EncodedVector",
    "RingPlan",
    "decode_sum",
    "encode",
    "error_bound",
    "plan_ring",
]
