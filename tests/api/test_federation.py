"""The public Federation API: the round loop a user drives, what it records, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import securefl
from securefl.api import (
    CentralDP,
    DistributedDP,
    Federation,
    FixedSize,
    LocalDPSGD,
    NoDP,
    Plain,
    Poisson,
    SecAgg,
    SecAggPlus,
    ThreatModel,
)
from securefl.audit.keys import assert_no_signing_key_under
from securefl.audit.ledger import verify_ledger
from securefl.errors import ConfigurationError

from .ledger_rows import payloads as _payloads


def _state(d: int = 6) -> dict[str, np.ndarray]:
    return {"w": np.zeros((2, d // 2)), "b": np.zeros(1)}


def test_top_level_namespace_exports_the_api() -> None:
    assert securefl.Federation is Federation
    assert securefl.SecAggPlus is SecAggPlus
    with pytest.raises(AttributeError):
        _ = securefl.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: CentralDP(clip=1.0), "epsilon"),
        (lambda: CentralDP(clip=1.0, epsilon=1.0, noise_multiplier=1.0), "epsilon"),
        (lambda: DistributedDP(clip=-1.0, epsilon=1.0), "clip"),
        (lambda: LocalDPSGD(max_grad_norm=float("nan"), epsilon=1.0), "max_grad_norm"),
    ],
)
def test_specs_validate_themselves(build: object, param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert info.value.parameter == param


def test_privacy_must_be_chosen_explicitly(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Federation(population=4, rounds=1, run_dir=tmp_path)
    assert info.value.parameter == "privacy"


def test_defaults_are_the_strong_ones(tmp_path: Path) -> None:
    fed = Federation(population=10, rounds=1, run_dir=tmp_path, privacy=NoDP())
    assert fed.cfg.aggregation == "secagg+"
    assert fed.cfg.secagg_model == "semi-malicious"  # the malicious-server model
    weak = Federation(
        population=10,
        rounds=1,
        run_dir=tmp_path / "w",
        privacy=NoDP(),
        aggregation=SecAgg(threat_model=ThreatModel.SEMI_HONEST),
    )
    assert weak.cfg.secagg_model == "semi-honest"  # an explicit opt-in, in the recorded config


def test_user_driven_loop_is_plain_fedavg_with_exact_sums(tmp_path: Path) -> None:
    fed = Federation(
        population=5,
        rounds=2,
        run_dir=tmp_path,
        aggregation=Plain(),
        privacy=NoDP(),
        sampling=FixedSize(5),
        server_lr=1.0,
    )
    state = _state()
    seen = []
    for rnd in fed.rounds(state):
        assert rnd.cohort == (0, 1, 2, 3, 4)
        for c in rnd.cohort:
            rnd.submit(c, {"w": np.full((2, 3), float(c)), "b": np.array([1.0])})
        before = rnd.state
        state = rnd.finish()
        seen.append((before, state))
    assert fed.result is not None and fed.result.rounds_completed == 2
    for before, after in seen:  # mean of 0..4 is 2; b moves by 1 per round
        np.testing.assert_allclose(after["w"] - before["w"], 2.0)
        np.testing.assert_allclose(after["b"] - before["b"], 1.0)
    assert fed.result.epsilon == float("inf")  # no DP: the ledger says so
    assert Path(fed.result.report_paths["html"]).is_file()
    # Custody (issue 14): nothing under the run directory can re-sign the ledger or reveal the
    # cohorts; the ledger is one finished file and its head anchor was published.
    assert_no_signing_key_under(tmp_path)
    assert not list(tmp_path.rglob("*sampling*key*"))
    assert not list(tmp_path.glob("ledger.sqlite-*"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    seq, _, head = summary["ledger_anchor"].partition(":")
    assert int(seq) > 0 and len(head) == 64
    assert not Path(summary["ledger_public_key"]).is_relative_to(tmp_path)
    assert verify_ledger(
        tmp_path / "ledger.sqlite",
        Path(summary["ledger_public_key"]),
        expected_head=summary["ledger_anchor"],
    ).ok


def test_secure_loop_records_planned_rounds_code_version_and_refuses_strangers(
    tmp_path: Path,
) -> None:
    fed = Federation(
        population=8,
        rounds=1,
        run_dir=tmp_path,
        aggregation=SecAggPlus(),
        privacy=CentralDP(clip=1.0, noise_multiplier=1.0),
        sampling=Poisson(1.0),
    )
    for rnd in fed.rounds(_state()):
        with pytest.raises(ConfigurationError):
            rnd.submit(99, {"w": np.zeros((2, 3)), "b": np.zeros(1)})
        for c in rnd.cohort:
            rnd.submit(c, {"w": np.full((2, 3), 10.0), "b": np.zeros(1)})  # clipped to 1.0
        with pytest.raises(ConfigurationError):
            rnd.submit(0, {"w": np.zeros((2, 3)), "b": np.zeros(1)})  # twice
    started = _payloads(tmp_path, "run_started")[0]
    assert started["planned_rounds"] == 1
    assert started["code_version"]
    projected = _payloads(tmp_path, "round_projected")[0]
    completed = _payloads(tmp_path, "round_completed")[0]
    assert projected["dp_event"] == completed["dp_event"]  # the event is the noise that ran
    assert projected["aggregation"]["threshold"] == completed["aggregation"]["threshold"]
    assert completed["participants"] == 8
    assert completed["participant_ids"] == list(range(8))
    assert completed["record_version"] == 1 if "record_version" in completed else True


def test_policy_with_secagg_threshold_runs_and_refuses_when_exhausted(tmp_path: Path) -> None:
    policy = Path(__file__).parents[2] / "audits" / "policies" / "client_level_secagg.toml"
    fed = Federation(
        population=20,
        rounds=3,
        run_dir=tmp_path,
        aggregation=SecAggPlus(),
        privacy=CentralDP(clip=1.0, noise_multiplier=0.3),  # ε grows fast: the budget binds
        sampling=Poisson(0.9),
        policy=policy,
    )
    done = 0
    for rnd in fed.rounds(_state()):
        for c in rnd.cohort:
            rnd.submit(c, {"w": np.zeros((2, 3)), "b": np.zeros(1)})
        rnd.finish()
        done += 1
    assert fed.result is not None
    assert done < 3 and fed.result.refused  # stopped by the budget, recorded
    refused = _payloads(tmp_path, "round_refused")
    assert refused and any("budget" in r for r in refused[0]["reasons"])  # type: ignore[union-attr]


def test_local_dpsgd_needs_make_private(tmp_path: Path) -> None:
    fed = Federation(
        population=4,
        rounds=1,
        run_dir=tmp_path,
        aggregation=Plain(),
        privacy=LocalDPSGD(max_grad_norm=1.0, noise_multiplier=1.0),
        sampling=FixedSize(4),
        client_sizes=[10, 10, 10, 10],
    )
    for rnd in fed.rounds(_state()):
        with pytest.raises(ConfigurationError, match="make_private"):
            rnd.submit(rnd.cohort[0], {"w": np.zeros((2, 3)), "b": np.zeros(1)})
        break
    # The ledger says how the DP-SGD noise is drawn: a CSPRNG no config value determines.
    source = _payloads(tmp_path, "run_started")[0]["dp"]["noise_source"]  # type: ignore[index]
    assert source["seeded"] is False


def _server(run_dir: Path, rounds: int, **kw: object) -> Federation:
    """Four clients, all every round, no DP, server lr 0.5; ``kw``: server optimiser knobs."""
    return Federation(
        population=4,
        rounds=rounds,
        run_dir=run_dir,
        aggregation=Plain(),
        privacy=NoDP(),
        sampling=FixedSize(4),
        server_lr=0.5,
        **kw,  # type: ignore[arg-type]
    )


def _fedavgm(run_dir: Path, rounds: int) -> Federation:
    return _server(run_dir, rounds, server_optimizer="fedavgm", server_momentum=0.9)


def _drive(fed: Federation, state: dict[str, np.ndarray], stop_after: int | None = None) -> None:
    for rnd in fed.rounds(state):
        for c in rnd.cohort:
            rnd.submit(c, {"w": np.full((2, 3), 1.0 + c), "b": np.array([0.5])})
        rnd.finish()
        if stop_after is not None and rnd.index + 1 == stop_after:
            break  # the process "dies" after this round's checkpoint


def test_server_momentum_steps_and_survives_a_resume(tmp_path: Path) -> None:
    """FedAvgM (Reddi et al. 2021): m ← 0.9 m + Δ, x ← x + lr m. A resumed run continues the
    momentum from the checkpoint, so it ends where the uninterrupted run ends."""
    whole = _fedavgm(tmp_path / "whole", 3)
    _drive(whole, _state())
    assert whole.result is not None
    # layout order b, w. Mean update of w is 2.5 each round: m = 2.5, 4.75, 6.775, so
    # w = 0.5 · 14.025; b moves by 0.5: m = 0.5, 0.95, 1.355, b = 0.5 · 2.805.
    np.testing.assert_allclose(whole.result.global_flat[0], 0.5 * (0.5 + 0.95 + 1.355))
    np.testing.assert_allclose(whole.result.global_flat[1:], 0.5 * (2.5 + 4.75 + 6.775))
    _drive(_fedavgm(tmp_path / "crash", 3), _state(), stop_after=2)
    resumed = _fedavgm(tmp_path / "crash", 3)
    _drive(resumed, _state())
    assert resumed.result is not None and resumed.result.resumed_from == 2
    np.testing.assert_array_equal(resumed.result.global_flat, whole.result.global_flat)


def _cosine(run_dir: Path, rounds: int, **kw: object) -> Federation:
    return _server(run_dir, rounds, **{"server_lr_schedule": "cosine", **kw})


def test_cosine_server_schedule_steps_by_the_round_and_survives_a_resume(tmp_path: Path) -> None:
    """Round r steps with cosine_lr(0.5, r, 4, warmup=2, floor=0.1·0.5) times the mean
    update (FedAvg): a linear warm-up over two rounds, then the cosine from 0.5 down. A
    resumed run continues the same schedule, so it ends where the uninterrupted run ends."""
    from securefl.fl.server_optim import cosine_lr

    kw = {"server_lr_warmup": 2, "server_lr_final_ratio": 0.1}
    whole = _cosine(tmp_path / "whole", 4, **kw)
    _drive(whole, _state())
    assert whole.result is not None
    lrs = [cosine_lr(0.5, r, 4, warmup=2, floor=0.05) for r in range(4)]
    assert lrs[0] < lrs[1] and lrs[3] < lrs[2]  # the schedule does move
    # layout order b, w; mean updates: b 0.5, w 2.5 every round
    np.testing.assert_allclose(whole.result.global_flat[0], 0.5 * sum(lrs))
    np.testing.assert_allclose(whole.result.global_flat[1:], 2.5 * sum(lrs))
    _drive(_cosine(tmp_path / "crash", 4, **kw), _state(), stop_after=2)
    resumed = _cosine(tmp_path / "crash", 4, **kw)
    _drive(resumed, _state())
    assert resumed.result is not None and resumed.result.resumed_from == 2
    np.testing.assert_allclose(resumed.result.global_flat, whole.result.global_flat)


@pytest.mark.parametrize(
    ("kw", "parameter"),
    [
        ({"server_lr_schedule": "linear"}, "server_lr_schedule"),
        ({"server_lr_warmup": 4}, "server_lr_warmup"),
        ({"server_lr_warmup": -1}, "server_lr_warmup"),
        ({"server_lr_final_ratio": 1.5}, "server_lr_final_ratio"),
        ({"server_lr_final_ratio": float("nan")}, "server_lr_final_ratio"),
    ],
)
def test_bad_server_schedules_are_refused(
    tmp_path: Path, kw: dict[str, object], parameter: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        _cosine(tmp_path / "run", 4, **kw)
    assert err.value.parameter == parameter


def test_a_constant_schedule_refuses_cosine_knobs(tmp_path: Path) -> None:
    """Warm-up or a final ratio without the cosine schedule would be silently ignored."""
    with pytest.raises(ConfigurationError) as err:
        Federation(
            population=4,
            rounds=4,
            run_dir=tmp_path / "run",
            privacy=NoDP(),
            aggregation=Plain(),
            server_lr_warmup=1,
        )
    assert err.value.parameter == "server_lr_schedule"


@pytest.mark.parametrize("epochs_run", [1, 2])
def test_dpsgd_must_take_every_declared_step(tmp_path: Path, epochs_run: int) -> None:
    """A loop that takes fewer DP-SGD steps than accounted (e.g. by skipping an empty Poisson
    batch, which leaks whether it was empty) is refused; the full loop is accepted."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    fed = Federation(
        population=2,
        rounds=1,
        run_dir=tmp_path,
        aggregation=Plain(),
        privacy=LocalDPSGD(max_grad_norm=1.0, noise_multiplier=1.0, epochs=2, batch_size=4),
        sampling=FixedSize(2),
        client_sizes=[16, 16],
    )
    model = torch.nn.Linear(4, 2)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for rnd in fed.rounds(state):
        client = rnd.cohort[0]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dp = rnd.make_private(client, model, opt, DataLoader(data, batch_size=4))
        for _ in range(epochs_run):
            for x, y in dp.data_loader:
                if len(y) == 0:
                    dp.noise_only_step()
                    continue
                dp.optimizer.zero_grad()
                torch.nn.functional.cross_entropy(dp.module(x), y).backward()
                dp.optimizer.step()
        dp.module._close()
        update = {k: v.detach() - state[k] for k, v in model.state_dict().items()}
        if epochs_run < 2:
            with pytest.raises(ConfigurationError, match="performed DP-SGD"):
                rnd.submit(client, update, num_examples=16)
        else:
            rnd.submit(client, update, num_examples=16)
        break
