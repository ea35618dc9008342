"""Server optimisers for federated averaging: FedAvg, server momentum, FedAdam and FedYogi.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2: the server treats the
aggregated client update Δ_t (the mean of new − global, *already clipped and noised* by the DP
mechanism) as a pseudo-gradient and takes one optimiser step with it::

    FedAvg   x ← x + η Δ
    FedAvgM  m ← β m + Δ;                              x ← x + η m   (Hsu et al. 2019)
    FedAdam  m ← β₁ m + (1−β₁) Δ;  v ← β₂ v + (1−β₂) Δ²;            x ← x + η m / (√v + τ)
    FedYogi  m as Adam;  v ← v − (1−β₂) Δ² sign(v − Δ²);             x ← x + η m / (√v + τ)

with m₋₁ = 0 and v₋₁ = τ² (Algorithm 2's initialisation, no bias correction). Every step is a
function of the released aggregate and the previous server state only, so it is
post-processing of a DP output and costs no privacy (Dwork & Roth 2014, Prop. 2.1); a run's
ledger records the DP events, not the optimiser.

The state is explicit (:class:`ServerState`, returned by :func:`server_step`, never held
inside the optimiser), so a checkpoint can save it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from securefl.errors import ConfigurationError, require_positive
from securefl.tensors import FloatVector


def _check_lr(name: str, value: float) -> None:
    require_positive(name, value)


def _check_decay(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigurationError(f"must lie in [0, 1), got {value!r}", parameter=name)


@dataclass(frozen=True)
class FedAvg:
    """x ← x + lr · Δ (lr = 1: plain FedAvg, McMahan et al. 2017)."""

    lr: float = 1.0

    def __post_init__(self) -> None:
        _check_lr("server_lr", self.lr)


@dataclass(frozen=True)
class FedAvgM:
    """Server momentum (Hsu, Qi, Brown 2019): m ← β m + Δ; x ← x + lr · m."""

    lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _check_lr("server_lr", self.lr)
        _check_decay("server_momentum", self.momentum)


@dataclass(frozen=True)
class FedAdam:
    """Adam on the pseudo-gradient (Reddi et al. 2021, Alg. 2); ``tau`` is the adaptivity ε.

    Defaults follow the paper's tuned ranges for text tasks (η ≈ 10^-2, τ ≈ 10^-3)."""

    lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_lr("server_lr", self.lr)
        _check_decay("server_beta1", self.beta1)
        _check_decay("server_beta2", self.beta2)
        _check_lr("server_tau", self.tau)


@dataclass(frozen=True)
class FedYogi(FedAdam):
    """Yogi's additive second-moment update (Zaheer et al. 2018), Reddi et al. 2021 Alg. 2."""


ServerOptimizer = FedAvg | FedAvgM | FedAdam | FedYogi

#: Names a configuration file may use (``server_optimizer = "fedadam"``).
SERVER_OPTIMIZERS: dict[str, type[FedAvg] | type[FedAvgM] | type[FedAdam]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


def make_server_optimizer(name: str, **hyper: float) -> ServerOptimizer:
    """The optimiser called ``name`` (see :data:`SERVER_OPTIMIZERS`) with ``hyper``-parameters."""
    cls = SERVER_OPTIMIZERS.get(name)
    if cls is None:
        raise ConfigurationError(
            f"unknown server optimiser {name!r} (choose from {sorted(SERVER_OPTIMIZERS)})",
            parameter="server_optimizer",
        )
    try:
        return cls(**hyper)
    except TypeError as exc:
        raise ConfigurationError(
            f"{name} takes {sorted(cls.__dataclass_fields__)}, got {sorted(hyper)}",
            parameter="server_optimizer",
        ) from exc


@dataclass(frozen=True)
class ServerState:
    """The optimiser's memory after ``step`` rounds: first moment ``m`` (momentum buffer) and
    second moment ``v`` (adaptive methods), both None where the optimiser has none."""

    step: int
    m: FloatVector | None = None
    v: FloatVector | None = None


def init_state(opt: ServerOptimizer, dimension: int) -> ServerState:
    """State before the first round: m = 0, v = τ² (Reddi et al. 2021, Alg. 2)."""
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ConfigurationError(
            f"must be an integer ≥ 1, got {dimension!r}", parameter="dimension"
        )
    if isinstance(opt, FedAdam):  # FedYogi too
        return ServerState(0, np.zeros(dimension), np.full(dimension, opt.tau**2))
    if isinstance(opt, FedAvgM):
        return ServerState(0, np.zeros(dimension), None)
    return ServerState(0)


def _vector(name: str, x: FloatVector, dimension: int) -> FloatVector:
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (dimension,):
        raise ConfigurationError(f"shape {a.shape} ≠ ({dimension},)", parameter=name)
    if not np.all(np.isfinite(a)):
        raise ConfigurationError("contains NaN or ±inf", parameter=name)
    return a


def server_step(
    opt: ServerOptimizer, params: FloatVector, update: FloatVector, state: ServerState
) -> tuple[FloatVector, ServerState]:
    """One server step: new global parameters and the new state (inputs are not modified).

    ``update`` is the aggregated pseudo-gradient Δ (mean of new − global over the cohort, in
    the direction of improvement); it must be finite and of the parameters' shape."""
    x = np.asarray(params, dtype=np.float64)
    if x.ndim != 1 or x.size < 1:
        raise ConfigurationError(
            f"must be a non-empty 1-D vector, got {x.shape}", parameter="params"
        )
    d = x.size
    x = _vector("params", x, d)
    delta = _vector("update", update, d)
    if isinstance(opt, FedAvg):
        return x + opt.lr * delta, ServerState(state.step + 1)
    if state.m is None or state.m.shape != (d,):
        raise ConfigurationError(
            "state does not belong to this optimiser or dimension (use init_state)",
            parameter="state",
        )
    if isinstance(opt, FedAvgM):
        m = opt.momentum * state.m + delta
        return x + opt.lr * m, ServerState(state.step + 1, m, None)
    if state.v is None or state.v.shape != (d,):
        raise ConfigurationError(
            "state does not belong to this optimiser or dimension (use init_state)",
            parameter="state",
        )
    m = opt.beta1 * state.m + (1.0 - opt.beta1) * delta
    sq = delta * delta
    if isinstance(opt, FedYogi):
        v = state.v - (1.0 - opt.beta2) * sq * np.sign(state.v - sq)
    else:
        v = opt.beta2 * state.v + (1.0 - opt.beta2) * sq
    return x + opt.lr * m / (np.sqrt(v) + opt.tau), ServerState(state.step + 1, m, v)


def cosine_lr(base: float, step: int, total: int, *, warmup: int = 0, floor: float = 0.0) -> float:
    """Learning-rate schedule: linear warm-up over ``warmup`` rounds, then cosine decay from
    ``base`` to ``floor`` at round ``total`` (Loshchilov & Hutter 2017); post-processing too."""
    _check_lr("base", base)
    if not 0 <= floor <= base:
        raise ConfigurationError(f"must lie in [0, base], got {floor!r}", parameter="floor")
    if not 0 <= warmup < total:
        raise ConfigurationError(f"must lie in [0, total), got {warmup!r}", parameter="warmup")
    if step < 0:
        raise ConfigurationError(f"must be ≥ 0, got {step!r}", parameter="step")
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * frac))


def with_lr(opt: ServerOptimizer, lr: float) -> ServerOptimizer:
    """The same optimiser with learning rate ``lr`` (for a schedule); validated."""
    from dataclasses import replace

    return replace(opt, lr=lr)


__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "ServerOptimizer",
    "ServerState",
    "cosine_lr",
    "init_state",
    "make_server_optimizer",
    "server_step",
    "with_lr",
]
