"""Client sampling with a secret, reproducible source; simulated dropouts.

Privacy amplification by sampling (Poisson: Zhu & Wang 2019; without replacement: Balle et al.
2018) holds only if the adversary cannot predict who is sampled, so the coins come from
HMAC-SHA256 keyed with a per-run secret (32 random bytes kept in the run directory, mode 0600),
not from the public seed. Keyed coins make a resumed run draw the same cohorts. Dropouts are a
simulation of unreliable devices, not a privacy mechanism: they use the seeded numpy generator.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from securefl.errors import ConfigurationError
from securefl.fl.aggregation import STAGES
from securefl.fl.config import RunConfig

SECRET_NAME = "sampling.key"  # noqa: S105 (a file name, not a secret)
_LABEL = b"securefl/fl/client-sampling/v1"


def load_or_create_secret(directory: Path, name: str = SECRET_NAME) -> bytes:
    """The run's sampling secret ``directory/name``; created with ``secrets`` on first use.

    The loop keeps it in the key directory, not the run directory: whoever learns it after the
    run learns who took part in each round, which undoes amplification by sampling."""
    path = directory / name
    if path.is_file():
        key = path.read_bytes()
        if len(key) != 32:
            raise ConfigurationError(f"{path} must hold 32 bytes", parameter="sampling_key")
        return key
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _uniforms(key: bytes, round_index: int, n: int) -> np.ndarray:
    """n independent U[0,1) values (53-bit) from HMAC(key, label ‖ round ‖ client)."""
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        msg = _LABEL + round_index.to_bytes(8, "big") + i.to_bytes(8, "big")
        word = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "big") >> 11
        out[i] = word / float(1 << 53)
    return out


def sample_clients(cfg: RunConfig, key: bytes, round_index: int) -> tuple[list[int], Any]:
    """The cohort of a round and the scheme this draw performed (securefl.dp.participation),
    which the loop checks against the sampling declared to the accountant."""
    from securefl.dp.participation import FixedSizeSampling, FullParticipation, PoissonSampling

    u = _uniforms(key, round_index, cfg.n_clients)
    if cfg.sampling == "poisson":
        cohort = [int(i) for i in np.flatnonzero(u < cfg.sampling_rate)]
        if cfg.sampling_rate >= 1.0:
            return cohort, FullParticipation(cfg.n_clients)
        return cohort, PoissonSampling(cfg.sampling_rate)
    cohort = sorted(int(i) for i in np.argsort(u, kind="stable")[: cfg.clients_per_round])
    if cfg.clients_per_round == cfg.n_clients:
        return cohort, FullParticipation(cfg.n_clients)
    return cohort, FixedSizeSampling(cfg.n_clients, cfg.clients_per_round)


def simulate_dropouts(
    cfg: RunConfig, cohort: list[int], round_index: int, stages: tuple[str, ...] = STAGES
) -> dict[int, str]:
    """Each sampled client independently drops with prob ``dropout_rate`` at a uniform stage."""
    if cfg.dropout_rate == 0.0 or not cohort:
        return {}
    rng = np.random.default_rng([cfg.seed, round_index, 0xD20])
    drops = rng.random(len(cohort)) < cfg.dropout_rate
    where = rng.integers(len(stages), size=len(cohort))
    return {c: stages[int(s)] for c, s, d in zip(cohort, where, drops, strict=True) if d}
