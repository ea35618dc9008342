"""The one-run canary audit inside a federated run (issue 14): canary clients go through the
real aggregation, the released model is scored, the ledger and report state what was shown,
and the auditor's secret never reaches the run directory.

False-failure rates: the no-DP test fails only if an included canary is sampled at most twice
in 20 rounds at q = 0.5 (about 2e-4 per canary, 0.01 for the ~50 included) and its background
from the other canaries (std ≈ 0.7·C at d = 10 000) outweighs it — far below 1e-3 together. The
DP test cannot refute its claim by construction (the claimed ε is above the most this design
can show), which the test asserts rather than assumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from securefl.api import CentralDP, DistributedDP, Federation, LocalDPSGD, NoDP, Plain, Poisson
from securefl.audit.keys import default_key_dir
from securefl.errors import ConfigurationError
from securefl.fl.canary_audit import DESIGN_SUFFIX, CanaryAudit
from securefl.fl.errors import ResumeError

from .ledger_rows import payloads as _payloads

D = 10_000


def _run(tmp_path: Path, privacy: object, *, canaries: int, rounds: int = 20) -> Path:
    fed = Federation(
        population=10,
        rounds=rounds,
        run_dir=tmp_path,
        aggregation=Plain(),
        privacy=privacy,  # type: ignore[arg-type]
        sampling=Poisson(0.5),
        server_lr=1.0,
        audit_canaries=canaries,
        allow_large_delta=True,  # 10 real clients: δ = 1e-5 is fine, but keep the test small
    )
    rng = np.random.default_rng(0)  # the real clients' "training" only
    for rnd in fed.rounds({"w": np.zeros(D)}):
        assert all(c < 10 for c in rnd.cohort)  # canaries never reach the user's loop
        for c in rnd.cohort:
            rnd.submit(c, {"w": 0.01 * rng.normal(size=D)})
        rnd.finish()
    return tmp_path


@pytest.fixture(scope="module")
def no_dp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("no-dp"), NoDP(), canaries=100)


def test_no_dp_run_is_caught_by_its_own_canaries(no_dp_run: Path) -> None:
    run_dir = no_dp_run
    (audit,) = _payloads(run_dir, "empirical_audit")
    assert audit["canaries"] == 100 and audit["guesses"] == 50
    assert audit["correct"] >= 49  # noiseless: (almost) every guess right
    assert audit["epsilon_lower_bound"] > 2.0  # type: ignore[operator]
    assert audit["max_provable_lower_bound"] == pytest.approx(2.78, abs=0.01)
    assert "without differential privacy" in str(audit["mechanism"])
    # Canary clients took part like any other client, in the recorded cohorts.
    details = audit["details"]
    assert isinstance(details, dict) and "seed" not in details and "inclusion" not in details
    first = details["canary_client_ids_from"]
    assert first == 10
    ids = {i for p in _payloads(run_dir, "round_completed") for i in p["participant_ids"]}  # type: ignore[attr-defined]
    assert any(i >= first for i in ids) and any(i < first for i in ids)
    started = _payloads(run_dir, "run_started")[0]
    assert started["sampling"]["canary_clients"] == details["canaries_included"]  # type: ignore[index]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["empirical_audit"]["correct"] == audit["correct"]
    md = (run_dir / "report.md").read_text()
    assert "with 100 canaries and 50 guesses" in md


def test_dp_run_records_a_bound_that_cannot_refute_a_larger_claim(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, CentralDP(clip=1.0, noise_multiplier=1.0), canaries=100, rounds=5)
    (audit,) = _payloads(run_dir, "empirical_audit")
    claimed = audit["epsilon_theoretical"]
    assert isinstance(claimed, float) and claimed > audit["max_provable_lower_bound"]  # type: ignore[operator]
    assert audit["claim_violated"] is False if "claim_violated" in audit else True
    assert audit["epsilon_lower_bound"] < claimed  # type: ignore[operator]
    assert "central noise" in str(audit["mechanism"])


def test_the_design_stays_in_the_key_directory(no_dp_run: Path) -> None:
    run_dir = no_dp_run
    run_id = json.loads((run_dir / "summary.json").read_text())["run_id"]
    design_file = default_key_dir() / f"{run_id}{DESIGN_SUFFIX}"
    assert design_file.stat().st_mode & 0o077 == 0
    seed = json.loads(design_file.read_text())["seed"]
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert seed.encode() not in f.read_bytes(), f  # the secret never reaches outputs


def test_resume_reuses_the_design_and_refuses_a_different_one(tmp_path: Path) -> None:
    a = CanaryAudit.load_or_create(tmp_path, "run-x", 40, 100, 0.5, n_real=7)
    b = CanaryAudit.load_or_create(tmp_path, "run-x", 40, 100, 0.5, n_real=7)
    assert a.design == b.design and a.client_ids == b.client_ids
    assert a.client_ids[0] == 7 and len(a.client_ids) == sum(a.design.inclusion)
    with pytest.raises(ResumeError):
        CanaryAudit.load_or_create(tmp_path, "run-x", 40, 101, 0.5, n_real=7)
    (tmp_path / f"run-y{DESIGN_SUFFIX}").write_text('{"seed": "zz"}')
    with pytest.raises(ConfigurationError):
        CanaryAudit.load_or_create(tmp_path, "run-y", 40, 100, 0.5, n_real=7)


def test_canary_updates_sit_at_the_clip_norm(tmp_path: Path) -> None:
    a = CanaryAudit.load_or_create(tmp_path, "run-z", 8, 500, 0.5, n_real=3)
    ups = a.updates(a.client_ids, round_index=0, layout_digest=b"x" * 32, num_examples=1)
    for u in ups.values():
        assert np.linalg.norm(u.delta) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("privacy", "canaries"),
    [(LocalDPSGD(max_grad_norm=1.0, epsilon=1.0), 100), (NoDP(), 2), (NoDP(), -1)],
)
def test_audit_settings_are_checked(tmp_path: Path, privacy: object, canaries: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        Federation(
            population=10,
            rounds=1,
            run_dir=tmp_path,
            privacy=privacy,  # type: ignore[arg-type]
            client_sizes=[5] * 10,
            audit_canaries=canaries,
        )
    assert info.value.parameter == "audit_canaries"


def test_distributed_dp_with_canaries_in_secure_aggregation(tmp_path: Path) -> None:
    """Canaries go through the masked, distributed-noise path too (SecAgg+)."""
    fed = Federation(
        population=6,
        rounds=2,
        run_dir=tmp_path,
        privacy=DistributedDP(clip=1.0, epsilon=8.0),
        sampling=Poisson(1.0),
        audit_canaries=8,
        allow_large_delta=True,
    )
    for rnd in fed.rounds({"w": np.zeros(50)}):
        for c in rnd.cohort:
            rnd.submit(c, {"w": np.full(50, 0.01)})
        rnd.finish()
    completed = _payloads(tmp_path, "round_completed")
    assert all(int(p["participants"]) > 6 for p in completed)  # type: ignore[call-overload]
    assert len(_payloads(tmp_path, "empirical_audit")) == 1
