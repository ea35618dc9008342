"""Typed errors of the DP layer (subclasses of :mod:`securefl.errors`)."""

from __future__ import annotations

from securefl.errors import ConfigurationError


class InvalidParameterError(ConfigurationError):
    """A DP parameter is out of range, NaN or infinite; ``parameter`` names it."""


class SamplingMismatchError(ConfigurationError):
    """The sampling the loop performed is not the sampling that was declared and accounted."""


class UnsupportedEventError(ConfigurationError):
    """An accountant was asked about an event it cannot account for soundly."""


class AccountingRangeError(InvalidParameterError):
    """Valid parameters outside the range an accountant's numerics can evaluate soundly."""
