"""Secure aggregation backends: SecAgg / SecAgg+ masking (in-process driver) and CKKS.

Each client's update x (already clipped on the client under client-level DP) is extended by one
coordinate holding 1, multiplied by its weight w and encoded to the ring Z_{2^b} planned so the
cohort's sum cannot wrap (securefl.encoding); the SecAgg(+) round (Bonawitz et al. 2017; Bell
et al. 2020) gives the server Σ w·[x, 1] over survivors and nothing else. SecAgg+'s degree k
and threshold t come from the parameter solver for the *realised* cohort size n, with the
configured corrupt fraction γ and dropout fraction δ. The session binds the adapter layout
digest and the SHA-256 of the global model (against model-inconsistency attacks).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from securefl.errors import AbortError, ConfigurationError
from securefl.fl.aggregation import AggregateOutcome, _check_inputs
from securefl.fl.config import RunConfig
from securefl.tensors import FloatVector

SECAGG_STAGES: tuple[str, ...] = (
    "advertise_keys",
    "share_keys",
    "masked_input",
    "consistency_check",
    "unmask",
)


def _digests(context: bytes) -> tuple[bytes, bytes]:
    """(layout digest, model digest), 32 bytes each, from the loop's round context."""
    if len(context) == 64:
        return context[:32], context[32:]
    h = hashlib.sha256(context).digest()
    return h, h


class SecAggAggregator:
    """SecAgg (complete graph) or SecAgg+ (k-regular graph) through securefl.secagg.simulate."""

    stages = SECAGG_STAGES

    def __init__(self, cfg: RunConfig, *, dimension: int) -> None:
        from securefl.secagg import simulate  # noqa: F401  (fail early if missing)

        self.cfg = cfg
        self.name = cfg.aggregation
        self.dimension = dimension
        self.coord_clip = max(cfg.clip, 1.0)  # the weight coordinate holds 1
        self.last: dict[str, Any] = {}
        self.ring_noise: Any = None  # set by distributed DP: (plan, values) -> values

    def info(self) -> dict[str, Any]:
        return {
            "gamma": self.cfg.corrupt_fraction,
            "delta": self.cfg.dropout_fraction,
            "frac_bits": self.cfg.frac_bits,
            "coordinate_clip": self.coord_clip,
            **self.last,
        }

    def plan(self, n: int) -> Any:
        from securefl.encoding import plan_ring

        return plan_ring(n, self.coord_clip, self.cfg.frac_bits, max_weight=1.0)

    def parameters(self, n: int) -> tuple[int | None, int, dict[str, Any]]:
        """(degree or None for the complete graph, threshold, ledger info) for n clients."""
        from securefl.secagg.params import solve_parameters

        if n < 3:
            raise AbortError(f"cohort of {n} is too small for secure aggregation (need ≥ 3)")
        params = solve_parameters(
            n,
            self.cfg.corrupt_fraction,
            self.cfg.dropout_fraction,
            complete_graph=self.cfg.aggregation == "secagg",
        )
        degree = None if params.complete_graph else params.k
        return degree, params.t, {"n": n, "degree": params.k, "threshold": params.t,
                                  "complete_graph": params.complete_graph}

    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome:
        from securefl.encoding import decode_sum, encode
        from securefl.secagg.simulate import DropoutPlan, run_round, simulation_config

        d = _check_inputs(inputs, weights)
        ids = sorted(inputs)
        n = len(ids)
        degree, threshold, info = self.parameters(n)
        plan = self.plan(n)
        t0 = time.perf_counter()
        encoded: dict[int, np.ndarray] = {}
        clipped = 0
        for cid in ids:
            ext = np.concatenate([inputs[cid], [1.0]])
            enc = encode(ext, plan, weight=float(weights[cid]))
            values = enc.values
            if self.ring_noise is not None:
                values = self.ring_noise(plan, values)
            encoded[cid + 1] = values  # SecAgg ids start at 1
            clipped += enc.clipped
        t_encode = time.perf_counter() - t0
        layout_digest, model_digest = _digests(context)
        config = simulation_config(
            [c + 1 for c in ids],
            threshold=threshold,
            bits=plan.bits,
            dimension=d + 1,
            degree=degree,
            round_index=round_index,
            layout_digest=layout_digest,
            model_digest=model_digest,
        )
        by_stage: dict[str, set[int]] = {s: set() for s in SECAGG_STAGES}
        for cid, stage in dropouts.items():
            if cid in inputs:
                by_stage[stage if stage in by_stage else "masked_input"].add(cid + 1)
        plan_drop = DropoutPlan(**{s: frozenset(v) for s, v in by_stage.items()})
        result = run_round(encoded, config, dropouts=plan_drop)
        t1 = time.perf_counter()
        total = decode_sum(result.total, plan)
        t_decode = time.perf_counter() - t1
        timings = dict(result.timings)
        unmask = timings.get("unmask", 0.0)
        self.last = {**info, "bits": plan.bits, "refused": len(result.refused)}
        return AggregateOutcome(
            total=total[:-1],
            weight_total=float(total[-1]),
            survivors=frozenset(u - 1 for u in result.survivors),
            dropped={k: sorted(u - 1 for u in v) for k, v in result.dropped.items() if v},
            bytes_up=result.total_bytes_up,
            bytes_down=result.total_bytes_down,
            timings={
                "encode": t_encode,
                "aggregate": timings.get("total", 0.0) - unmask,
                "unmask": unmask + t_decode,
                "secagg": timings,
            },
            protocol={**self.info(), "encoding_error_bound": _error_bound(plan, n)},
            clipped_coordinates=clipped,
        )


def _error_bound(plan: Any, n: int) -> float:
    from securefl.encoding import error_bound

    return float(error_bound(plan, n))


class HEAggregator:
    """CKKS aggregation (securefl.he): the server adds ciphertexts it cannot decrypt."""

    stages: tuple[str, ...] = ("upload",)

    def __init__(self, cfg: RunConfig, *, dimension: int) -> None:
        raise ConfigurationError("CKKS aggregation is not available yet", parameter="aggregation")


def attach_dp(backend: Any) -> None:
    """Distributed DP (DDGauss in the ring) or local DP-SGD, from securefl.dp."""
    raise ConfigurationError(
        f"dp = {backend.cfg.dp!r} is not available yet", parameter="dp"
    )
