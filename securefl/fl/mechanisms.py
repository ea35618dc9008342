"""Adaptive clipping and DP-FTRL in the round loop (protocols/fl.md "Adaptive clipping" and
"DP-FTRL"). The orchestrator owns the loop; this module owns what each option adds to it.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, §3.1 and Alg. 1), joint form of
:class:`securefl.dp.adaptive.AdaptiveClipping` made scale-free: in round t client i sends

    vᵢ = [clip_{C_t}(Δᵢ)/C_t , 2κ·(bᵢ − ½)],   bᵢ = 1[‖Δᵢ‖ ≤ C_t],   κ = z/√(4σ_b² − z²),

so ‖vᵢ‖ ≤ c_J = √(1 + κ²) = 2σ_b/√(4σ_b² − z²) in EVERY round. The DP mechanism of the run
(central discrete Gaussian — server or CKKS key holder — or DDGauss inside the SecAgg(+) ring)
is configured once with clip c_J, dimension d + 1 and the target multiplier z: its own round
event is the event of the whole release, recorded unchanged. Read back, the update part has
multiplier z·c_J = z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) relative to C_t and the count Σ(bᵢ − ½) has
noise std z·c_J/(2κ) = σ_b: exactly the paper's split. C_t is a function of earlier releases
(post-processing), announced in the round's projection and recorded at completion.

DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021; :mod:`securefl.dp.ftrl`): the
server (plain or SecAgg(+) with ``dp = "central"``) adds the round's clipped sum to a binary
tree with fresh discrete Gaussian noise per node and releases the difference of noisy prefix
sums. No sampling amplification is claimed: the cohort drawn by the keyed coins is filtered
to the clients the declared schedule allows (at most ``ftrl_max_participations`` rounds, any
two at least ``ftrl_min_separation`` apart), and the bound holds for every pattern the
schedule allows. Accounting: after t tree rounds the release is dominated by ONE Gaussian
mechanism with sensitivity Δ·√S_t on the t nodes, S_t = :func:`securefl.dp.ftrl.max_node_load`
(ρ_t-zCDP with ρ_t = Δ²·S_t/(2σ²), CKS 2020 Thm 14 per node; dp.md §3.2); round t records
``discrete_gaussian_tree_increment`` with the growth S_t − S_{t−1} (possibly 0: the node is
still released), so RDP composes the recorded events to ρ_t exactly and PLD/PRV sum the
increments of the release into that one Gaussian before converting.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from securefl.dp.events import DpEvent, TreeIncrementEvent
from securefl.errors import ConfigurationError
from securefl.fl import privacy
from securefl.fl.config import RunConfig
from securefl.fl.errors import ResumeError
from securefl.tensors import FloatVector

# ----------------------------------------------------------------------------- adaptive clip


def expected_cohort(cfg: RunConfig) -> float:
    """The fixed, public expected cohort m (the DP-FedAvg denominator)."""
    if cfg.sampling == "poisson":
        return cfg.sampling_rate * cfg.n_clients
    return float(cfg.clients_per_round)


def count_noise_std(cfg: RunConfig) -> float:
    """σ_b of the clipped count (Andrew et al.'s default m/20 when unset)."""
    if cfg.clip_count_noise_std is not None:
        return float(cfg.clip_count_noise_std)
    return expected_cohort(cfg) / 20.0


def joint_clip(noise_multiplier: float, sigma_b: float) -> float:
    """c_J = √(1 + κ²) = 2σ_b/√(4σ_b² − z²); needs 2σ_b > z (§3.1)."""
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z > 0 and 2.0 * sigma_b > z):
        raise ConfigurationError(
            f"the clipped-count noise σ_b = {sigma_b:g} must exceed z/2 = {z / 2:g} (Andrew et "
            "al. 2021 §3.1: the update noise grows to (z⁻² − (2σ_b)⁻²)^(−½)); raise "
            "clip_count_noise_std, the cohort, or the target ε",
            parameter="clip_count_noise_std",
        )
    return 2.0 * sigma_b / math.sqrt(4.0 * sigma_b**2 - z**2)


def mechanism_config(cfg: RunConfig, noise_multiplier: float) -> RunConfig:
    """The configuration the DP mechanism runs with: clip c_J on the (d+1)-vector, z."""
    return cfg.replace(
        clip=joint_clip(noise_multiplier, count_noise_std(cfg)),
        noise_multiplier=float(noise_multiplier),
    )


def mechanism_event(mech_cfg: RunConfig, dimension: int) -> DpEvent:
    """The round event the backend for ``mech_cfg`` records (the same code builds both)."""
    assert mech_cfg.noise_multiplier is not None
    z = mech_cfg.noise_multiplier
    if mech_cfg.dp == "distributed":
        from securefl.fl.secure import ddgauss_config

        return privacy.sample(mech_cfg, ddgauss_config(mech_cfg, dimension, z).event())
    from securefl.fl.aggregation import PlainAggregator
    from securefl.fl.backends import Backend

    return Backend(mech_cfg, PlainAggregator(None), dimension=dimension).round_event()


def adaptive_noise_multiplier(cfg: RunConfig, dimension: int) -> float:
    """z of the joint release: ``cfg.noise_multiplier`` or calibrated to the target ε."""
    if cfg.noise_multiplier is not None:
        joint_clip(cfg.noise_multiplier, count_noise_std(cfg))  # typed refusal if too small
        return cfg.noise_multiplier

    def build(z: float) -> DpEvent:
        return mechanism_event(mechanism_config(cfg, z), dimension + 1)

    return privacy.calibrate(cfg, build)


class AdaptiveClipLoop:
    """Server-side adaptive clip of a run (public state: the clip C_t and the round count)."""

    def __init__(
        self, cfg: RunConfig, dimension: int, noise_multiplier: float, *, clip: float | None = None
    ) -> None:
        from securefl.dp.adaptive import AdaptiveClipConfig, AdaptiveClipping

        self.dimension = dimension
        self.sigma_b = count_noise_std(cfg)
        self.c_joint = joint_clip(noise_multiplier, self.sigma_b)
        self.tracker = AdaptiveClipping(
            AdaptiveClipConfig(
                initial_clip=cfg.clip,
                target_quantile=cfg.clip_target_quantile,
                expected_cohort=expected_cohort(cfg),
                learning_rate=cfg.clip_lr,
                count_noise_std=self.sigma_b,
            ),
            noise_multiplier,
            mode="joint",
        )
        if clip is not None:
            if not (math.isfinite(clip) and clip > 0):
                raise ResumeError("checkpointed adaptive clip must be a positive number")
            self.tracker.clip = float(clip)

    @property
    def clip(self) -> float:
        return self.tracker.clip

    @property
    def kappa(self) -> float:
        return self.tracker.kappa

    def encode(self, client: int, delta: FloatVector, indicator: int | None) -> FloatVector:
        """Client side: [Δ/C_t, 2κ(b − ½)] (Δ already clipped to C_t, b its indicator)."""
        c = self.clip
        if indicator not in (0, 1):
            raise ConfigurationError(
                f"client {client} sent no clipped-indicator bit (0 or 1) under adaptive clipping",
                parameter="clip_indicator",
            )
        norm = float(np.linalg.norm(delta))
        if norm > c * (1.0 + 1e-9):
            raise ConfigurationError(
                f"client {client}'s update has norm {norm:.6g} > this round's clip {c:.6g}",
                parameter="delta",
            )
        return np.concatenate([delta / c, [2.0 * self.kappa * (indicator - 0.5)]])

    def release(self, joint_mean: FloatVector) -> tuple[FloatVector, dict[str, Any]]:
        """Server side: the released (noised) joint mean → the mean update and the next clip.

        Post-processing only: C_t is public and the count is read from the noised sum."""
        c = self.clip
        update = np.asarray(joint_mean[:-1], dtype=np.float64) * c
        extra_mean = float(joint_mean[-1])  # = noisy Σ 2κ(bᵢ − ½) / m
        m = self.tracker.config.expected_cohort
        fraction = extra_mean / (2.0 * self.kappa) + 0.5
        new = self.tracker.server_update(extra_mean * m * c)  # noisy Σ 2κC_t(bᵢ − ½)
        return update, {"clip": c, "noisy_unclipped_fraction": fraction, "next_clip": new}

    def info(self) -> dict[str, Any]:
        return {
            "clip_mode": "adaptive",
            "paper": "Andrew, Thakkar, McMahan, Ramaswamy 2021, §3.1 (joint vector)",
            "initial_clip": self.tracker.config.initial_clip,
            "target_quantile": self.tracker.config.target_quantile,
            "clip_lr": self.tracker.config.learning_rate,
            "count_noise_std": self.sigma_b,
            "kappa": self.kappa,
            "joint_clip": self.c_joint,
            "update_noise_multiplier": self.tracker.update_noise_multiplier,
            "expected_cohort": self.tracker.config.expected_cohort,
            "extra_coordinate": "2κ(b − ½), b = 1[‖Δ‖ ≤ C_t], inside the noised secure sum",
        }

    def state(self) -> dict[str, Any]:
        return {"adaptive_clip": self.clip, "adaptive_rounds": self.tracker.rounds}


# ------------------------------------------------------------------------------ DP-FTRL


def ftrl_config(cfg: RunConfig, noise_multiplier: float) -> Any:
    from securefl.dp.ftrl import DpFtrlConfig

    return DpFtrlConfig(
        clip=cfg.clip,
        noise_multiplier=noise_multiplier,
        expected_cohort=expected_cohort(cfg),
        min_separation=cfg.ftrl_min_separation,
        max_participations=cfg.ftrl_max_participations,
        max_weight=1.0,
        frac_bits=cfg.frac_bits,
        neighboring=privacy.neighboring(cfg),
    )


def ftrl_round_event(config: Any, dimension: int, t: int) -> DpEvent:
    """Event recorded for tree round t ≥ 1: one node released, node load S_t − S_{t−1}.

    Not a per-round mechanism: round t's own node may cost more than the growth for a given
    participation pattern; only the sums over rounds 1..t are bounds (dp.md §3.2). RDP adds
    ρ = Δ²·(S_t − S_{t−1})/(2σ²) (bit-identical to the former ``zcdp`` events); PLD/PRV sum
    the increments of the release into one Gaussian with sensitivity Δ·√S_t. A decrease of
    the bound S (an upper bound, not monotone in general) is recorded as growth 0."""
    grow = max(0, config.node_load(t) - config.node_load(t - 1))
    return TreeIncrementEvent(
        sigma=float(config.grid_sigma(dimension)),
        l2_sensitivity=config.grid_sensitivity(dimension),
        dimension=dimension,
        load_increment=grow,
    )


def ftrl_events(config: Any, dimension: int, rounds: int) -> list[DpEvent]:
    return [ftrl_round_event(config, dimension, t) for t in range(1, rounds + 1)]


def ftrl_noise_multiplier(cfg: RunConfig, dimension: int) -> float:
    """Per-node z: ``cfg.noise_multiplier`` or calibrated so the planned rounds meet ε."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    one = cfg.replace(rounds=1)

    def build(z: float) -> DpEvent:
        return privacy.compose(ftrl_events(ftrl_config(cfg, z), dimension, cfg.rounds))

    return privacy.calibrate(one, build)


class FtrlLoop:
    """The server's DP-FTRL state: the tree (SECRET, kept in the key directory) and schedule.

    The tree's exact node sums and their noise stay with the party that adds the noise — here
    the server, like the sampling secret: ``{run_id}.ftrl.{n}.json`` in the key directory,
    mode 0600, one file per tree round n (the last two kept); the checkpoint holds only n and
    the file's SHA-256, so resuming neither loses nor repeats a tree round, and a run
    directory alone never reveals the noise.
    """

    def __init__(
        self,
        cfg: RunConfig,
        dimension: int,
        noise_multiplier: float,
        *,
        key_dir: Path,
        run_id: str,
        checkpoint_state: Mapping[str, Any] | None = None,
    ) -> None:
        from securefl.dp.ftrl import DpFtrlServer

        self.dimension = dimension
        self.config = ftrl_config(cfg, noise_multiplier)
        self.key_dir = key_dir
        self.run_id = run_id
        if checkpoint_state is None or not checkpoint_state.get("ftrl_rounds"):
            self.server = DpFtrlServer(self.config, dimension)
            return
        n = checkpoint_state.get("ftrl_rounds")
        digest = checkpoint_state.get("ftrl_state_sha256")
        if not isinstance(n, int) or n < 0 or not isinstance(digest, str):
            raise ResumeError("checkpoint's DP-FTRL state reference is malformed")
        path = self._path(n)
        if not path.is_file():
            raise ResumeError(f"DP-FTRL tree state {path} is missing: the run cannot resume")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            raise ResumeError(f"DP-FTRL tree state {path} does not match the checkpoint")
        try:
            self.server = DpFtrlServer.restore(self.config, dimension, json.loads(raw))
        except (ValueError, ConfigurationError) as exc:
            raise ResumeError(f"damaged DP-FTRL tree state: {exc}") from None
        if self.server.rounds != n:
            raise ResumeError("DP-FTRL tree state is at another round than the checkpoint")

    def _path(self, n: int) -> Path:
        return self.key_dir / f"{self.run_id}.ftrl.{n}.json"

    @property
    def rounds(self) -> int:
        return int(self.server.rounds)

    def round_event(self) -> DpEvent:
        return ftrl_round_event(self.config, self.dimension, self.rounds + 1)

    def round_record(self, *, released: bool) -> dict[str, Any]:
        """What ``round_completed`` records of the tree round just closed (public)."""
        t = self.rounds
        return {
            "tree_round": t,
            "node": list(self._node(t)),
            "node_load": self.config.node_load(t),
            "grid_sigma": self.config.grid_sigma(self.dimension),
            "grid_sensitivity": self.config.grid_sensitivity(self.dimension),
            "released": released,
        }

    @staticmethod
    def _node(t: int) -> tuple[int, int]:
        return (t - (t & -t) + 1, t)

    def eligible(self, cohort: Iterable[int]) -> list[int]:
        """The drawn clients the schedule allows this round (the rest sit it out)."""
        return [c for c in cohort if self.server.eligible(c)]

    def release(self, total: FloatVector | None, participants: Iterable[int]) -> FloatVector | None:
        """Add the round's clipped sum (zeros for an aborted round, released nowhere) to the
        tree; returns the noisy mean delta (S̃_t − S̃_{t−1})·2^−f/m, or None when aborted."""
        if total is None:
            self.server.add(np.zeros(self.dimension), participants=())
            return None
        return self.server.add(np.asarray(total, dtype=np.float64), participants=participants)

    def save(self, write: Callable[[Path, str], None]) -> dict[str, Any]:
        """Persist the tree (before the checkpoint) and return the checkpoint's reference."""
        n = self.rounds
        text = json.dumps(self.server.state(), sort_keys=True)
        write(self._path(n), text)
        for old in self.key_dir.glob(f"{self.run_id}.ftrl.*.json"):
            suffix = old.name[len(self.run_id) + len(".ftrl.") : -len(".json")]
            if suffix.isdigit() and int(suffix) < n - 1:
                old.unlink(missing_ok=True)
        return {
            "ftrl_rounds": n,
            "ftrl_state_sha256": hashlib.sha256(text.encode()).hexdigest(),
        }

    def info(self, rounds: int) -> dict[str, Any]:
        out: dict[str, Any] = self.config.to_dict(rounds, self.dimension)
        out.update(
            noise_location="central: the server holds the tree (exact node sums and noise) in "
            "the key directory; it sees the noiseless round sums",
            sampling_amplification="none: the keyed-coin cohort is filtered to the schedule",
            schedule={
                "max_participations": self.config.max_participations,
                "min_separation": self.config.min_separation,
                "assumption": "each client's updates enter at most max_participations rounds, "
                "any two at least min_separation apart (KMSTTX 2021 §4, Thm 4.1); enforced",
            },
            accounting="one Gaussian with sensitivity Δ·√S_t after t tree rounds (ρ_t = "
            "Δ²·S_t/(2σ²)-zCDP); round t records discrete_gaussian_tree_increment(S_t − "
            "S_{t−1}), which RDP adds up to ρ_t and PLD/PRV merge into that Gaussian",
        )
        return out
