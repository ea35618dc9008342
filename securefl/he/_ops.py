"""Chunk-level CKKS work, run in-process or in pool workers (same code either way).

One ciphertext per chunk of ``slot_count`` consecutive values of the flat vector, so only the
last chunk is partial and no slot is wasted at tensor boundaries (the layout is flat).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.he.errors import ContextMismatchError, MalformedCiphertextError

#: Deserialised contexts cached per process, keyed by SHA-256 of their TenSEAL bytes.
_CONTEXTS: dict[bytes, Any] = {}
_MAX_CACHED = 8


@dataclass(frozen=True)
class ChunkSpec:
    """What each received ciphertext must look like after TenSEAL parsed it."""

    level: int
    parms_id: tuple[int, ...]
    scale: float


def context_for(ts_bytes: bytes) -> Any:
    """Load (once per process) the TenSEAL context whose bytes the parent already validated."""
    key = hashlib.sha256(ts_bytes).digest()
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        import tenseal as ts

        ctx = ts.context_from(ts_bytes, n_threads=1)
        if len(_CONTEXTS) >= _MAX_CACHED:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = ctx
    return ctx


def encrypt_range(ctx: Any, flat: npt.NDArray[np.float64], slot_count: int) -> list[bytes]:
    """Encrypt consecutive chunks of ``flat`` (public-key encryption) and serialise each.

    Calls TenSEAL's C++ ``CKKSVector(context, list[float])`` (what ``ts.ckks_vector`` ends in)
    directly: skipping its Python PlainTensor conversion saves ~5-8 % of encryption time.
    """
    import tenseal as ts

    make = ts._ts_cpp.CKKSVector  # pinned tenseal==0.3.18 (pyproject [he] extra)
    data = ctx.data
    return [
        make(data, flat[i : i + slot_count].tolist()).serialize()
        for i in range(0, flat.shape[0], slot_count)
    ]


def load(ctx: Any, chunk: bytes, where: str) -> Any:
    """Deserialise one pre-checked chunk; TenSEAL/SEAL errors become typed errors.

    SEAL's loader checks the ciphertext is valid for the context (parms_id in its chain,
    coefficients reduced); level, size and scale are checked by :func:`check` on the result.
    """
    import tenseal as ts

    try:
        return ts.ckks_vector_from(ctx, chunk)
    except Exception as exc:
        raise MalformedCiphertextError(f"{where}: TenSEAL rejects the ciphertext ({exc})") from exc


def check(vec: Any, spec: ChunkSpec, where: str) -> None:
    """One ciphertext of 2 NTT polynomials at the expected level and scale."""
    cts = vec.ciphertext()
    if len(cts) != 1:
        raise MalformedCiphertextError(f"{where}: {len(cts)} ciphertexts in one chunk")
    ct = cts[0]
    if ct.size() != 2 or not ct.is_ntt_form():
        raise MalformedCiphertextError(f"{where}: not a 2-component NTT ciphertext")
    if ct.coeff_modulus_size() != spec.level:
        raise MalformedCiphertextError(
            f"{where}: {ct.coeff_modulus_size()} primes, expected {spec.level}"
        )
    if tuple(int(x) for x in ct.parms_id()) != spec.parms_id:
        raise ContextMismatchError(f"{where}: parameters (parms_id) differ from the context's")
    if ct.scale != spec.scale:
        raise ContextMismatchError(f"{where}: ciphertext scale differs from the preset's")


def load_checked(ctx: Any, chunk: bytes, spec: ChunkSpec, where: str) -> Any:
    vec = load(ctx, chunk, where)
    check(vec, spec, where)
    return vec


def load_update(ctx: Any, chunks: Sequence[bytes], spec: ChunkSpec, who: str) -> list[Any]:
    """Parse and check every chunk of one update before any of it touches the running sum, so
    a bad update is rejected whole and the sum stays valid."""
    return [load_checked(ctx, c, spec, f"{who}, chunk {j}") for j, c in enumerate(chunks)]


def accumulate(acc: list[Any], vecs: list[Any], weight: float | None) -> None:
    """acc += weight·vecs chunk by chunk (acc empty: start it). Server weights are a plaintext
    multiply + rescale; Δ = q1 makes the rescale divide by exactly Δ (§5)."""
    for j, vec in enumerate(vecs):
        if weight is not None:
            vec.mul_(weight)
        if len(acc) <= j:
            acc.append(vec)
        else:
            acc[j].add_(vec)


def finish(acc: list[Any], out_spec: ChunkSpec, reduce_level: bool) -> list[bytes]:
    """Drop to the download level where the preset allows, check, serialise.

    Multiplying by 1.0 encoded as the integer q1 and rescaling is an exact modulus switch:
    round(c·q1 / q1) = c mod q0 (TenSEAL exposes no mod-switch).
    """
    out = []
    for j, vec in enumerate(acc):
        if reduce_level:
            try:
                vec.mul_(1.0)
            except Exception as exc:
                raise MalformedCiphertextError(f"chunk {j}: cannot reduce the sum ({exc})") from exc
        check(vec, out_spec, f"aggregate chunk {j}")
        out.append(vec.serialize())
    return out


def decrypt_range(ctx: Any, chunks: Sequence[bytes], spec: ChunkSpec, first_chunk: int) -> Any:
    """Decrypt consecutive aggregate chunks into one float64 vector."""
    parts = [
        np.asarray(load_checked(ctx, c, spec, f"aggregate chunk {first_chunk + j}").decrypt())
        for j, c in enumerate(chunks)
    ]
    return np.concatenate(parts).astype(np.float64)


# ----- pool entry points (module-level so they pickle) -------------------------------------


def task_encrypt(ts_bytes: bytes, flat: npt.NDArray[np.float64], slot_count: int) -> list[bytes]:
    return encrypt_range(context_for(ts_bytes), flat, slot_count)


def task_decrypt(
    ts_bytes: bytes, chunks: Sequence[bytes], spec: ChunkSpec, first_chunk: int
) -> Any:
    return decrypt_range(context_for(ts_bytes), chunks, spec, first_chunk)
