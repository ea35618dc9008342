"""Issue 13: the main job (bare ``securefl simulate``) demonstrates a DP guarantee at which the
model is useful — cross-silo, DP-SGD inside each site under SecAgg+, one training example as
the privacy unit — and its run says which unit is protected. Both tests failed on the old
default (client-level DP with ~32 of 160 clients a round: privacy unit "client"). The
5-seed accuracy check is ``benchmarks/default_job_bench.py``, not a CI test."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from securefl.audit.ledger import Ledger, read_entries
from securefl.fl import ledger as ledger_mod
from securefl.fl.cli import register
from securefl.fl.config import MAIN_JOB, load, noiseless_sum_seen_by
from securefl.fl.privacy import neighboring


def test_main_job_is_cross_silo_with_example_level_dp() -> None:
    cfg = load(MAIN_JOB)
    assert cfg.dp == "local" and ledger_mod.privacy_unit(cfg) == "example"
    assert neighboring(cfg) == "add_remove"
    # cross-silo: a few sites, every site every round (no amplification by site sampling)
    assert cfg.n_clients <= 10 and cfg.sampling == "poisson" and cfg.sampling_rate == 1.0
    # safe defaults kept: masking secure aggregation, malicious-server thresholds, noise on
    # the nodes, a meaningful ε and a δ far below 1 / (training examples)
    assert cfg.aggregation in ("secagg", "secagg+") and cfg.secagg_model == "semi-malicious"
    assert noiseless_sum_seen_by(cfg) == []
    assert cfg.target_epsilon <= 8.0 and cfg.effective_budget == cfg.target_epsilon
    train = cfg.synthetic_examples - round(cfg.synthetic_examples * cfg.test_fraction)
    assert cfg.delta <= 0.01 / train


def test_a_flag_named_like_a_section_overrides_only_its_field() -> None:
    """`--rounds 1` replaced the whole [rounds] table of default.toml (sampling_rate fell
    back to 0.2: one site in a cohort); likewise `--model tiny` the [model] table."""
    cfg = load(MAIN_JOB, rounds=1, model="tiny", data="synthetic")
    full = load(MAIN_JOB)
    assert cfg.rounds == 1 and cfg.model == "tiny"
    assert cfg.sampling_rate == full.sampling_rate == 1.0
    assert cfg.lora_targets == full.lora_targets and cfg.n_clients == full.n_clients


def test_bare_simulate_runs_the_main_job_and_reports_its_unit(tmp_path: Path) -> None:
    """The bare command takes default.toml (a tiny model and 1 round to stay fast): its
    ledger and report name the protected unit as one example."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    out = tmp_path / "run"
    args = ["simulate", "--model", "tiny", "--rounds", "1", "--out", str(out), "-q"]
    args += ["--set", "synthetic_examples=120", "--set", "max_length=16"]
    args += ["--set", f"key_dir={tmp_path / 'keys'}"]
    args += ["--set", "noise_multiplier=2.0"]  # skip the calibration (the slow part here)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rounds_completed"] == 1 and 0 < summary["epsilon"] <= 8.0
    with Ledger(out / "ledger.sqlite") as led:
        started = next(iter(led.entries())).payload
    assert started["privacy_unit"] == "example"
    assert started["config"]["dp"] == "local" and started["config"]["n_clients"] == 5
    completed = [e.payload for e in read_entries(out / "ledger.sqlite")]
    assert [p["cohort_size"] for p in completed if "cohort_size" in p] == [5]  # every site
    report = json.loads((out / "report.json").read_text())
    assert report["guarantee"]["privacy_unit"] == "example"
    assert "one example's data" in (out / "report.md").read_text()
