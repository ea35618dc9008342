"""Local DP-SGD charges the worst site over the whole run, not after one round.

With B = 16, z = 1 and δ = 1e-5, a 32-example site spends more ε than a 16-example one in one
round (2 steps at q = 1/2 vs 1 step at q = 1) but less after five rounds; a choice by one
round under-states the smaller site's ε by about 10 %. Both the simulation (fl.local_dp) and an
engine node's own check (engine.job.WorstCaseDpSgd) must rank by the run's ε."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from securefl.engine.job import WorstCaseDpSgd
from securefl.errors import UnsafeRequestError
from securefl.fl import privacy
from securefl.fl.config import RunConfig
from securefl.fl.local_dp import attach_local_dp, client_event

SIZES = (16, 32)
Z = 1.0


def _cfg() -> RunConfig:
    return RunConfig(
        dp="local", accountant="pld", delta=1e-5, rounds=5, batch_size=16, local_epochs=1
    )


def _run_eps(cfg: RunConfig, n: int) -> float:
    return privacy.epsilon_of(cfg, [client_event(n, 1, 16, Z)] * cfg.rounds)


def test_the_order_flips_under_composition() -> None:
    """The premise: one round ranks 32 worse, five rounds rank 16 worse."""
    cfg = _cfg()
    one = {n: privacy.epsilon_of(cfg, [client_event(n, 1, 16, Z)]) for n in SIZES}
    assert one[32] > one[16]
    assert _run_eps(cfg, 16) > _run_eps(cfg, 32) * 1.05


def test_simulation_charges_the_worst_site_over_the_run() -> None:
    cfg = _cfg()
    backend: Any = SimpleNamespace(cfg=cfg, client_sizes=list(SIZES))
    attach_local_dp(backend)
    charged = privacy.epsilon_of(cfg, [backend.event_for(Z)] * cfg.rounds)
    assert charged == pytest.approx(max(_run_eps(cfg, n) for n in SIZES), rel=1e-9)


class _Trainer:
    """Stands in for the run's DpSgdTrainer: records whether training was reached."""

    noise_multiplier = Z

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, model: Any, data: Any, spec: Any, *, seed: int) -> str:
        self.calls.append(len(data))
        return "trained"


def test_node_refuses_an_announced_event_worse_for_one_round_only() -> None:
    cfg = _cfg()
    announced = client_event(32, 1, 16, Z).to_dict()
    inner = _Trainer()
    check = WorstCaseDpSgd(inner, cfg, announced)
    with pytest.raises(UnsafeRequestError, match="spends more"):
        check(None, [0] * 16, None, seed=0)
    assert inner.calls == []
    assert check(None, [0] * 32, None, seed=0) == "trained"  # its own size is fine
