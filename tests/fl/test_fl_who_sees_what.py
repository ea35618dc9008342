"""What each party actually receives, per aggregation × DP mode (issue 12, systematic checks).

These tests read the bytes a client sends and what the server unmasks, and test the noise
against the DP event the ledger records — so a mechanism that is configured but not applied
(or applied with another scale than the one accounted) cannot pass. The table these tests back
is in ``protocols/fl.md`` ("Who sees what").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from securefl.dp.events import (
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DpEvent,
    PoissonSampledEvent,
)
from securefl.dp.fedavg import to_grid
from securefl.fl.aggregation import AggregateOutcome
from securefl.fl.backends import make_backend
from securefl.fl.config import RunConfig
from securefl.fl.run import run_simulation
from securefl.secagg import MaskedInput, decode

ALPHA = 1e-6  # false-failure rate of each variance test
CONTEXT = bytes(range(64))
TINY = {
    "model": "tiny",
    "max_length": 16,
    "synthetic_examples": 120,
    "n_clients": 12,
    "rounds": 1,
    "sampling": "poisson",
    "sampling_rate": 1.0,
    "dropout_rate": 0.0,
    "local_epochs": 1,
    "batch_size": 8,
    "lora_r": 2,
    "lora_targets": ("query", "classifier"),
    "allow_large_delta": True,  # 12 clients: δ = 1e-5 < 1/12 anyway; explicit for clarity
}


def _inner(event: DpEvent) -> DpEvent:
    return event.event if isinstance(event, PoissonSampledEvent) else event


def _chi2_p(noise: np.ndarray, sigma: float) -> float:
    """Two-sided p-value of Σ x²/σ² ~ χ²(d) for zero-mean noise of standard deviation σ."""
    stat = float(np.sum((noise.astype(np.float64) / sigma) ** 2))
    d = noise.size
    return 2.0 * min(stats.chi2.cdf(stat, d), stats.chi2.sf(stat, d))


def _run(tmp_path: Path, **kw: object) -> list[tuple[str, int, int, bytes]]:
    seen: list[tuple[str, int, int, bytes]] = []
    cfg = RunConfig(**{**TINY, "out": str(tmp_path), **kw})  # type: ignore[arg-type]
    run_simulation(cfg, wire_observer=lambda *m: seen.append(m))
    return seen


@pytest.mark.slow
def test_plain_central_server_reads_each_clipped_update(tmp_path: Path) -> None:
    """Plain: the server reads every individual update — and each is clipped to C on the
    wire (the client clips before it sends, not the server after it receives)."""
    clip = 0.05
    seen = _run(tmp_path, aggregation="plain", dp="central", clip=clip, noise_multiplier=1.0)
    uploads = [data for stage, _, recipient, data in seen if recipient == 0]
    assert len(uploads) == TINY["n_clients"]
    norms = []
    for data in uploads:
        d = (len(data) - 8) // 4
        x = np.frombuffer(data, dtype="<f4", count=d).astype(np.float64)
        norms.append(float(np.linalg.norm(x)))
    assert max(norms) <= clip * (1 + 1e-5)
    assert min(norms) > 0.5 * clip  # local training moved every client: clipping was active


@pytest.mark.slow
@pytest.mark.parametrize("aggregation", ["secagg", "secagg+"])
def test_secure_aggregation_server_never_receives_an_unmasked_input(
    tmp_path: Path, aggregation: str
) -> None:
    """SecAgg(+): a masked input is uniform on the ring; a plain fixed-point encoding of a small
    update sits next to 0 or 2^b. Half the words of every masked input lie in the middle half
    of the ring."""
    seen = _run(tmp_path, aggregation=aggregation, dp="none")
    masked = []
    for _stage, sender, recipient, data in seen:
        if recipient != 0:
            continue
        msg = decode(data)
        if isinstance(msg, MaskedInput):
            masked.append((sender, np.asarray(msg.values)))
    assert len(masked) == TINY["n_clients"]
    bits = int(max(int(w.max()) for _, w in masked)).bit_length()  # the ring Z_{2^b}
    assert bits >= 20
    for _sender, words in masked:
        top = float(2**bits)
        middle = np.mean((words >= top / 4) & (words < 3 * top / 4))
        # Binomial(n, 1/2) proportion: 5.3 standard deviations ≈ a 1e-7 false failure.
        assert abs(middle - 0.5) < 5.3 * 0.5 / np.sqrt(words.size)


def _outcome(total: np.ndarray) -> AggregateOutcome:
    return AggregateOutcome(
        total=total,
        weight_total=float(len(total)),
        survivors=frozenset(range(10)),
        dropped={},
        bytes_up=0,
        bytes_down=0,
        timings={},
    )


def _backend(aggregation: str, dp: str, n_clients: int, d: int) -> tuple[RunConfig, Any, DpEvent]:
    """A backend at z = 0.8, C = 0.5, q = 0.2 and the (inner) event it records per round."""
    cfg = RunConfig(
        model="tiny",
        aggregation=aggregation,  # type: ignore[arg-type]
        dp=dp,  # type: ignore[arg-type]
        n_clients=n_clients,
        sampling_rate=0.2,
        clip=0.5,
        noise_multiplier=0.8,
    )
    backend = make_backend(cfg, dimension=d)
    return cfg, backend, _inner(backend.round_event())


@pytest.mark.parametrize("aggregation", ["plain", "secagg+"])
def test_central_noise_has_the_variance_of_the_recorded_event(aggregation: str) -> None:
    """Central DP after plain or masked aggregation: the released update minus the exact sum
    is integer noise on the 2^-f grid whose variance is the recorded event's σ² (χ² test) —
    the event is the noise. (Under CKKS the key holder adds it: the test after next.)"""
    d = 8192
    cfg, backend, event = _backend(aggregation, "central", 50, d)
    assert isinstance(event, DiscreteGaussianEvent)
    rng = np.random.default_rng(1)
    total = rng.normal(scale=0.3, size=d)
    glob = np.zeros(d)
    new, _ = backend.server_update(glob, _outcome(total), cfg)
    lr = cfg.effective_server_lr
    released_grid = np.rint(new / lr * backend.denominator() * 2.0**cfg.frac_bits)
    noise = released_grid - to_grid(total, cfg.frac_bits)
    assert _chi2_p(noise, event.sigma) > ALPHA
    # The test can fail: the same draw is rejected against a 10 % smaller or larger σ.
    assert _chi2_p(noise, 0.9 * event.sigma) < ALPHA
    assert _chi2_p(noise, 1.1 * event.sigma) < ALPHA


@pytest.mark.parametrize("aggregation", ["secagg", "secagg+"])
def test_distributed_noise_is_already_in_what_the_server_unmasks(aggregation: str) -> None:
    """Distributed DP: the server's unmasked sum of all-zero updates is pure noise with
    variance n·σ_client²·γ² per coordinate (the recorded event's σ) — the server never holds a
    noiseless sum."""
    d, n = 4000, 12
    _cfg, backend, event = _backend(aggregation, "distributed", 60, d)
    assert isinstance(event, DistributedDiscreteGaussianEvent)
    inputs = {c: np.zeros(d) for c in range(n)}
    out = backend.aggregate(
        inputs, dict.fromkeys(inputs, 1.0), dropouts={}, round_index=0, context=CONTEXT
    )
    assert out.survivors == frozenset(range(n))
    granularity = backend.aggregator.ring_encoder.config.granularity
    sigma = np.sqrt(n) * event.sigma * granularity
    assert _chi2_p(out.total, sigma) > ALPHA
    assert _chi2_p(out.total, 0.9 * sigma) < ALPHA


def test_he_central_noise_is_added_by_the_key_holder_before_the_server_sees_it() -> None:
    """CKKS + central DP (issue 12 hole 2): what the server receives from the key holder is
    already noisy with the recorded event's σ, and the server step adds nothing more."""
    d, n = 4096, 6
    cfg, backend, event = _backend("he", "central", 30, d)
    assert isinstance(event, DiscreteGaussianEvent)
    inputs = {c: np.zeros(d) for c in range(n)}
    out = backend.aggregate(
        inputs, dict.fromkeys(inputs, 1.0), dropouts={}, round_index=0, context=CONTEXT
    )
    assert out.noisy_grid is not None  # the release the server gets is the noisy one
    received = np.rint(out.total * 2.0**cfg.frac_bits)
    np.testing.assert_array_equal(received, out.noisy_grid)
    assert _chi2_p(out.noisy_grid, event.sigma) > ALPHA
    assert _chi2_p(out.noisy_grid, 0.9 * event.sigma) < ALPHA
    glob = np.zeros(d)
    new, noise_s = backend.server_update(glob, out, cfg)
    assert noise_s == 0.0
    expected = (
        cfg.effective_server_lr * out.noisy_grid * 2.0**-cfg.frac_bits / backend.denominator()
    )
    np.testing.assert_allclose(new, expected)
