"""Every aggregation × DP combination that makes sense runs end to end (tiny model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.audit.ledger import Ledger
from securefl.fl.config import RunConfig
from securefl.fl.run import run_simulation

TINY: dict[str, Any] = {
    "model": "tiny",
    "synthetic_examples": 96,
    "n_clients": 8,
    "rounds": 1,
    "sampling_rate": 1.0,
    "dropout_rate": 0.0,
    "local_lr": 1e-2,
    "max_length": 16,
    "clip": 1.0,
}


def _run(tmp: Path, name: str, **kw: Any) -> Any:
    out = tmp / name
    out.mkdir()
    (out / "sampling.key").write_bytes(bytes(32))
    return run_simulation(RunConfig(**{**TINY, "out": str(out), **kw}))


@pytest.mark.parametrize(
    ("aggregation", "dp", "mechanism", "unit"),
    [
        ("secagg+", "distributed", "distributed_discrete_gaussian", "client"),
        ("he", "central", "discrete_gaussian", "client"),
        ("plain", "local", "gaussian", "example"),
    ],
)
def test_dp_combinations_run_and_record_their_mechanism(
    tmp_path: Path, aggregation: str, dp: str, mechanism: str, unit: str
) -> None:
    res = _run(tmp_path, "r", aggregation=aggregation, dp=dp, rounds=2)
    assert res.rounds_completed == 2
    assert 0 < res.epsilon <= 8.0 + 1e-9
    assert res.noise_multiplier is not None and res.noise_multiplier > 0
    assert np.all(np.isfinite(res.global_flat))
    with Ledger(tmp_path / "r" / "ledger.sqlite") as led:
        entries = list(led.entries())
    started = next(e for e in entries if e.kind == "run_started").payload
    assert started["privacy_unit"] == unit
    done = [e.payload for e in entries if e.kind == "round_completed"]
    assert len(done) == 2
    assert mechanism in str(done[0]["dp_event"])


def test_he_matches_plain_fedavg(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain", aggregation="plain", dp="none")
    he = _run(tmp_path, "he", aggregation="he", dp="none")
    diff = float(np.max(np.abs(plain.global_flat - he.global_flat)))
    assert diff < 1e-4 and not math.isnan(diff)
    assert he.metrics[0]["bytes_up"] > 8 * plain.metrics[0]["bytes_up"]  # CKKS expansion
