"""Typed errors of the CKKS backend, subclassing the shared hierarchy in ``securefl.errors``."""

from __future__ import annotations

from securefl.errors import ConfigurationError, LocalProtocolError, MalformedMessageError


class InsecureParametersError(ConfigurationError):
    """A parameter set is below 128-bit security (HE Standard table) and no override was given."""


class SecretKeyExposureError(LocalProtocolError):
    """A context that must be public (server, client) holds the secret key: refuse to use it."""


class MalformedCiphertextError(MalformedMessageError):
    """Ciphertext bytes from a peer fail validation (envelope, limits, TenSEAL parsing)."""


class ContextMismatchError(MalformedCiphertextError):
    """A ciphertext or context was made under other parameters, another key or another layout."""
