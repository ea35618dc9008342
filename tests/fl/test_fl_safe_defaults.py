"""Issue 12, holes 3, 9 and 10 at the loop's configuration: safe defaults, no silent clipping,
no nonsense accepted. Each test failed on the code before the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefl.errors import ConfigurationError
from securefl.fl.aggregation import PlainAggregator
from securefl.fl.config import RunConfig, load, noiseless_sum_seen_by
from securefl.fl.errors import EncodingRangeError
from securefl.fl.secure import SecAggAggregator

CONTEXT = bytes(range(64))


def test_default_run_gives_no_party_a_noiseless_sum() -> None:
    """Hole 3: the main job used SecAgg+ with *central* noise (the server unmasked the
    noiseless sum). Under secure aggregation the default is distributed noise."""
    cfg = RunConfig()
    assert cfg.aggregation == "secagg+"
    assert cfg.dp == "distributed"
    assert noiseless_sum_seen_by(cfg) == []
    device = load(Path(__file__).parents[2] / "securefl" / "fl" / "cross_device.toml")
    assert device.dp == "distributed"
    # The main job noises every update inside its site (DP-SGD) under SecAgg+.
    shipped = load(Path(__file__).parents[2] / "securefl" / "fl" / "default.toml")
    assert (shipped.aggregation, shipped.dp) == ("secagg+", "local")
    assert noiseless_sum_seen_by(shipped) == []


@pytest.mark.parametrize(
    ("aggregation", "mode", "seen_by"),
    [
        ("secagg", "distributed", []),
        ("he", "central", ["key holder"]),
        ("plain", "central", ["server"]),
    ],
)
def test_auto_dp_resolves_per_aggregation(aggregation: str, mode: str, seen_by: list[str]) -> None:
    cfg = RunConfig(aggregation=aggregation)  # type: ignore[arg-type]
    assert cfg.dp == mode
    assert noiseless_sum_seen_by(cfg) == seen_by
    assert cfg.to_dict()["dp"] == mode  # the recorded config names the mode that ran


def test_central_under_secagg_is_an_explicit_flagged_choice() -> None:
    cfg = RunConfig(aggregation="secagg+", dp="central")
    assert noiseless_sum_seen_by(cfg) == ["server"]


def test_secure_aggregation_without_dp_refuses_instead_of_clipping() -> None:
    """Hole 9: with secure aggregation and DP off, coordinates were clipped to max(clip, 1)
    silently (3.0 → 1.0), while plain aggregation kept them."""
    cfg = RunConfig(model="tiny", aggregation="secagg", dp="none", n_clients=8, frac_bits=16)
    x = np.array([3.0, -0.5, 0.25, 0.0])
    inputs = {c: x.copy() for c in range(8)}
    weights = dict.fromkeys(range(8), 1.0)
    with pytest.raises(EncodingRangeError) as info:
        SecAggAggregator(cfg, dimension=4).aggregate(
            inputs, weights, dropouts={}, round_index=0, context=CONTEXT
        )
    assert info.value.parameter == "update_bound"
    # Stating the real bound sizes the ring for it: the secure sum equals the plaintext sum.
    wide = cfg.replace(update_bound=4.0)
    secure = SecAggAggregator(wide, dimension=4).aggregate(
        inputs, weights, dropouts={}, round_index=0, context=CONTEXT
    )
    plain = PlainAggregator().aggregate(
        inputs, weights, dropouts={}, round_index=0, context=CONTEXT
    )
    assert secure.clipped_coordinates == 0
    np.testing.assert_allclose(
        secure.total, plain.total, atol=secure.protocol["encoding_error_bound"]
    )
    assert secure.protocol["value_bound"] == 4.0


def test_delta_at_least_one_over_population_is_refused() -> None:
    """Hole 10: δ = 0.5 with 160 clients was accepted."""
    with pytest.raises(ConfigurationError) as info:
        RunConfig(delta=0.5, n_clients=160)
    assert info.value.parameter == "delta"
    assert "1/n_clients" in str(info.value)
    with pytest.raises(ConfigurationError):
        RunConfig(delta=1.0 / 160, n_clients=160)
    ok = RunConfig(delta=0.5, n_clients=160, allow_large_delta=True)
    assert ok.to_dict()["allow_large_delta"] is True  # the override is recorded
    RunConfig(delta=0.5, n_clients=160, dp="none")  # no DP, no δ claim


@pytest.mark.parametrize("mode", ["central", "distributed", "local"])
def test_zero_noise_with_dp_on_is_refused_at_configuration(mode: str) -> None:
    """Hole 10: noise_multiplier = 0 with DP on was accepted until the first round, after the
    run-start ledger entry had been written."""
    with pytest.raises(ConfigurationError) as info:
        RunConfig(dp=mode, noise_multiplier=0.0)  # type: ignore[arg-type]
    assert info.value.parameter == "noise_multiplier"
    RunConfig(dp="none", noise_multiplier=0.0)
