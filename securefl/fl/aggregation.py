"""The server step's aggregation backends: per-client vectors in, their (weighted) sum out.

Every backend computes the same function — Σ_{i∈survivors} w_i·x_i and Σ w_i — so a run's
model differs between backends only by the encoding error (fixed point for masking, CKKS
approximation for HE). The weight total is aggregated as one extra coordinate, so secure
backends reveal only the cohort's total weight, never one client's. Phase timings are measured
by the caller around the pure steps; nothing here sleeps or does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.errors import AbortError, ConfigurationError
from securefl.secagg.messages import STAGE_LABELS
from securefl.tensors import FloatVector

# Stages at which a simulated client can vanish (Bonawitz et al. 2017, Fig. 4): secagg's Stage.
STAGES: tuple[str, ...] = STAGE_LABELS

#: Sees every message of a round as ``(stage, sender, recipient, bytes)``; party 0 is the
#: server, client ``c`` of the loop is party ``c + 1`` (as in SecAgg, whose ids start at 1).
#: Tests use it to check what each party actually receives.
WireObserver = Callable[[str, int, int, bytes], None]
SERVER = 0


@dataclass(frozen=True)
class AggregateOutcome:
    """The server-side result of one round's aggregation."""

    total: FloatVector  # Σ w_i x_i over survivors (float64, decoded)
    weight_total: float  # Σ w_i over survivors
    survivors: frozenset[int]
    dropped: dict[str, list[int]]
    bytes_up: int
    bytes_down: int
    timings: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)
    clipped_coordinates: int = 0
    #: Central DP noise already added upstream (the CKKS key holder) on the 2^-f grid: the
    #: noisy integer sum of the update coordinates. The server step then adds none.
    noisy_grid: npt.NDArray[np.int64] | None = None


class Aggregator(Protocol):
    name: str

    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome: ...


def _check_inputs(inputs: Mapping[int, FloatVector], weights: Mapping[int, float]) -> int:
    if not inputs:
        raise AbortError("no client inputs to aggregate")
    if set(inputs) != set(weights):
        raise ConfigurationError("inputs and weights name different clients", parameter="weights")
    dims = {v.shape for v in inputs.values()}
    if len(dims) != 1:
        raise ConfigurationError(f"inputs have different shapes {sorted(dims)}", parameter="inputs")
    (shape,) = dims
    if len(shape) != 1:
        raise ConfigurationError("inputs must be flat vectors", parameter="inputs")
    for cid, vec in inputs.items():
        if not np.all(np.isfinite(vec)):
            raise ConfigurationError(f"client {cid}: non-finite update", parameter="inputs")
        w = weights[cid]
        if not (np.isfinite(w) and w >= 0):
            raise ConfigurationError(
                f"client {cid}: weight must be finite and ≥ 0", parameter="weights"
            )
    return int(shape[0])


class PlainAggregator:
    """Plaintext FedAvg: the server sees every update (the baseline; fp32 on the wire).

    Each update travels as little-endian float32 values followed by its float64 weight, and the
    server sums what it decodes from those bytes — so an observer sees exactly what the server
    reads (the individual clipped updates: that is what "plain" means).
    """

    name = "plain"

    def __init__(self, observer: WireObserver | None = None) -> None:
        self.observer = observer

    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome:
        d = _check_inputs(inputs, weights)
        # A plaintext client that drops at any stage simply never uploads.
        survivors = frozenset(c for c in inputs if c not in dropouts)
        dropped = {"upload": sorted(c for c in inputs if c in dropouts)}
        t0 = time.perf_counter()
        total = np.zeros(d, dtype=np.float64)
        wsum = 0.0
        for cid in sorted(survivors):
            wire = (
                np.ascontiguousarray(inputs[cid], dtype="<f4").tobytes()
                + np.float64(weights[cid]).astype("<f8").tobytes()
            )
            if self.observer is not None:
                self.observer("upload", cid + 1, SERVER, wire)
            values = np.frombuffer(wire, dtype="<f4", count=d).astype(np.float64)
            weight = float(np.frombuffer(wire, dtype="<f8", offset=4 * d)[0])
            total += weight * values
            wsum += weight
        t1 = time.perf_counter()
        return AggregateOutcome(
            total=total,
            weight_total=wsum,
            survivors=survivors,
            dropped=dropped,
            bytes_up=len(survivors) * (4 * d + 8),
            bytes_down=0,
            timings={"encode": 0.0, "aggregate": t1 - t0, "unmask": 0.0},
            protocol={
                "aggregation": "plain",
                "wire": "float32",
                "server_sees_individual_updates": True,
            },
        )
