"""Typed errors of batched client training (subclasses of the shared ones in securefl.errors)."""

from __future__ import annotations

from securefl.errors import ConfigurationError, SecureFLError


class CohortError(ConfigurationError):
    """The cohort handed to the batched trainer is unusable: empty, mismatched ids/data, a
    client without examples, a global state of the wrong shape or with NaN/Inf entries."""


class UnsupportedModelError(ConfigurationError):
    """The model has an adapter the batched path cannot reproduce exactly (e.g. DoRA)."""


class TrainingDivergedError(SecureFLError):
    """Local training produced a non-finite update for a client (lower the learning rate).

    Raised instead of returning NaN rows: a NaN would otherwise reach the encoder or the
    aggregate (the per-client loop's update is refused later by ``ClientUpdate.validate``).
    """
