"""Client sampling: keyed, reproducible, the declared scheme, mismatch refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from securefl.dp.errors import SamplingMismatchError
from securefl.dp.events import GaussianEvent, PoissonSampledEvent
from securefl.dp.participation import assert_sampling_matches
from securefl.fl.config import RunConfig
from securefl.fl.sampling import load_or_create_secret, sample_clients, simulate_dropouts


def test_poisson_rate_matches_q() -> None:
    """Binomial(n=200·100, q=0.2) count within 5σ: false-failure rate < 6e-7."""
    cfg = RunConfig(model="tiny", n_clients=200, sampling_rate=0.2)
    key = bytes(range(32))
    total = sum(len(sample_clients(cfg, key, r)[0]) for r in range(100))
    n = 200 * 100
    assert abs(total - 0.2 * n) < 5 * math.sqrt(n * 0.2 * 0.8)


def test_cohorts_depend_on_key_and_round_only() -> None:
    cfg = RunConfig(model="tiny", n_clients=50, sampling="fixed", clients_per_round=7)
    a, scheme = sample_clients(cfg, bytes(32), 3)
    assert len(a) == 7 and a == sample_clients(cfg, bytes(32), 3)[0]
    assert a != sample_clients(cfg, bytes([1]) + bytes(31), 3)[0]
    assert a != sample_clients(cfg, bytes(32), 4)[0]
    declared = PoissonSampledEvent(0.14, GaussianEvent(1.0))
    with pytest.raises(SamplingMismatchError):
        assert_sampling_matches(declared, scheme)


def test_secret_is_created_once_private(tmp_path: Path) -> None:
    k1 = load_or_create_secret(tmp_path)
    assert len(k1) == 32 and load_or_create_secret(tmp_path) == k1
    assert (tmp_path / "sampling.key").stat().st_mode & 0o077 == 0


def test_dropouts_use_known_stages() -> None:
    cfg = RunConfig(model="tiny", dropout_rate=0.5)
    drops = simulate_dropouts(cfg, list(range(40)), 0, ("a", "b"))
    assert 5 < len(drops) < 35 and set(drops.values()) <= {"a", "b"}
    assert drops == simulate_dropouts(cfg, list(range(40)), 0, ("a", "b"))
