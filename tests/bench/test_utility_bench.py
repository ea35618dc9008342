"""The pieces of benchmarks/utility_bench.py on a tiny synthetic task (no corpus download, no
MiniLM): the loop's own server optimiser steps the model, the regimes run end to end under
their DP mechanisms, the sweep's validation split never touches the test rows, and the
summary/curve outputs are well formed."""

from __future__ import annotations

import itertools
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import utility_bench as ub  # noqa: E402
import utility_plot  # noqa: E402

from securefl.fl.data import dirichlet_partition  # noqa: E402
from securefl.fl.server_optim import FedAvgM, init_state, server_step  # noqa: E402


def _task(n: int = 240, d: int = 6, seed: int = 0) -> ub.Task:
    """Three well-separated Gaussian blobs, 80 % train / 20 % test."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, d) * 3.0
    x = centres[y] + rng.normal(size=(n, d))
    cut = int(0.8 * n)
    return ub.Task(x[:cut], y[:cut], x[cut:], y[cut:], 3)


TINY_DEVICE = ub.Recipe(
    clients=6,
    rounds=3,
    rate=1.0,
    local_epochs=1,
    local_lr=0.5,
    batch_size=8,
    clip=1.0,
    server_optimizer="fedavgm",
    server_lr=0.7,
    server_momentum=0.5,
    cosine=True,
)
TINY_SILO = replace(TINY_DEVICE, clients=3, rounds=2, batch_size=16, server_optimizer="fedavg")


def test_the_loop_steps_the_server_optimiser(tmp_path: Path) -> None:
    """The model the bench reports is the loop's FedAvgM step of the example-weighted mean
    update, recomputed here by hand: the bench no longer steps (or replaces) the state."""
    task = _task()
    out = ub.run_one("device", task, TINY_DEVICE, None, 3, tmp_path)
    parts = dirichlet_partition(task.y_train.tolist(), TINY_DEVICE.clients, 1.0, seed=3)
    rng = np.random.default_rng([3, 0xDE7])  # the bench's local-data-order generator
    d, k = task.x_train.shape[1], 3
    flat = np.zeros(d * k + k)
    opt = FedAvgM(lr=0.7, momentum=0.5)
    st = init_state(opt, flat.size)
    biggest = max(len(p) for p in parts)
    for r in range(TINY_DEVICE.rounds):
        state = {"weight": flat[: d * k].reshape(k, d), "bias": flat[d * k :]}
        total, weight = np.zeros_like(flat), 0.0
        for c in range(TINY_DEVICE.clients):  # q = 1: everyone, in id order
            idx = np.asarray(parts[c])
            lr = TINY_DEVICE.lr_at(r)
            u = ub.local_sgd(state, task.x_train[idx], task.y_train[idx], TINY_DEVICE, lr, rng)
            w = len(idx) / biggest
            total += w * np.concatenate([u["weight"].ravel(), u["bias"]])
            weight += w
        flat, st = server_step(opt, flat, total / weight, st)
    got = np.concatenate([np.ravel(out.state["weight"]), np.ravel(out.state["bias"])])
    np.testing.assert_allclose(got, flat, rtol=1e-5, atol=1e-6)  # float32 transport
    assert out.accuracy > 0.8  # separable blobs: the head learns


def test_device_dp_run_spends_at_most_its_epsilon(tmp_path: Path) -> None:
    out = ub.run_one("device", _task(), TINY_DEVICE, 8.0, 0, tmp_path)
    assert out.noise_multiplier is not None and out.noise_multiplier > 0
    assert out.epsilon <= 8.0 + 1e-9


def test_silo_dp_sgd_inside_secagg(tmp_path: Path) -> None:
    out = ub.run_one("silo", _task(), TINY_SILO, 8.0, 0, tmp_path)
    assert out.noise_multiplier is not None and out.noise_multiplier > 0
    assert out.epsilon <= 8.0 + 1e-9
    assert 0.0 <= out.accuracy <= 1.0
    plain = ub.run_one("silo", _task(), TINY_SILO, None, 0, tmp_path)
    assert plain.noise_multiplier is None and plain.accuracy > 0.8
    # --silo-z: a given noise multiplier is used as is (no calibration); the ledger charges it
    z = 2 * out.noise_multiplier
    reused = ub.run_one("silo", _task(), TINY_SILO, 8.0, 0, tmp_path, z=z)
    assert reused.noise_multiplier == z and 0 < reused.epsilon < out.epsilon


def test_cosine_local_lr() -> None:
    lrs = [TINY_DEVICE.lr_at(r) for r in range(TINY_DEVICE.rounds)]
    assert lrs[0] == TINY_DEVICE.local_lr
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] >= 0.1 * TINY_DEVICE.local_lr
    assert replace(TINY_DEVICE, cosine=False).lr_at(2) == TINY_DEVICE.local_lr


def test_validation_split_comes_from_train_only() -> None:
    task = _task()
    val = ub.validation_task(task)
    rows = {tuple(r) for r in task.x_train}
    assert {tuple(r) for r in val.x_train} | {tuple(r) for r in val.x_test} == rows
    assert not {tuple(r) for r in val.x_train} & {tuple(r) for r in val.x_test}
    assert not {tuple(r) for r in val.x_test} & {tuple(r) for r in task.x_test}
    assert len(val.y_test) == round(0.15 * len(task.y_train))


def _outcomes(accs: list[float]) -> list[ub.Outcome]:
    return [ub.Outcome(a, 1.0, 1.0, {}) for a in accs]


def test_result_and_curve() -> None:
    out = {
        "device": {
            "inf": _outcomes([0.8, 0.7, 0.9]),
            "3": _outcomes([0.72, 0.7, 0.81]),
            "8": _outcomes([0.8, 0.7, 0.9]),
        },
        "silo": {
            "inf": _outcomes([0.8, 0.8, 0.8]),
            "1": _outcomes([0.6, 0.7, 0.8]),
            "8": _outcomes([0.8, 0.76, 0.8]),
        },
    }
    res: dict[str, Any] = ub.result_of(
        out, 0.79, secagg=False, speedup=(12.0, "given"), dvc=1.01, data_info={}
    )
    assert res["acc_nonprivate"] == 0.8
    assert res["acc_ratio_eps3_device"]["values"] == [0.9, 1.0, 0.9]
    assert res["acc_ratio_eps3_device"]["median"] == 0.9
    assert res["acc_ratio_eps1_silo"] == {
        "median": 0.875,
        "min": 0.75,
        "max": 1.0,
        "values": [0.75, 0.875, 1.0],
    }
    assert res["targets_met"]["nonprivate_ge_probe"] is True
    assert res["targets_met"]["eps8_silo_ge_0.95"] is True
    assert res["targets_met"]["eps1_silo_ge_0.85"] is True
    assert res["targets_met"]["eps3_device_ge_0.9"] is True
    svg = ET.fromstring(utility_plot.curve_svg(res))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}circle")) == 4  # one per (regime, ε) point
    texts = " ".join(t.text or "" for t in svg.iter(f"{ns}text"))
    assert "linear probe" in texts and "no DP" in texts
    md = utility_plot.markdown(res, "python benchmarks/utility_bench.py --save")
    assert "| 3 | 0.720 [0.700–0.810] | — |" in md
    assert "| `acc_ratio_eps1_silo` | 0.875 [0.750–1.000] | ≥ 0.85 |" in md
    assert "benchmarks/results/privacy_utility.svg" in md


def test_split_grid_merges_in_seed_order() -> None:
    """Parts dumped by separate processes (--seed-list/--dump) merge into the grid's own
    outcome lists, in seed order; a seed run twice is refused."""
    a = {"device": {"inf": [ub.Outcome(0.7, None, 0.0, {})]}}
    b = {
        "device": {
            "inf": [ub.Outcome(0.6, None, 0.0, {}), ub.Outcome(0.8, None, 0.0, {})],
        }
    }
    silo = {"silo": {"inf": [ub.Outcome(0.5, None, 0.0, {})]}}
    parts = [ub.dump_outcomes(b, [2, 0]), ub.dump_outcomes(a, [1]), ub.dump_outcomes(silo, [1])]
    merged = ub.load_outcomes(parts)  # a regime may run in its own process, same seeds
    assert [o.accuracy for o in merged["device"]["inf"]] == [0.8, 0.7, 0.6]
    assert [o.accuracy for o in merged["silo"]["inf"]] == [0.5]
    with pytest.raises(ValueError, match="two parts"):
        ub.load_outcomes([ub.dump_outcomes(a, [1]), ub.dump_outcomes(a, [1])])


def test_stopped_split_grid_pairs_ratios_by_seed() -> None:
    """A seed whose DP run did not finish is left out of that ratio (not mispaired), and a
    point no seed reached is reported as not run rather than failing."""
    part = {
        "device": {"inf": [[0.8, None, 0.0]], "3": [[0.72, 2.4, 2.9]], "8": [[0.8, 1.2, 7.9]]},
        "silo": {"inf": [[0.5, None, 0.0]], "1": [[0.45, 9.0, 1.0]]},
    }
    only_nodp = {"device": {"inf": [[0.6, None, 0.0]]}, "silo": {"inf": [[0.9, None, 0.0]]}}
    out = ub.load_outcomes(
        [{"seeds": [4], "outcomes": only_nodp}, {"seeds": [1], "outcomes": part}]
    )
    res = ub.result_of(out, 0.7, secagg=False, speedup=(None, "n/a"), dvc=1.0, data_info={})
    assert res["acc_ratio_eps3_device"]["values"] == [0.9]  # seed 1 only: 0.72 / 0.8
    assert res["acc_ratio_eps1_silo"]["values"] == [0.9]
    assert "acc_ratio_eps8_silo" not in res and res["targets_met"]["eps8_silo_ge_0.95"] is None
    assert res["runs_per_point"]["device_inf"] == 2
    md = utility_plot.markdown(res, "cmd")
    assert "not run (stopped)" in md and "(n = 1)" in md


def test_grid_runs_only_the_chosen_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--points inf runs every seed's non-private run and nothing else (a split grid can put
    the cheap runs first); the dumped part merges like any other."""
    monkeypatch.setitem(ub.RECIPES, "device", TINY_DEVICE)
    dump = tmp_path / "part.json"
    out = ub.grid(
        _task(), [0, 1], {"device": (3.0,)}, False, regimes=("device",), dump=dump, points=["inf"]
    )
    assert list(out["device"]) == ["inf"] and len(out["device"]["inf"]) == 2
    merged = ub.load_outcomes([json.loads(dump.read_text())])
    assert list(merged["device"]) == ["inf"]
    assert [o.seed for o in merged["device"]["inf"]] == [0, 1]
