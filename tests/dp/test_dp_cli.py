"""``securefl account``: ε per accountant, or the calibrated σ, as JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from securefl.cli import app


def test_account_epsilon_json() -> None:
    res = CliRunner().invoke(
        app,
        [
            "account",
            "--q",
            "0.01",
            "--sigma",
            "1.0",
            "-T",
            "100",
            "--json",
            "-a",
            "pld",
            "-a",
            "rdp",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["epsilon"]["pld"] <= out["epsilon"]["rdp"]
    assert out["event"]["type"] == "self_composed"


def test_account_calibrate_and_errors() -> None:
    res = CliRunner().invoke(
        app, ["account", "--q", "0.05", "--target-epsilon", "3", "-T", "50", "-a", "pld", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert 0 < json.loads(res.output.strip().splitlines()[-1])["noise_multiplier"]["pld"] < 5
    bad = CliRunner().invoke(app, ["account", "--q", "0.05", "-T", "5"])
    assert bad.exit_code != 0
