"""Typed errors of the fine-tuning loop (subclasses of the shared ones in securefl.errors)."""

from __future__ import annotations

from securefl.errors import ConfigurationError, SecureFLError


class DataError(ConfigurationError):
    """User data cannot be loaded: missing file/column, empty text, unknown label, bad JSON."""


class UnsupportedCombinationError(ConfigurationError):
    """An aggregation × DP combination that does not make sense; the message says why."""


class ResumeError(SecureFLError):
    """A run directory cannot be resumed (different config, damaged checkpoint or ledger)."""


class EncodingRangeError(ConfigurationError):
    """An update does not fit the range the secure-aggregation ring was sized for.

    Refused instead of clipped: a silent clip changes the model without anyone knowing
    (issue 12, hole 9). The fix is a larger stated bound or a DP clip.
    """
