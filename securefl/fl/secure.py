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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from securefl.errors import AbortError, ConfigurationError
from securefl.fl.aggregation import AggregateOutcome, WireObserver, _check_inputs
from securefl.fl.config import RunConfig
from securefl.fl.errors import EncodingRangeError
from securefl.secagg.messages import STAGE_LABELS
from securefl.tensors import FloatVector

SECAGG_STAGES: tuple[str, ...] = STAGE_LABELS


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
        self.name: str = cfg.aggregation
        self.dimension = dimension
        # The ring is sized from the bound the user states: the L2 clip C bounds every
        # coordinate under client-level DP; otherwise ``update_bound``. The weight coordinate
        # holds 1. A coordinate beyond the bound is refused, never clipped (fixed_point).
        self.value_bound = cfg.clip if cfg.client_level_dp else cfg.update_bound
        self.coord_clip = max(self.value_bound, 1.0)
        self.last: dict[str, Any] = {}
        self.ring_encoder: Any = None  # replaced by distributed DP (DDGauss encoding)
        self.observer: WireObserver | None = None

    def info(self) -> dict[str, Any]:
        return {
            "model": self.cfg.secagg_model,
            "gamma": self.cfg.corrupt_fraction,
            "delta": self.cfg.dropout_fraction,
            "frac_bits": self.cfg.frac_bits,
            "coordinate_clip": self.coord_clip,
            "value_bound": self.value_bound,
            **self.last,
        }

    def plan(self, n: int) -> Any:
        from securefl.encoding import plan_ring

        return plan_ring(n, self.coord_clip, self.cfg.frac_bits, max_weight=1.0)

    def parameters(self, n: int) -> tuple[int | None, int, dict[str, Any]]:
        """(degree or None for the complete graph, threshold, ledger info) for n clients."""
        from securefl.secagg.params import InfeasibleParametersError, solve_parameters

        if n < 3:
            raise AbortError(f"cohort of {n} is too small for secure aggregation (need ≥ 3)")
        try:
            params = solve_parameters(
                n,
                self.cfg.corrupt_fraction,
                self.cfg.dropout_fraction,
                model=self.cfg.secagg_model,
                complete_graph=self.cfg.aggregation == "secagg",
            )
        except InfeasibleParametersError as exc:  # e.g. too few clients for this threat model
            raise AbortError(f"no safe SecAgg parameters for a cohort of {n}: {exc}") from exc
        degree = None if params.complete_graph else params.k
        return (
            degree,
            params.t,
            {
                "n": n,
                "degree": params.k,
                "threshold": params.t,
                "complete_graph": params.complete_graph,
                "threat_model": params.model,
            },
        )

    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome:
        from securefl.secagg.client import ClientPolicy
        from securefl.secagg.simulate import (
            DropoutPlan,
            SimulatedIdentities,
            run_round,
            simulation_config,
        )

        _check_inputs(inputs, weights)
        ids = sorted(inputs)
        n = len(ids)
        degree, threshold, info = self.parameters(n)
        t0 = time.perf_counter()
        encoder = self.ring_encoder if self.ring_encoder is not None else self.fixed_point
        ring = encoder(inputs, weights, n, context, round_index)
        encoded = {cid + 1: ring.values[cid] for cid in ids}  # SecAgg ids start at 1
        t_encode = time.perf_counter() - t0
        layout_digest, model_digest = _digests(context)
        identities = SimulatedIdentities()  # this round's simulated clients only
        config = simulation_config(
            [c + 1 for c in ids],
            threshold=threshold,
            bits=ring.bits,
            dimension=ring.dimension,
            degree=degree,
            min_cohort=min(ring.min_cohort, n),
            round_index=round_index,
            layout_digest=layout_digest,
            model_digest=model_digest,
            # Clients check t against the same threat model the solver used (secagg.md §7, C0).
            threat_model="malicious"
            if self.cfg.secagg_model == "semi-malicious"
            else "semi-honest",
            corrupt_fraction=self.cfg.corrupt_fraction,
            identities=identities,
        )
        by_stage: dict[str, set[int]] = {s: set() for s in SECAGG_STAGES}
        for cid, stage in dropouts.items():
            if cid in inputs:
                by_stage[stage if stage in by_stage else "masked_input"].add(cid + 1)
        plan_drop = DropoutPlan(**{s: frozenset(v) for s, v in by_stage.items()})
        # clients hold the run's (recorded) threat model; semi-honest stays an explicit opt-in
        policy = ClientPolicy(
            threat_model=config.threat_model, corrupt_fraction=self.cfg.corrupt_fraction
        )
        transcript: list[tuple[str, int, int, bytes]] | None = None if self.observer is None else []
        result = run_round(
            encoded,
            config,
            dropouts=plan_drop,
            identities=identities,
            transcript=transcript,
            policy=policy,
        )
        for stage, sender, recipient, data in transcript or ():
            assert self.observer is not None
            self.observer(stage, sender, recipient, data)  # SecAgg ids: loop id + 1
        t1 = time.perf_counter()
        total, weight_total = ring.decode(result.total)
        t_decode = time.perf_counter() - t1
        timings = dict(result.timings)
        unmask = timings.get("unmask", 0.0)
        self.last = {**info, "bits": ring.bits, "refused": len(result.refused), **ring.info}
        return AggregateOutcome(
            total=total,
            weight_total=weight_total,
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
            protocol=self.info(),
            clipped_coordinates=ring.clipped,
        )

    def fixed_point(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        n: int,
        context: bytes,
        round_index: int,
    ) -> RingInputs:
        """Default encoding: w·[x, 1] in fixed point (securefl.encoding), no wrap for n."""
        from securefl.encoding import decode_sum, encode

        plan = self.plan(n)
        values: dict[int, np.ndarray] = {}
        clipped = 0
        for cid, x in inputs.items():
            if x.size and float(np.max(np.abs(x))) > self.value_bound:
                raise EncodingRangeError(
                    f"client {cid}'s update has a coordinate beyond ±{self.value_bound}, the "
                    "bound the secure-aggregation ring was sized for; it is refused rather than "
                    "clipped — raise update_bound (or clip under DP)",
                    parameter="update_bound",
                )
            enc = encode(np.concatenate([x, [1.0]]), plan, weight=float(weights[cid]))
            values[cid] = enc.values
            clipped += enc.clipped
        if clipped:  # unreachable after the check above; never let a clip pass silently
            raise EncodingRangeError(f"{clipped} coordinates clipped", parameter="update_bound")

        def decode(total: np.ndarray) -> tuple[FloatVector, float]:
            flat = decode_sum(total, plan)
            return flat[:-1], float(flat[-1])

        return RingInputs(
            values=values,
            bits=plan.bits,
            dimension=self.dimension + 1,
            decode=decode,
            clipped=clipped,
            min_cohort=0,
            info={"encoding": "fixed_point", "encoding_error_bound": _error_bound(plan, n)},
        )


@dataclass(frozen=True)
class RingInputs:
    """Clients' ring vectors for one round and how to read the server's sum back."""

    values: dict[int, np.ndarray]
    bits: int
    dimension: int
    decode: Callable[[np.ndarray], tuple[FloatVector, float]]
    clipped: int
    min_cohort: int
    info: dict[str, Any]


def _error_bound(plan: Any, n: int) -> float:
    from securefl.encoding import error_bound

    return float(error_bound(plan, n))


class HEAggregator:
    """CKKS aggregation (securefl.he): clients encrypt ``{"delta": w·x, "weight": [w]}`` under
    the key holder's public key, the server adds ciphertexts it cannot read, the key holder
    releases only the sum — with central DP, after adding the noise itself
    (:meth:`configure_noise`), so the server never holds the noiseless sum.

    One key holder per run (TenSEAL has no threshold decryption: it must not be the server).
    Its release rounding is sized for the largest possible cohort (all ``n_clients``), never
    for a count the server claims.
    """

    stages: tuple[str, ...] = ("upload",)

    def __init__(self, cfg: RunConfig, *, dimension: int) -> None:
        from securefl.he import get_preset

        self.cfg = cfg
        self.name: str = "he"
        self.dimension = dimension
        self.preset = get_preset(cfg.he_preset)
        self.noise: Any = None
        self._key_holder: Any = None

    def configure_noise(self, noise: Any) -> None:
        """Central DP: the key holder adds ``noise`` (a ``securefl.he.CentralNoise``) to every
        release; set once, before the first round."""
        if self._key_holder is not None:
            raise ConfigurationError("noise must be set before the first round", parameter="noise")
        self.noise = noise

    @property
    def key_holder(self) -> Any:
        if self._key_holder is None:
            from securefl.he import KeyHolder

            cap = min(self.cfg.n_clients, self.preset.max_clients)
            self._key_holder = KeyHolder(self.preset, noise=self.noise, max_contributions=cap)
        return self._key_holder

    def info(self) -> dict[str, Any]:
        return {"preset": self.preset.name, "scheme": "ckks", **self.preset.to_dict()}

    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome:
        from securefl.he.simulate import run_round

        _check_inputs(inputs, weights)
        named = {c: {"delta": x, "weight": np.ones(1)} for c, x in inputs.items()}
        dropped = frozenset(c for c in inputs if c in dropouts)
        result = run_round(
            named, self.key_holder, weights=dict(weights), dropouts=dropped, noise=self.noise
        )
        total = np.asarray(result.total["delta"], dtype=np.float64)
        t = result.timings
        return AggregateOutcome(
            total=total,
            weight_total=float(np.asarray(result.total["weight"]).reshape(-1)[0]),
            survivors=frozenset(result.survivors),
            dropped={"upload": sorted(result.dropped)} if result.dropped else {},
            bytes_up=sum(result.bytes_up.values()),
            bytes_down=result.bytes_down * len(result.survivors) + result.context_bytes,
            timings={
                "encode": t.get("encrypt", 0.0) + t.get("setup", 0.0),
                "aggregate": t.get("aggregate", 0.0),
                "unmask": t.get("decrypt", 0.0),
                "he": dict(t),
            },
            protocol={
                **self.info(),
                "release": {str(k): str(v) for k, v in result.metadata.items()},
            },
            noisy_grid=None if self.noise is None else result.grid_sum,
        )


def min_contributors(cfg: RunConfig) -> int:
    """Fewest clients whose noise DDGauss counts on: half the expected cohort, at least 3.

    Secure aggregation enforces it (``min_cohort``): a round with fewer survivors aborts, so
    the recorded event's noise is always present (dropouts remove noise, Kairouz et al. §5).
    """
    expected = (
        cfg.sampling_rate * cfg.n_clients
        if cfg.sampling == "poisson"
        else float(cfg.clients_per_round)
    )
    return max(3, int(expected // 2))


def ddgauss_config(cfg: RunConfig, dimension: int, noise_multiplier: float) -> Any:
    """DDGauss parameters: granularity c·2^-f, ring wide enough for all N clients."""
    from securefl.dp.distributed import DDGaussConfig, suggest_bits

    expected = (
        cfg.sampling_rate * cfg.n_clients
        if cfg.sampling == "poisson"
        else float(cfg.clients_per_round)
    )
    neighboring: Literal["add_remove", "replace_one"] = (
        "add_remove" if cfg.sampling == "poisson" else "replace_one"
    )

    def build(bits: int) -> Any:
        return DDGaussConfig.for_noise_multiplier(
            noise_multiplier,
            dimension=dimension,
            clip=cfg.clip,
            granularity=cfg.clip * 2.0**-cfg.frac_bits,
            bits=bits,
            min_contributors=min_contributors(cfg),
            expected_cohort=expected,
            neighboring=neighboring,
        )

    return build(min(64, suggest_bits(build(64), cfg.n_clients)))


class DDGaussEncoder:
    """Distributed discrete Gaussian (Kairouz, Liu, Steinke 2021) as the SecAgg ring encoding."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @staticmethod
    def rotation_seed(context: bytes, round_index: int) -> bytes:
        """Public per-round seed of the randomized Hadamard rotation (bound to the session)."""
        return hashlib.sha256(
            b"securefl/fl/ddgauss-rotation/v1\x00" + context + round_index.to_bytes(8, "big")
        ).digest()

    def __call__(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        n: int,
        context: bytes,
        round_index: int,
    ) -> RingInputs:
        from securefl.dp.distributed import client_encode, server_decode

        cfg = self.config
        if n < cfg.min_contributors:
            raise AbortError(
                f"cohort of {n} < min_contributors = {cfg.min_contributors} of the DP event"
            )
        seed = self.rotation_seed(context, round_index)
        values = {cid: client_encode(x, cfg, rotation_seed=seed) for cid, x in inputs.items()}

        def decode(total: np.ndarray) -> tuple[FloatVector, float]:
            return server_decode(total, cfg, rotation_seed=seed, denominator=1.0), float("nan")

        return RingInputs(
            values=values,
            bits=cfg.bits,
            dimension=cfg.padded_dimension,
            decode=decode,
            clipped=0,
            min_cohort=cfg.min_contributors,
            info={"encoding": "ddgauss", "ddgauss": cfg.to_dict()},
        )


def attach_dp(backend: Any) -> None:
    """Wire distributed DP (DDGauss in the SecAgg ring) or local DP-SGD into a backend."""
    cfg: RunConfig = backend.cfg
    if cfg.dp == "distributed":
        from securefl.fl import privacy

        def event_for(z: float) -> Any:
            return privacy.sample(cfg, ddgauss_config(cfg, backend.dimension, z).event())

        z = cfg.noise_multiplier
        if z is None:
            z = privacy.calibrate(cfg, event_for)
        backend.noise_multiplier = z
        backend.event_for = event_for
        backend.aggregator.ring_encoder = DDGaussEncoder(ddgauss_config(cfg, backend.dimension, z))
        return
    if cfg.dp == "local":
        from securefl.fl.local_dp import attach_local_dp

        attach_local_dp(backend)
        return
    raise ConfigurationError(f"unknown dp mode {cfg.dp!r}", parameter="dp")
