"""Aggregation × DP composition: what runs on the wire and what the accountant is told.

A :class:`Backend` bundles an aggregation protocol (plain, SecAgg, SecAgg+, CKKS) with a DP
mode (none, central, distributed, local). It answers the three questions the loop asks each
round: which DP event to project, how to aggregate the cohort's updates, and how to turn the
aggregate into the next global state (central noise; fixed denominator under client-level DP,
McMahan et al. 2018 §3 — the estimator must not depend on the realised cohort size).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from securefl.dp.events import DpEvent, NonPrivateEvent
from securefl.errors import ConfigurationError
from securefl.fl import privacy
from securefl.fl.aggregation import (
    STAGES,
    AggregateOutcome,
    Aggregator,
    PlainAggregator,
    WireObserver,
)
from securefl.fl.config import RunConfig, noiseless_sum_seen_by
from securefl.tensors import FloatVector


class Backend:
    """Aggregation protocol + DP mode for one run."""

    def __init__(
        self,
        cfg: RunConfig,
        aggregator: Aggregator,
        *,
        dimension: int,
        client_sizes: tuple[int, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.client_sizes = client_sizes
        self.aggregator = aggregator
        self.dimension = dimension
        self.stages: tuple[str, ...] = getattr(aggregator, "stages", STAGES)
        self.trainer: Any = None
        self.noise_multiplier: float | None = None
        self.event_for: Callable[[float], DpEvent] | None = None
        if cfg.dp == "central":
            self.event_for = self._central_event
            self.noise_multiplier = (
                cfg.noise_multiplier
                if cfg.noise_multiplier is not None
                else privacy.calibrate(cfg, self._central_event)
            )

    def fedavg_config(self, noise_multiplier: float) -> Any:
        """DP-FedAvg with exact discrete Gaussian noise on the 2^-f grid (securefl.dp.fedavg)."""
        from securefl.dp.fedavg import DpFedAvgConfig

        return DpFedAvgConfig(
            clip=self.cfg.clip,
            noise_multiplier=noise_multiplier,
            expected_cohort=self.denominator(),
            max_weight=1.0,
            frac_bits=self.cfg.frac_bits,
            neighboring=privacy.neighboring(self.cfg),  # type: ignore[arg-type]
        )

    def _central_event(self, z: float) -> DpEvent:
        return privacy.sample(self.cfg, self.fedavg_config(z).round_event(self.dimension))

    # -- accounting --------------------------------------------------------------------------
    def round_event(self) -> DpEvent:
        """The event of the next round exactly as the accountant and ledger are told."""
        if self.event_for is not None and self.noise_multiplier is not None:
            return self.event_for(self.noise_multiplier)
        return NonPrivateEvent()

    def protocol_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"protocol": _protocol_name(self.cfg.aggregation)}
        extra = getattr(self.aggregator, "info", None)
        if callable(extra):
            info.update(extra())
        return info

    def planned_protocol_info(self, n: int) -> dict[str, Any]:
        """Protocol parameters of a round with a cohort of ``n`` — for the budget policy and
        the projection, before any client computes (SecAgg(+): this round's k and t)."""
        info = self.protocol_info()
        parameters = getattr(self.aggregator, "parameters", None)
        if callable(parameters):
            from securefl.errors import AbortError

            try:
                _degree, _threshold, planned = parameters(n)
            except AbortError as exc:  # the round will abort: recorded, and t stays unknown
                info.update(n=n, threshold=None, planned_abort=str(exc))
            else:
                info.update(planned)
        return info

    def dp_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.cfg.dp,
            "delta": self.cfg.delta,
            "accountant": self.cfg.accountant,
        }
        if self.cfg.dp in ("central", "distributed"):
            out.update(
                clip=self.cfg.clip,
                noise_multiplier=self.noise_multiplier,
                l2_sensitivity=privacy.l2_sensitivity(self.cfg),
                mechanism=self.mechanism_info(),
                target_epsilon=self.cfg.target_epsilon,
                denominator=self.denominator(),
                server_sees_individual_updates=self.cfg.aggregation == "plain",
                noiseless_sum_seen_by=noiseless_sum_seen_by(self.cfg),
            )
        elif self.cfg.dp == "local":
            out.update(self._local_info())
        return out

    def _local_info(self) -> dict[str, Any]:
        from securefl.dp.local import noise_source

        return {
            "max_grad_norm": self.cfg.clip,
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.cfg.target_epsilon,
            # How the DP-SGD noise is drawn (issue 12 hole 1): a CSPRNG no config determines.
            "noise_source": noise_source(seeded=False),
        }

    def mechanism_info(self) -> dict[str, Any] | None:
        """Public parameters of the noise mechanism (recorded in run_started)."""
        if self.cfg.dp == "central" and self.noise_multiplier:
            info: dict[str, Any] = self.fedavg_config(self.noise_multiplier).to_dict(self.dimension)
            return info
        encoder = getattr(self.aggregator, "ring_encoder", None)
        config = getattr(encoder, "config", None)
        return None if config is None else dict(config.to_dict())

    # -- aggregation and server step ------------------------------------------------------
    def aggregate(
        self,
        inputs: Mapping[int, FloatVector],
        weights: Mapping[int, float],
        *,
        dropouts: Mapping[int, str],
        round_index: int,
        context: bytes,
    ) -> AggregateOutcome:
        return self.aggregator.aggregate(
            inputs, weights, dropouts=dropouts, round_index=round_index, context=context
        )

    def denominator(self) -> float:
        """Fixed denominator of client-level DP FedAvg: the expected cohort size."""
        if self.cfg.sampling == "poisson":
            return self.cfg.sampling_rate * self.cfg.n_clients
        return float(self.cfg.clients_per_round)

    def release_mean(
        self, outcome: AggregateOutcome | None, cfg: RunConfig
    ) -> tuple[FloatVector | None, float]:
        """The released mean update (central noise added here where the server adds it; None
        when nothing was released) and the seconds spent drawing that noise."""
        if outcome is None:
            return None, 0.0
        total = outcome.total
        if cfg.dp == "central":
            from securefl.dp.fedavg import add_grid_noise, release, to_grid

            assert self.noise_multiplier is not None
            t0 = time.perf_counter()
            fed = self.fedavg_config(self.noise_multiplier)
            if outcome.noisy_grid is not None:  # added by the CKKS key holder before release
                return release(outcome.noisy_grid, fed), 0.0
            mean = release(add_grid_noise(to_grid(total, cfg.frac_bits), fed), fed)
            return mean, time.perf_counter() - t0
        if cfg.client_level_dp:
            return total / self.denominator(), 0.0
        if outcome.weight_total > 0:
            return total / outcome.weight_total, 0.0
        return None, 0.0

    def server_update(
        self, global_flat: FloatVector, outcome: AggregateOutcome | None, cfg: RunConfig
    ) -> tuple[FloatVector, float]:
        """Plain FedAvg step ``global + server_lr · mean`` and the noise seconds (the
        orchestrator uses :meth:`release_mean` with the configured server optimiser)."""
        mean, noise_s = self.release_mean(outcome, cfg)
        if mean is None:
            return global_flat.copy(), noise_s
        return global_flat + cfg.effective_server_lr * mean, noise_s


def _protocol_name(aggregation: str) -> str:
    return {"plain": "plaintext", "he": "he-ckks"}.get(aggregation, aggregation)


def make_backend(
    cfg: RunConfig,
    *,
    dimension: int,
    client_sizes: tuple[int, ...] = (),
    observer: WireObserver | None = None,
) -> Backend:
    """Build the backend for ``cfg`` (combination already validated by the config).

    ``observer`` receives every wire message of plaintext and SecAgg(+) rounds (tests).
    """
    aggregator: Aggregator
    he: Any = None
    if cfg.aggregation == "plain":
        aggregator = PlainAggregator(observer)
    elif cfg.aggregation in ("secagg", "secagg+"):
        from securefl.fl.secure import SecAggAggregator

        sec = SecAggAggregator(cfg, dimension=dimension)
        sec.observer = observer
        aggregator = sec
    elif cfg.aggregation == "he":
        from securefl.fl.secure import HEAggregator

        aggregator = he = HEAggregator(cfg, dimension=dimension)
    else:  # pragma: no cover - validated in config
        raise ConfigurationError(
            f"unknown aggregation {cfg.aggregation!r}", parameter="aggregation"
        )
    if cfg.dp in ("distributed", "local"):
        from securefl.fl.secure import attach_dp

        backend = Backend(cfg, aggregator, dimension=dimension, client_sizes=client_sizes)
        attach_dp(backend)
        return backend
    backend = Backend(cfg, aggregator, dimension=dimension)
    if cfg.dp == "central" and he is not None:
        # Central DP under CKKS: the key holder adds the noise before anything leaves it
        # (issue 12 hole 2); the event recorded is the same fedavg config's round event.
        from securefl.he import CentralNoise

        assert backend.noise_multiplier is not None
        he.configure_noise(
            CentralNoise(backend.fedavg_config(backend.noise_multiplier), tensors=("delta",))
        )
    return backend
