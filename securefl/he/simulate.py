"""In-process driver: one CKKS aggregation round (clients → server → key holder).

Every message is real envelope bytes, so byte counts are what a network would carry. A client
in ``dropouts`` simply sends nothing: with HE a dropout needs no recovery step (unlike SecAgg's
unmasking), the aggregate is over the clients that uploaded. The driver — not the roles — reads
the clock for ``timings``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from securefl.errors import AbortError, ConfigurationError
from securefl.he.release import CentralNoise
from securefl.he.roles import HEClient, HEServer, KeyHolder

_FLAT = "update"


@dataclass(frozen=True)
class HERoundResult:
    """The released aggregate over ``survivors`` and what the round cost.

    Everything here is what the server receives from the key holder: with ``noise`` the
    released values are DP-noised (``grid_sum`` holds the noisy integers on the 2^-f grid).
    """

    total: Any  # same container as the inputs: a flat float64 array or a dict of tensors
    metadata: dict[str, object]
    survivors: frozenset[int]
    dropped: frozenset[int]
    bytes_up: dict[int, int]
    bytes_down: int
    context_bytes: int
    timings: dict[str, float] = field(default_factory=dict)
    grid_sum: np.ndarray | None = None


def run_round(
    inputs: Mapping[int, Any],
    key_holder: KeyHolder,
    *,
    weights: Mapping[int, float] | None = None,
    server_weighting: bool = False,
    dropouts: frozenset[int] = frozenset(),
    noise: CentralNoise | None = None,
) -> HERoundResult:
    """Encrypt each client's update (flat array or named tensors), aggregate, decrypt.

    Weights are applied on the clients before encryption, or with ``server_weighting`` as
    plaintext multiplications on the server (preset ``weighted``); the metadata records which.
    ``noise`` (central DP) is handed to the key holder, which adds it before release; flat
    inputs are the tensor named ``"update"``. A key holder configured with noise adds it anyway.
    """
    if not inputs:
        raise ConfigurationError("no clients", parameter="inputs")
    flat = all(isinstance(v, np.ndarray) for v in inputs.values())
    if weights is not None and set(weights) != set(inputs):
        raise ConfigurationError("one weight per client", parameter="weights")
    public = key_holder.public_context_bytes()
    t0 = time.perf_counter()
    client = HEClient(public)
    server = HEServer(key_holder.server_context_bytes())
    t_setup = time.perf_counter() - t0
    survivors = sorted(set(inputs) - set(dropouts))
    if not survivors:
        raise AbortError("every client dropped out: nothing to aggregate")
    uploads: dict[int, bytes] = {}
    t0 = time.perf_counter()
    for cid in survivors:
        named = {_FLAT: inputs[cid]} if flat else inputs[cid]
        w = 1.0 if weights is None or server_weighting else float(weights[cid])
        uploads[cid] = client.encrypt(named, weight=w)
    t_encrypt = time.perf_counter() - t0
    t0 = time.perf_counter()
    server_w = [float(weights[c]) for c in survivors] if weights and server_weighting else None
    aggregate = server.aggregate([uploads[c] for c in survivors], weights=server_w)
    t_aggregate = time.perf_counter() - t0
    t0 = time.perf_counter()
    released = key_holder.decrypt_result(aggregate, noise=noise)
    t_decrypt = time.perf_counter() - t0
    return HERoundResult(
        total=released.tensors[_FLAT] if flat else released.tensors,
        metadata=released.metadata,
        survivors=frozenset(survivors),
        dropped=frozenset(set(inputs) & set(dropouts)),
        bytes_up={cid: len(b) for cid, b in uploads.items()},
        bytes_down=len(aggregate),
        context_bytes=len(public),
        timings={
            "setup": t_setup,
            "encrypt": t_encrypt,
            "aggregate": t_aggregate,
            "decrypt": t_decrypt,
        },
        grid_sum=released.grid_sum,
    )
