"""``securefl simulate`` with ``batched_training = true`` releases the per-client loop's model
(dropout off: the two paths draw different masks otherwise), with and without the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.errors import ConfigurationError
from securefl.fl import run as run_mod
from securefl.fl.config import RunConfig
from securefl.fl.model import AdapterModel

KEY = bytes(range(32))  # injected sampling key: identical cohorts across compared runs
TINY: dict[str, Any] = {
    "model": "tiny",
    "synthetic_examples": 96,
    "n_clients": 6,
    "rounds": 2,
    "sampling_rate": 1.0,
    "dropout_rate": 0.0,
    "local_lr": 1e-2,
    "batch_size": 8,
    "max_length": 16,
    "aggregation": "plain",
}


def _cfg(out: Path, **kw: Any) -> RunConfig:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling.key").write_bytes(KEY)
    return RunConfig(**{**TINY, "out": str(out), **kw})


@pytest.fixture
def no_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real built-in model with its dropout probabilities set to 0."""
    import torch

    build = run_mod.builtin_model

    def builtin_model(cfg: RunConfig, num_labels: int) -> AdapterModel:
        model = build(cfg, num_labels)
        for module in model.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model

    monkeypatch.setattr(run_mod, "builtin_model", builtin_model)


@pytest.mark.usefixtures("no_dropout")
@pytest.mark.parametrize(
    "extra",
    [
        {"dp": "none", "lora_targets": ("classifier",)},
        {"dp": "none", "lora_targets": ("query", "value", "classifier")},
        {"dp": "none", "lora_targets": ("classifier",), "feature_cache": False},
    ],
    ids=["head_cached", "all_layers", "head_uncached"],
)
def test_batched_round_releases_the_loops_model(tmp_path: Path, extra: dict[str, Any]) -> None:
    loop = run_mod.run_simulation(_cfg(tmp_path / "loop", **extra))
    batched = run_mod.run_simulation(_cfg(tmp_path / "batched", batched_training=True, **extra))
    assert loop.rounds_completed == batched.rounds_completed == 2
    assert [m["participants"] for m in loop.metrics] == [m["participants"] for m in batched.metrics]
    moved = loop.global_flat - run_mod.builtin_model(loop_cfg(extra), 4).get_flat()
    assert np.linalg.norm(moved) > 0
    diff = np.linalg.norm(batched.global_flat - loop.global_flat) / np.linalg.norm(moved)
    assert diff <= 1e-4


def loop_cfg(extra: dict[str, Any]) -> RunConfig:
    return RunConfig(**{**TINY, **extra})


@pytest.mark.usefixtures("no_dropout")
def test_batched_round_under_client_level_dp_clips_like_the_loop(tmp_path: Path) -> None:
    """Central DP with adaptive clipping: the noise is cryptographic (differs per run), so
    the check is that the batched rounds complete with the loop's accounted ε (the clip
    indicators themselves: tests/train/test_frozen.py)."""
    kw = {
        "dp": "central",
        "lora_targets": ("classifier",),
        "clip_mode": "adaptive",
        "clip_count_noise_std": 2.0,
    }
    loop = run_mod.run_simulation(_cfg(tmp_path / "loop", **kw))
    batched = run_mod.run_simulation(_cfg(tmp_path / "batched", batched_training=True, **kw))
    assert batched.rounds_completed == loop.rounds_completed == 2
    assert batched.epsilon == pytest.approx(loop.epsilon)
    assert np.all(np.isfinite(batched.global_flat))


def test_batched_training_is_refused_with_dp_sgd() -> None:
    with pytest.raises(ConfigurationError) as err:
        RunConfig(model="tiny", dp="local", batched_training=True)
    assert err.value.parameter == "batched_training"
