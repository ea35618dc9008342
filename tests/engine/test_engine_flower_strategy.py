"""The strategy wrapper and client mod on Flower's own message API, in process.

The example app (``examples/flower_existing_app.py``: FedAvg + a linear model) runs unchanged
except for ``securefl_mod`` and ``SecureStrategy``; its nodes are ``ClientApp`` calls with
their own ``Context`` (:class:`InProcessGrid`). Each node's update is recomputed here from its
own data, so what the inner FedAvg receives is checked exactly (noise off) or up to the
noise (noise on), and the ledger and ε against the accountant.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from securefl.audit.ledger import Ledger
from securefl.dp.events import event_from_dict
from securefl.engine.flower_strategy import SecureStrategy, arrays_to_named
from securefl.engine.identity import generate_identity
from securefl.errors import ConfigurationError
from securefl.fl import privacy
from securefl.fl.client import clip_l2
from securefl.fl.config import RunConfig
from securefl.fl.errors import UnsupportedCombinationError
from securefl.secagg import Stage
from securefl.testing.flower_inprocess import InProcessGrid

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_existing_app.py"


def _example() -> Any:
    if "flower_existing_app" in sys.modules:
        return sys.modules["flower_existing_app"]
    spec = importlib.util.spec_from_file_location("flower_existing_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["flower_existing_app"] = module
    spec.loader.exec_module(module)
    return module


class RecordingFedAvg(FedAvg):
    """FedAvg that keeps every reply it was asked to aggregate (what the wrapper handed it)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: dict[int, list[Message]] = {}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.seen[server_round] = replies
        return super().aggregate_train(server_round, replies)


def _setup(tmp: Path, n: int, **cfg_kw: Any) -> tuple[dict[int, bytes], dict[int, Any], RunConfig]:
    registry, nodes = {}, {}
    for i in range(n):
        registry[i + 1] = generate_identity(tmp / f"node{i}.key", i + 1).public
        nodes[100 + i] = {"identity-key": str(tmp / f"node{i}.key"), "partition-id": i}
    base: dict[str, Any] = {
        "name": "flower-strategy",
        "n_clients": n,
        "sampling": "poisson",
        "sampling_rate": 1.0,
        "aggregation": "secagg+",
        "clip": 1.0,
        "out": str(tmp / "run"),
        "key_dir": str(tmp / "keys"),
    }
    return registry, nodes, RunConfig(**{**base, **cfg_kw})


def _deltas(ex: Any, start: dict[str, np.ndarray], lr: float, parts: list[int]) -> np.ndarray:
    """Each node's own update (bias, weight: the layout's sorted order) from ``start``."""
    out = []
    for p in parts:
        w, b, _ = ex.local_step(start["weight"], start["bias"], p, lr)
        new = np.concatenate([b.astype(np.float64), w.astype(np.float64)])
        old = np.concatenate([start["bias"], start["weight"]]).astype(np.float64)
        out.append(new - old)
    return np.array(out)


def _flat(arrays: ArrayRecord) -> np.ndarray:
    named = arrays_to_named(arrays)
    return np.concatenate([named["bias"], named["weight"]]).astype(np.float64)


def _run(
    tmp: Path, n: int, *, lr: float, drop_from: dict[int, int] | None = None, **cfg_kw: Any
) -> tuple[SecureStrategy, RecordingFedAvg, InProcessGrid]:
    ex = _example()
    registry, nodes, cfg = _setup(tmp, n, **cfg_kw)
    inner = RecordingFedAvg(min_available_nodes=n)
    strategy = SecureStrategy(inner, cfg, registry=registry, stage_timeout=5.0)
    with InProcessGrid(ex.client_app, nodes, drop_from=drop_from) as grid:
        strategy.start(
            grid=grid,
            initial_arrays=ex.initial_arrays(),
            num_rounds=2,
            train_config=ConfigRecord({"lr": lr}),
        )
    return strategy, inner, grid


def _check_ledger_and_epsilon(tmp: Path, strategy: SecureStrategy) -> list[dict[str, Any]]:
    assert strategy.run_result is not None
    with Ledger(tmp / "run" / "ledger.sqlite") as led:
        assert led.verify().ok
        done = [e.payload for e in led.entries() if e.kind == "round_completed"]
    events = [event_from_dict(p["dp_event"]) for p in done]
    eps = privacy.epsilon_of(strategy.cfg.replace(rounds=2), events)
    assert strategy.run_result.epsilon == pytest.approx(eps, rel=1e-12)
    assert (tmp / "run" / "report.html").exists()
    return done


def test_inner_fedavg_gets_the_exact_mean_of_the_survivors_without_noise(tmp_path: Path) -> None:
    """dp = none, one node vanishes before masking in round 1: the inner FedAvg receives one
    reply, global + the mean of the four survivors' own updates (fixed-point exact)."""
    ex = _example()
    strategy, inner, grid = _run(
        tmp_path, 5, lr=0.1, drop_from={104: int(Stage.MASKED_INPUT)}, dp="none"
    )
    start = arrays_to_named(ex.initial_arrays())
    for r, parts in ((1, [0, 1, 2, 3]), (2, [0, 1, 2, 3])):
        (reply,) = inner.seen[r]  # exactly one reply: the released model
        got = _flat(reply.content["arrays"])
        mean = _deltas(ex, start, 0.1, parts).mean(axis=0)
        old = np.concatenate([start["bias"], start["weight"]]).astype(np.float64)
        np.testing.assert_allclose(got, old + mean, atol=1e-4)
        assert np.abs(mean).max() > 1e-2  # the check can fail: the updates are not tiny
        assert reply.content["metrics"]["num-examples"] == 4  # no node metric reaches it
        start = arrays_to_named(reply.content["arrays"])
    done = _check_ledger_and_epsilon(tmp_path, strategy)
    assert [p["participant_ids"] for p in done] == [[0, 1, 2, 3]] * 2
    # the global model travels once (the app's ArrayRecord), and no evaluate message went out
    # (federated evaluation is an opt-in: node metrics would leave in plaintext)
    first = [m for m in grid.sent if m.content.config_records["securefl"].get("stage") == 0]
    assert len(first) == 10 and all("arrays" in m.content.array_records for m in first)
    assert all("global" not in m.content.config_records["securefl"] for m in first)
    assert all("securefl.blobs" not in m.content.array_records for m in first)
    assert all(m.metadata.message_type == "train" for m in grid.sent)
    # FedAvg's output from that one reply is the released model, bit for bit: round 2 trains
    # from exactly what round 1 released
    np.testing.assert_array_equal(_flat(first[-1].content["arrays"]), _flat(strategy.released[1]))
    assert strategy.run_result is not None and strategy.run_result.epsilon == float("inf")


def test_distributed_noise_is_added_to_the_clipped_mean(tmp_path: Path) -> None:
    """dp = distributed (z = 0.05, budget raised so it runs): the released mean is the mean of
    the clipped updates plus noise — not the noiseless mean, not the unclipped one."""
    ex = _example()
    strategy, inner, _grid = _run(
        tmp_path, 3, lr=1.5, dp="distributed", clip=0.3, noise_multiplier=0.05, epsilon_budget=1e4
    )
    start = arrays_to_named(ex.initial_arrays())
    (reply,) = inner.seen[1]
    raw = _deltas(ex, start, 1.5, [0, 1, 2])
    assert np.linalg.norm(raw, axis=1).min() > 2 * 0.3  # clipping matters
    clipped = np.array([clip_l2(d, 0.3)[0] for d in raw])
    old = np.concatenate([start["bias"], start["weight"]]).astype(np.float64)
    noise = _flat(reply.content["arrays"]) - (old + clipped.sum(axis=0) / 3)
    sigma = 0.05 * 0.3 / 3  # per coordinate of the mean (denominator = expected cohort 3)
    assert 1e-6 < np.abs(noise).max() < 8 * sigma
    unclipped = old + raw.mean(axis=0)
    assert np.abs(_flat(reply.content["arrays"]) - unclipped).max() > 0.1
    done = _check_ledger_and_epsilon(tmp_path, strategy)
    assert len(done) == 2 and all(p["dp_event"] for p in done)


def test_wrapper_refuses_local_dp_and_hand_written_loops(tmp_path: Path) -> None:
    registry, _nodes, cfg = _setup(tmp_path, 3, dp="distributed")
    with pytest.raises(UnsupportedCombinationError):
        SecureStrategy(FedAvg(), cfg.replace(dp="local"), registry=registry)
    with pytest.raises(ConfigurationError, match="registry"):
        SecureStrategy(FedAvg(), cfg, registry={1: registry[1]})
    strategy = SecureStrategy(FedAvg(), cfg, registry=registry)
    with pytest.raises(UnsupportedCombinationError):
        strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None)  # type: ignore[arg-type]


def test_wrapper_refuses_a_server_schedule(tmp_path: Path) -> None:
    """The loop's server step would scale the mean the inner strategy receives."""
    registry, _, cfg = _setup(tmp_path, 3, dp="none", server_lr_schedule="cosine")
    with pytest.raises(UnsupportedCombinationError) as err:
        SecureStrategy(RecordingFedAvg(min_available_nodes=3), cfg, registry=registry)
    assert err.value.parameter == "server_lr_schedule"


def test_mod_refuses_a_plaintext_train_request(tmp_path: Path) -> None:
    """A server without the wrapper (plain FedAvg) gets errors, never the parameters."""
    ex = _example()
    _registry, nodes, _cfg = _setup(tmp_path, 3)
    with InProcessGrid(ex.client_app, nodes) as grid:
        plain = FedAvg(min_available_nodes=3)
        msgs = plain.configure_train(1, ex.initial_arrays(), ConfigRecord({"lr": 0.1}), grid)
        replies = list(grid.send_and_receive(msgs))
    assert len(replies) == 3 and all(r.has_error() for r in replies)
    assert all("plaintext train request refused" in r.error.reason for r in replies)


def test_a_node_whose_own_policy_forbids_the_run_refuses_and_both_ledgers_say_so(
    tmp_path: Path,
) -> None:
    """Node 104 allows ε ≤ 1 per run; the run spends up to 8: it refuses before training in
    both rounds (its own signed ledger and the server's record it) and the others aggregate."""
    ex = _example()
    registry, nodes, cfg = _setup(tmp_path, 5, dp="distributed")
    (tmp_path / "ledgers").mkdir()  # the node's ledger; its signing key lives elsewhere
    for node, node_cfg in nodes.items():
        policy = tmp_path / f"policy{node}.toml"
        eps = 1.0 if node == 104 else 20.0
        policy.write_text(f'kind = "node"\nmax_epsilon_per_run = {eps}\n')
        node_cfg.update(
            {
                "node-policy": str(policy),
                "node-ledger": str(tmp_path / "ledgers" / f"{node}.sqlite"),
                "node-key-dir": str(tmp_path / f"nodekeys{node}"),
            }
        )
    strategy = SecureStrategy(FedAvg(), cfg, registry=registry, stage_timeout=5.0)
    with InProcessGrid(ex.client_app, nodes) as grid:
        strategy.start(grid=grid, initial_arrays=ex.initial_arrays(), num_rounds=2)
    done = _check_ledger_and_epsilon(tmp_path, strategy)
    assert [p["participant_ids"] for p in done] == [[0, 1, 2, 3]] * 2
    with Ledger(tmp_path / "run" / "ledger.sqlite") as led:
        refused = [e for e in led.entries() if e.kind == "node_refusal"]
    assert [e.round_id for e in refused] == [0, 1]
    assert all("NodePolicyRefusal" in e.payload["reason"] for e in refused)
    for node in nodes:
        with Ledger(tmp_path / "ledgers" / f"{node}.sqlite") as led:
            assert led.verify().ok
            kinds = [e.kind for e in led.entries()]
        if node == 104:
            assert kinds.count("node_round_refused") == 2 and "node_contribution" not in kinds
        else:
            assert kinds.count("node_contribution") == 2


def test_nodes_refuse_a_noise_multiplier_weaker_than_the_announced_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server announcing half the noise its recorded DP event assumes: every node's mod
    recomputes the event from the announced configuration and refuses before training; the
    round releases nothing and the refusals are in the server's ledger."""
    import securefl.engine.flower_strategy as fs

    real = fs.run_remote_round

    def weaker(orch: Any, *args: Any, **kw: Any) -> Any:
        orch.noise_multiplier = orch.backend.noise_multiplier / 2  # the lie in the terms
        return real(orch, *args, **kw)

    monkeypatch.setattr(fs, "run_remote_round", weaker)
    ex = _example()
    registry, nodes, cfg = _setup(tmp_path, 3, dp="distributed")
    inner = RecordingFedAvg(min_available_nodes=3)
    strategy = SecureStrategy(inner, cfg, registry=registry, stage_timeout=5.0)
    with InProcessGrid(ex.client_app, nodes) as grid:
        result = strategy.start(grid=grid, initial_arrays=ex.initial_arrays(), num_rounds=1)
    assert not inner.seen and not strategy.released  # nothing released to the inner strategy
    np.testing.assert_array_equal(_flat(result.arrays), _flat(ex.initial_arrays()))
    with Ledger(tmp_path / "run" / "ledger.sqlite") as led:
        assert led.verify().ok
        refusals = [e.payload["reason"] for e in led.entries() if e.kind == "node_refusal"]
    assert len(refusals) == 3 and all("DP event" in r for r in refusals)
