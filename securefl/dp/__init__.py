"""Differential privacy: events as data, accountants as their interpreters, and mechanisms.

See ``protocols/dp.md`` for the privacy units, adjacency, formulas and the floating-point
mitigation. Heavy dependencies (opacus, dp-accounting, torch) are imported lazily.
"""

from securefl.dp.errors import InvalidParameterError, SamplingMismatchError, UnsupportedEventError

__all__ = ["InvalidParameterError", "SamplingMismatchError", "UnsupportedEventError"]
