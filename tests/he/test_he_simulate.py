"""The in-process round driver: flat and named inputs, dropouts, both weighting modes."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.errors import AbortError
from securefl.he import KeyHolder
from securefl.he.simulate import run_round


def test_flat_round_with_dropouts_and_client_weights(holders: dict[str, KeyHolder]) -> None:
    rng = np.random.default_rng(0)
    inputs = {c: rng.normal(size=5000) for c in range(6)}
    weights = {c: 0.5 + c for c in range(6)}
    result = run_round(inputs, holders["fast"], weights=weights, dropouts=frozenset({2, 9}))
    want = sum(weights[c] * inputs[c] for c in range(6) if c != 2)
    assert np.max(np.abs(result.total - want)) <= result.metadata["released_error_bound"]
    assert result.survivors == frozenset({0, 1, 3, 4, 5})
    assert result.dropped == frozenset({2})
    assert set(result.bytes_up) == set(result.survivors)
    assert result.bytes_down == pytest.approx(result.bytes_up[0], rel=0.01)
    assert result.metadata["weighting"] == "client"
    assert set(result.timings) == {"setup", "encrypt", "aggregate", "decrypt"}


def test_named_round_server_weights(holders: dict[str, KeyHolder]) -> None:
    rng = np.random.default_rng(1)
    inputs = {c: {"A": rng.normal(size=(8, 4)), "B": rng.normal(size=3)} for c in range(3)}
    weights = {0: 0.2, 1: 0.3, 2: 0.5}
    result = run_round(inputs, holders["weighted"], weights=weights, server_weighting=True)
    for k in ("A", "B"):
        want = sum(weights[c] * inputs[c][k] for c in range(3))
        assert np.max(np.abs(result.total[k] - want)) <= result.metadata["released_error_bound"]
    assert result.metadata["weighting"] == "server"
    assert result.bytes_down < 0.6 * result.bytes_up[0]  # mod-switched download


def test_everyone_dropped(holders: dict[str, KeyHolder]) -> None:
    with pytest.raises(AbortError):
        run_round({0: np.zeros(3)}, holders["fast"], dropouts=frozenset({0}))


def test_cli_commands() -> None:
    import typer
    from typer.testing import CliRunner

    from securefl.he.cli import register

    app = typer.Typer()
    register(app)
    out = CliRunner().invoke(app, ["he-presets", "--clients", "50"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "precise" in out.output and "128-bit" in out.output
    out = CliRunner().invoke(app, ["he-demo", "--clients", "3", "--dim", "100"])
    assert out.exit_code == 0, out.output
    assert "≤ stated" in out.output
