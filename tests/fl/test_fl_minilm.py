"""The real all-MiniLM-L6-v2 (bundled, offline) fine-tunes through the secure loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from securefl.fl.config import RunConfig
from securefl.fl.run import run_simulation


@pytest.mark.slow
def test_minilm_lora_secagg_plus_learns(tmp_path: Path) -> None:
    cfg = RunConfig(
        out=str(tmp_path / "run"),
        aggregation="secagg+",
        dp="none",
        n_clients=6,
        synthetic_examples=240,
        rounds=2,
        sampling_rate=1.0,
        dropout_rate=0.0,
        local_lr=1e-2,
        server_lr=1.0,
    )
    res = run_simulation(cfg)
    assert res.provenance["name"] == "all-MiniLM-L6-v2"
    assert res.provenance["license"] == "apache-2.0"
    assert len(res.provenance["weights_sha256"]) == 64
    # LoRA only: r·(in + out) per adapted matrix; q,v in 6 layers (384x384) + head (384 -> 4)
    assert res.global_flat.size == 4 * (12 * (384 + 384) + (384 + 4))
    assert res.rounds_completed == 2
    assert all(m["n_participants"] == 6 for m in res.metrics)  # no round aborted
    # chance level is ln 4 = 1.386 loss / 0.25 accuracy on the balanced 4-topic task
    assert res.loss < math.log(4) - 0.05
    assert res.accuracy > 0.4
