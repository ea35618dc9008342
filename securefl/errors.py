"""Typed errors shared by every layer.

Errors are split by who is at fault, as h11 does: a :class:`LocalProtocolError` means our
caller misused us (wrong config, call out of order); a :class:`RemoteProtocolError` means a
peer (possibly a malicious server or client) sent something invalid or dangerous. Every error
says *what* was wrong, never the secret or plaintext value involved.
"""

from __future__ import annotations


class SecureFLError(Exception):
    """Base class of every error raised on purpose by securefl."""


class ConfigurationError(SecureFLError, ValueError):
    """A parameter or configuration is invalid; ``parameter`` names it."""

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message if parameter is None else f"{parameter}: {message}")
        self.parameter = parameter


def require_positive(name: str, value: object) -> None:
    """Refuse anything but a finite real number > 0 (bools, NaN, ±inf included)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value  # NaN
        or value in (float("inf"), float("-inf"))
        or value <= 0
    ):
        raise ConfigurationError(f"must be a finite number > 0, got {value!r}", parameter=name)


class ProtocolError(SecureFLError):
    """A protocol step cannot proceed (base of local and remote protocol errors)."""


class LocalProtocolError(ProtocolError):
    """Our own caller misused a state machine (call out of order, inconsistent config)."""


class RemoteProtocolError(ProtocolError):
    """A peer's message is malformed, out of range, replayed, or asks for something unsafe."""


class MalformedMessageError(RemoteProtocolError):
    """Bytes on the wire do not parse as a valid message (lengths, counts, ids, limits)."""


class ReplayError(RemoteProtocolError):
    """A message belongs to another session, round or stage."""


class UnsafeRequestError(RemoteProtocolError):
    """An honest client refuses a request that would unmask it or weaken its guarantees."""


class AbortError(ProtocolError):
    """The round cannot complete safely (e.g. fewer than the threshold of clients remain)."""


class PrivacyBudgetExceededError(SecureFLError):
    """A round or query would exceed the configured privacy budget or policy."""
