"""What a federation is made of: aggregation, privacy mechanism and client sampling, as small
frozen values a user writes in one line (``SecAggPlus()``, ``CentralDP(clip=1.0, epsilon=8)``,
``Poisson(0.1)``).

Each value validates itself and knows the knobs it sets; the user never builds a SecAgg
config, a ring plan or a DP event by hand. Defaults are the strong ones: the malicious-server
threat model, δ well below 1/population (checked), no silent clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securefl.errors import ConfigurationError, require_positive
from securefl.vocabulary import ThreatModel


def _positive(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    require_positive(name, value)


# --- aggregation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plain:
    """Plaintext FedAvg: the server sees every individual update (a baseline, not a defence)."""

    def fields(self) -> dict[str, Any]:
        return {"aggregation": "plain"}


@dataclass(frozen=True)
class SecAgg:
    """Masking secure aggregation on the complete graph (Bonawitz et al. 2017).

    ``threat_model``: the malicious server by default (thresholds t > (n + ⌊γn⌋)/2);
    ``ThreatModel.SEMI_HONEST`` is an explicit, recorded opt-in. ``corrupt_fraction`` γ and
    ``dropout_fraction`` δ size the threshold; ``update_bound`` is the largest |coordinate|
    the ring holds when no DP clip bounds the update (larger ones are refused, not clipped).
    """

    threat_model: ThreatModel | str = ThreatModel.MALICIOUS
    corrupt_fraction: float = 0.05
    dropout_fraction: float = 0.33
    frac_bits: int = 16
    update_bound: float = 1.0

    name = "secagg"

    def fields(self) -> dict[str, Any]:
        model = ThreatModel.parse(self.threat_model)
        return {
            "aggregation": self.name,
            "secagg_model": "semi-honest" if model is ThreatModel.SEMI_HONEST else "semi-malicious",
            "corrupt_fraction": float(self.corrupt_fraction),
            "dropout_fraction": float(self.dropout_fraction),
            "frac_bits": self.frac_bits,
            "update_bound": float(self.update_bound),
        }


@dataclass(frozen=True)
class SecAggPlus(SecAgg):
    """SecAgg+ (Bell et al. 2020): a sparse neighbour graph with (k, t) from the solver."""

    name = "secagg+"


@dataclass(frozen=True)
class CKKS:
    """Homomorphic aggregation with TenSEAL CKKS: the server adds ciphertexts it cannot read;
    one key holder decrypts only the aggregate (``preset``: fast | weighted | precise)."""

    preset: str = "fast"

    def fields(self) -> dict[str, Any]:
        return {"aggregation": "he", "he_preset": self.preset}


Aggregation = Plain | SecAgg | SecAggPlus | CKKS


# --- privacy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoDP:
    """No differential privacy: the ledger and report say so plainly (ε = ∞)."""

    def fields(self) -> dict[str, Any]:
        return {"dp": "none"}


@dataclass(frozen=True)
class AdaptiveClip:
    """Adaptive clipping (Andrew et al. 2021): the clip starts at the privacy spec's ``clip``
    and tracks the ``target_quantile`` of update norms, from a noised count of clipped-
    indicator bits sent inside the secure sum (σ_b = ``count_noise_std``, None: cohort/20).
    The privacy target covers update and count together (protocols/fl.md §3.3)."""

    target_quantile: float = 0.5
    lr: float = 0.2
    count_noise_std: float | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "clip_mode": "adaptive",
            "clip_target_quantile": float(self.target_quantile),
            "clip_lr": float(self.lr),
            "clip_count_noise_std": self.count_noise_std,
        }


@dataclass(frozen=True)
class DPFTRL:
    """DP-FTRL with tree aggregation (Kairouz et al. 2021) instead of per-round noise: no
    sampling amplification; each client takes part in at most ``max_participations`` rounds,
    any two at least ``min_separation`` apart (enforced). Central noise by the server."""

    max_participations: int = 1
    min_separation: int = 1

    def fields(self) -> dict[str, Any]:
        return {
            "mechanism": "ftrl",
            "ftrl_max_participations": self.max_participations,
            "ftrl_min_separation": self.min_separation,
        }


@dataclass(frozen=True)
class _ClientLevel:
    clip: float
    epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    adaptive_clip: AdaptiveClip | None = None
    mode = ""

    def __post_init__(self) -> None:
        _positive("clip", self.clip)
        _positive("epsilon", self.epsilon, optional=True)
        _positive("noise_multiplier", self.noise_multiplier, optional=True)
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigurationError(
                "give exactly one of epsilon (the noise is calibrated to reach it over the "
                "planned rounds) or noise_multiplier",
                parameter="epsilon",
            )

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dp": self.mode,
            "clip": float(self.clip),
            "delta": float(self.delta),
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
        }
        if self.epsilon is not None:
            out["target_epsilon"] = float(self.epsilon)
        if self.adaptive_clip is not None:
            out.update(self.adaptive_clip.fields())
        return out


@dataclass(frozen=True)
class CentralDP(_ClientLevel):
    """Client-level DP-FedAvg (McMahan et al. 2018): updates clipped to L2 norm ``clip`` on the
    client, exact discrete Gaussian noise added to the sum by the party that holds it (the
    server after SecAgg — which then sees the noiseless sum, recorded — or the CKKS key holder)."""

    mode = "central"
    ftrl: DPFTRL | None = None  # DP-FTRL tree noise instead of per-round noise

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        if self.ftrl is not None:
            out.update(self.ftrl.fields())
        return out


@dataclass(frozen=True)
class DistributedDP(_ClientLevel):
    """Client-level distributed discrete Gaussian (Kairouz, Liu, Steinke 2021) inside SecAgg:
    each client adds its share of the noise before masking, so no party sees a noiseless sum."""

    mode = "distributed"


@dataclass(frozen=True)
class LocalDPSGD:
    """Example-level DP-SGD inside each client's training (Opacus, Abadi et al. 2016).

    Your training loop wraps its module, optimizer and loader with ``round.make_private(...)``
    (or ``ctx.make_private`` in a :class:`~securefl.api.Trainer`); the event each client
    performs is checked against the one accounted (``epochs`` passes, ``batch_size``)."""

    max_grad_norm: float
    epochs: int = 1
    batch_size: int = 8
    epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-6
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        _positive("max_grad_norm", self.max_grad_norm)
        _positive("epsilon", self.epsilon, optional=True)
        _positive("noise_multiplier", self.noise_multiplier, optional=True)
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigurationError(
                "give exactly one of epsilon or noise_multiplier", parameter="epsilon"
            )

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dp": "local",
            "clip": float(self.max_grad_norm),
            "delta": float(self.delta),
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "local_epochs": self.epochs,
            "batch_size": self.batch_size,
        }
        if self.epsilon is not None:
            out["target_epsilon"] = float(self.epsilon)
        return out


Privacy = NoDP | CentralDP | DistributedDP | LocalDPSGD


# --- sampling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Poisson:
    """Each client joins a round independently with probability ``rate`` (secret coins);
    accounted under add/remove adjacency."""

    rate: float

    def fields(self) -> dict[str, Any]:
        return {"sampling": "poisson", "sampling_rate": float(self.rate)}


@dataclass(frozen=True)
class FixedSize:
    """Exactly ``clients_per_round`` clients without replacement (replace-one adjacency)."""

    clients_per_round: int

    def fields(self) -> dict[str, Any]:
        return {"sampling": "fixed", "clients_per_round": int(self.clients_per_round)}


Sampling = Poisson | FixedSize

__all__ = [
    "CKKS",
    "Aggregation",
    "CentralDP",
    "DistributedDP",
    "FixedSize",
    "LocalDPSGD",
    "NoDP",
    "Plain",
    "Poisson",
    "Privacy",
    "Sampling",
    "SecAgg",
    "SecAggPlus",
]
