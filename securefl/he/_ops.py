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
    """Encrypt consecutive chunks of ``flat`` (public-key encryption) and serialise each."""
    import tenseal as ts

    return [
        ts.ckks_vector(ctx, flat[i : i + slot_count]).serialize()
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


def aggregate_range(
    ctx: Any,
    per_client: Sequence[Sequence[bytes]],
    out_spec: ChunkSpec,
    weights: Sequence[float] | None,
    reduce_level: bool,
    first_chunk: int,
) -> list[bytes]:
    """Σ_i w_i·ct_i chunk by chunk; then drop to one prime where the preset allows (§5).

    Server weights are a plaintext multiply + rescale (Δ = q1 makes it exact in scale); without
    weights, a multiply by 1.0 encoded as the integer q1 followed by a rescale is an exact
    modulus switch: round(c·q1 / q1) = c mod q0.
    """
    out = []
    n_chunks = len(per_client[0])
    for j in range(n_chunks):
        where = f"chunk {first_chunk + j}"
        try:
            acc = None
            for i, chunks in enumerate(per_client):
                vec = load(ctx, chunks[j], f"client {i}, {where}")
                if weights is not None:
                    vec.mul_(float(weights[i]))
                if acc is None:
                    acc = vec
                else:
                    acc.add_(vec)
            assert acc is not None
            if weights is None and reduce_level:
                acc.mul_(1.0)
        except MalformedCiphertextError:
            raise
        except Exception as exc:  # scale/NTT mismatch, end of modulus chain, …
            raise MalformedCiphertextError(f"{where}: TenSEAL rejects the sum ({exc})") from exc
        # One check of the sum covers every input: a lower-level input drags the sum down
        # (auto mod-switch), a 3-component one makes it 3-component, a wrong scale throws.
        check(acc, out_spec, f"{where} (an update has the wrong level/size)")
        out.append(acc.serialize())
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
