"""Homomorphic aggregation with TenSEAL CKKS (protocols/he_ckks.md).

Clients encrypt with a public key, the server adds ciphertexts it cannot read, and a separate
key holder decrypts only the aggregate and releases it rounded (and noise-flooded, or DP-noised
with ``CentralNoise``).
"""

from __future__ import annotations

from securefl.he.errors import (
    ContextMismatchError,
    InsecureParametersError,
    MalformedCiphertextError,
    SecretKeyExposureError,
)
from securefl.he.params import (
    HE_STANDARD_128,
    PRESETS,
    HEPreset,
    get_preset,
    raw_error_bound,
    released_error_bound,
)
from securefl.he.release import CentralNoise, ReleasePolicy
from securefl.he.roles import HEClient, HEDecryption, HEServer, KeyHolder

__all__ = [
    "HE_STANDARD_128",
    "PRESETS",
    "CentralNoise",
    "ContextMismatchError",
    "HEClient",
    "HEDecryption",
    "HEPreset",
    "HEServer",
    "InsecureParametersError",
    "KeyHolder",
    "MalformedCiphertextError",
    "ReleasePolicy",
    "SecretKeyExposureError",
    "get_preset",
    "raw_error_bound",
    "released_error_bound",
]
