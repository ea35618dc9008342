"""TenSEAL contexts for the three roles, wrapped in a versioned context envelope.

Roles (protocols/he_ckks.md §2): the *key holder* makes the secret key; *clients* and the
*server* get a public context (public key and parameters only: no secret, relinearisation or
Galois keys, since aggregation needs none). A public context that turns out to hold a secret
key is refused (:class:`SecretKeyExposureError`): a server that can decrypt defeats the design.

Context envelope: ``b"SFHC" | u8 version=1 | u8 role (1 public, 2 secret) | u32 len | preset
JSON | u32 len | TenSEAL context bytes``. The context fingerprint (bound into every ciphertext
envelope) is SHA-256 over the preset JSON and the public TenSEAL bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from securefl.errors import ConfigurationError
from securefl.he.errors import (
    ContextMismatchError,
    InsecureParametersError,
    MalformedCiphertextError,
    SecretKeyExposureError,
)
from securefl.he.params import HEPreset
from securefl.he.wire import read_varint

CONTEXT_MAGIC = b"SFHC"
CONTEXT_VERSION = 1
ROLE_PUBLIC = 1
ROLE_SECRET = 2
#: Upper bound on a context envelope (a public context at N = 32768 with 881 bits is ~7 MiB).
MAX_CONTEXT_BYTES = 32 * 1024 * 1024
_FP_DOMAIN = b"securefl/he/context/v1\x00"


@dataclass(frozen=True)
class ContextInfo:
    """What every role knows about the parameters: used to validate peers' ciphertexts."""

    preset: HEPreset
    fingerprint: bytes
    parms_ids: dict[int, tuple[int, ...]]  # number of primes → SEAL parms_id at that level
    seal_version: tuple[int, int]  # (major, minor) written in SEAL headers by this TenSEAL

    def max_chunk_bytes(self, level: int) -> int:
        """Largest serialised chunk: 2 polynomials × N × level words + framing."""
        return 16 * self.preset.poly_modulus_degree * level + 1024


def _ts() -> Any:
    try:
        import tenseal
    except ImportError as exc:  # pragma: no cover - the [he] extra is missing
        raise ConfigurationError(
            "TenSEAL is not installed; install securefl[he]", parameter="tenseal"
        ) from exc
    return tenseal


def level_parms_ids(preset: HEPreset) -> dict[int, tuple[int, ...]]:
    """SEAL's parms_id of each data level, computed independently of any received context."""
    from tenseal import sealapi

    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(preset.poly_modulus_degree)
    parms.set_coeff_modulus(
        sealapi.CoeffModulus.Create(preset.poly_modulus_degree, list(preset.coeff_mod_bit_sizes))
    )
    level = sealapi.SEC_LEVEL_TYPE.NONE if preset.allow_insecure else sealapi.SEC_LEVEL_TYPE.TC128
    seal_ctx = sealapi.SEALContext(parms, True, level)
    if not seal_ctx.parameters_set():
        raise InsecureParametersError(
            f"SEAL rejects the parameters: {seal_ctx.parameters_error_message()}",
            parameter="coeff_mod_bit_sizes",
        )
    out: dict[int, tuple[int, ...]] = {}
    data = seal_ctx.first_context_data()
    while data is not None:
        out[len(data.parms().coeff_modulus())] = tuple(int(x) for x in data.parms_id())
        data = data.next_context_data()
    return out


def new_secret_context(preset: HEPreset) -> Any:
    """A fresh TenSEAL CKKS context with a secret key (key-holder side only)."""
    ts = _ts()
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=preset.poly_modulus_degree,
            coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
            n_threads=1,
        )
    except ValueError as exc:
        raise InsecureParametersError(
            f"TenSEAL/SEAL refuses the parameters ({exc}); SEAL enforces the 128-bit table, so "
            "an allow_insecure preset can be described and recorded but not instantiated",
            parameter="coeff_mod_bit_sizes",
        ) from exc
    ctx.global_scale = preset.scale
    return ctx


def public_tenseal_bytes(ctx: Any) -> bytes:
    """Serialise the public key and parameters only (no secret, relin or Galois keys)."""
    data: bytes = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


def fingerprint(preset: HEPreset, public_ts_bytes: bytes) -> bytes:
    h = hashlib.sha256(_FP_DOMAIN)
    h.update(preset.canonical_json().encode())
    h.update(hashlib.sha256(public_ts_bytes).digest())
    return h.digest()


def pack_context(preset: HEPreset, role: int, ts_bytes: bytes) -> bytes:
    pj = preset.canonical_json().encode()
    return b"".join(
        (
            CONTEXT_MAGIC,
            struct.pack(">BBI", CONTEXT_VERSION, role, len(pj)),
            pj,
            struct.pack(">I", len(ts_bytes)),
            ts_bytes,
        )
    )


def unpack_context(data: bytes, *, allow_insecure: bool) -> tuple[HEPreset, int, bytes]:
    """Parse a context envelope; refuse insecure presets unless *our* caller allowed them."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCiphertextError("context must be bytes")
    data = bytes(data)
    if len(data) > MAX_CONTEXT_BYTES:
        raise MalformedCiphertextError(f"context of {len(data)} bytes exceeds the limit")
    if len(data) < 10 or data[:4] != CONTEXT_MAGIC:
        raise MalformedCiphertextError("not a securefl HE context (bad magic)")
    version, role, pj_len = struct.unpack_from(">BBI", data, 4)
    if version != CONTEXT_VERSION:
        raise MalformedCiphertextError(f"unsupported context version {version}")
    if role not in (ROLE_PUBLIC, ROLE_SECRET):
        raise MalformedCiphertextError(f"unknown context role {role}")
    pos = 10
    if pos + pj_len + 4 > len(data):
        raise MalformedCiphertextError("context envelope truncated (preset)")
    try:
        described = json.loads(data[pos : pos + pj_len].decode())
        if not isinstance(described, dict):
            raise TypeError("preset must be a JSON object")
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise MalformedCiphertextError(
            f"context preset is not valid JSON ({type(exc).__name__})"
        ) from None
    try:
        preset = HEPreset.from_dict(described)
    except InsecureParametersError:
        raise
    except ConfigurationError as exc:
        raise MalformedCiphertextError(f"context preset invalid ({exc})") from exc
    if not preset.meets_128_bit and not allow_insecure:
        raise InsecureParametersError(
            "the received context is below 128-bit security; refusing it (allow_insecure=False)",
            parameter="context",
        )
    pos += pj_len
    (ts_len,) = struct.unpack_from(">I", data, pos)
    pos += 4
    if pos + ts_len != len(data):
        raise MalformedCiphertextError("context envelope length mismatch")
    return preset, role, data[pos:]


def load_public_context(
    data: bytes, *, allow_insecure: bool = False
) -> tuple[Any, ContextInfo, bytes]:
    """Load a client/server context (and return its TenSEAL bytes); a secret key is an error."""
    preset, role, ts_bytes = unpack_context(data, allow_insecure=allow_insecure)
    if role != ROLE_PUBLIC:
        raise SecretKeyExposureError(
            "this context is marked as holding the secret key; clients and the server must get "
            "KeyHolder.public_context_bytes() / server_context_bytes()"
        )
    ts = _ts()
    try:
        ctx = ts.context_from(ts_bytes, n_threads=1)
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad protobufs
        raise MalformedCiphertextError(f"TenSEAL cannot load the context ({exc})") from exc
    if ctx.is_private() or ctx.has_secret_key():
        raise SecretKeyExposureError(
            "the context holds a secret key: a public (client/server) context must not decrypt"
        )
    if not ctx.has_public_key():
        raise ContextMismatchError("the context has no public key")
    return ctx, make_info(ctx, preset, ts_bytes), ts_bytes


def make_info(ctx: Any, preset: HEPreset, public_ts_bytes: bytes) -> ContextInfo:
    """Derive the validation facts for ``ctx`` and check it really has the preset's parameters."""
    if ctx.global_scale != preset.scale:  # checked first: TenSEAL cannot encrypt at a bad scale
        raise ContextMismatchError("context scale differs from the preset's")
    try:
        probe = _ts().ckks_vector(ctx, [0.0])
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError
        raise ContextMismatchError(f"TenSEAL cannot encrypt under the context ({exc})") from None
    ct = probe.ciphertext()[0]
    raw = probe.serialize()
    # CKKSVectorProto: sizes field (3 bytes for one value), tag 0x12, varint length, SEAL header
    _, pos = read_varint(raw, 4)
    seal_version = (raw[pos + 3], raw[pos + 4])
    info = ContextInfo(
        preset, fingerprint(preset, public_ts_bytes), level_parms_ids(preset), seal_version
    )
    if tuple(int(x) for x in ct.parms_id()) != info.parms_ids[preset.data_prime_count]:
        raise ContextMismatchError("context parameters (N, primes) differ from the preset's")
    return info
