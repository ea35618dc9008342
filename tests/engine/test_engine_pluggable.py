"""Pluggable node training and server model of the Flower job (``training`` / ``model`` keys),
and the synthetic pieces of ``benchmarks/engine_bench.py`` run in process (fast; no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.encoding import error_bound, plan_ring
from securefl.engine.flower_job import (
    _BuiltinOnDemand,
    model_from_run_config,
    training_from_node_config,
)
from securefl.engine.task import load_factory, load_task
from securefl.errors import ConfigurationError
from securefl.fl.config import RunConfig, from_mapping
from securefl.testing import engine_synthetic as es

N = 5


def _bad_model(cfg: RunConfig, *, with_evaluation: bool) -> Any:
    return "not a model"


@pytest.mark.parametrize("key", ["training", "model"])
def test_loader_accepts_a_good_reference(key: str) -> None:
    ref = es.TRAINING_REF if key == "training" else es.MODEL_REF
    assert load_factory(ref, parameter=key) is (
        es.training if key == "training" else es.server_model
    )


@pytest.mark.parametrize(
    "ref",
    [
        "no_colon",
        ":training",
        "securefl.testing.engine_synthetic:",
        "securefl.no_such_module:training",
        "securefl.testing.engine_synthetic:no_such_factory",
    ],
)
def test_loader_names_the_key_of_a_bad_reference(ref: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_factory(ref, parameter="training")
    assert info.value.parameter == "training"
    with pytest.raises(ConfigurationError) as info:
        model_from_run_config({"model": ref}, RunConfig(), with_evaluation=False)
    assert info.value.parameter == "model"


def test_loader_refuses_what_is_not_callable() -> None:
    with pytest.raises(ConfigurationError, match="not callable") as info:
        training_from_node_config({"training": "securefl.testing.engine_synthetic:TENSOR"})
    assert info.value.parameter == "training"
    with pytest.raises(ConfigurationError, match="not callable"):
        load_task("securefl.testing.engine_synthetic:DEFAULT_DIMENSION")


def test_factories_must_return_what_the_job_needs() -> None:
    # str(node_config) is a string, not a LocalTraining
    with pytest.raises(ConfigurationError, match="LocalTraining") as info:
        training_from_node_config({"training": "builtins:str"})
    assert info.value.parameter == "training"
    with pytest.raises(ConfigurationError, match="ModelInfo") as info:
        model_from_run_config(
            {"model": f"{__name__}:_bad_model"}, RunConfig(), with_evaluation=False
        )
    assert info.value.parameter == "model"


def test_defaults_are_the_builtin_task_and_the_factories_are_used() -> None:
    # the built-in task on ``data``, its model stack imported only when a round trains
    default = training_from_node_config({})
    assert isinstance(default, _BuiltinOnDemand) and default.data is None
    on_data = training_from_node_config({"data": "x.csv"})
    assert isinstance(on_data, _BuiltinOnDemand) and on_data.data == "x.csv"
    step = training_from_node_config({"training": es.TRAINING_REF})
    assert isinstance(step, es.SyntheticTraining)
    cfg = from_mapping(es.run_fields(N, 123, 1))
    info, evaluate = model_from_run_config({"model": es.MODEL_REF}, cfg, with_evaluation=True)
    assert info.layout.size == 123 and evaluate is None
    update = step(cfg, info.initial, 2, 0)
    update.validate(info.layout.digest(), 123)
    assert np.linalg.norm(update.delta) == pytest.approx(cfg.clip)


def test_synthetic_dimension_is_validated() -> None:
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(ConfigurationError) as info:
            es.server_model(
                from_mapping({**es.run_fields(N, 10, 1), "extra": {"synthetic_dimension": bad}})
            )
        assert info.value.parameter == "synthetic_dimension"


def test_run_toml_round_trips(tmp_path: Path) -> None:
    from securefl.fl.config import load

    fields = es.run_fields(N, 4321, 2)
    (tmp_path / "run.toml").write_text(es.run_toml(fields))
    cfg = load(tmp_path / "run.toml")
    assert cfg.digest() == from_mapping(fields).digest()
    assert es.dimension_of(cfg) == 4321


def test_bench_pieces_in_process_exact_sum_and_wire_figures(tmp_path: Path) -> None:
    """The bench's synthetic job over InProcessTransport: without DP the new global model is
    the mean of the nodes' synthetic updates (within the fixed-point bound); with distributed
    DP every node takes part and the figures the bench reports are there."""
    d = 64
    res = es.run_in_process(tmp_path / "plain", es.run_fields(N, d, 1, dp="none"), N)
    cfg = from_mapping(es.run_fields(N, d, 1, dp="none"))
    step = es.SyntheticTraining()
    expected = cfg.effective_server_lr * np.mean(
        [step(cfg, np.zeros(d), c, 0).delta for c in range(N)], axis=0
    )
    bound = error_bound(plan_ring(N, cfg.update_bound, cfg.frac_bits, max_weight=1.0), N)
    assert np.max(np.abs(res.global_flat - expected)) <= bound * cfg.effective_server_lr + 1e-12

    res = es.run_in_process(tmp_path / "dp", es.run_fields(N, d, 2), N)
    figures = es.round_figures(res.metrics, d)
    assert [f["participants"] for f in figures] == [N, N]
    assert all(f["round_s"] > 0 and f["wire_bytes_per_param"] > 1 for f in figures)
    assert res.epsilon > 0
