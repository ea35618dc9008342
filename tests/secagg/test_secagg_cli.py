"""``securefl secagg-demo`` runs a round under the malicious-server model and refuses an
insecure threshold instead of running it."""

from __future__ import annotations

from typer.testing import CliRunner

from securefl.cli import app


def test_demo_runs_and_reports() -> None:
    result = CliRunner().invoke(app, ["secagg-demo", "--clients", "8", "--dim", "64"])
    assert result.exit_code == 0, result.output
    assert "malicious server" in result.output and "survivors" in result.output


def test_demo_refuses_an_insecure_threshold() -> None:
    args = ["secagg-demo", "--clients", "8", "--dim", "64", "--threshold", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "refused" in result.output and "threshold" in result.output
    ok = CliRunner().invoke(app, [*args, "--threat-model", "semi-honest"])
    assert ok.exit_code == 0, ok.output
