"""The run's accountant is reused (PLDs memoised per accountant): ε and z are bit-identical to
fresh accountants, and the memo stays bounded (issue 13: the main job's non-training costs)."""

from __future__ import annotations

from pathlib import Path

import securefl
from securefl.dp.accounting import _PLD_MEMO_SIZE, PldAccountant
from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent
from securefl.fl import privacy
from securefl.fl.config import load
from securefl.fl.local_dp import client_event

MAIN_JOB = Path(securefl.__file__).parent / "fl" / "default.toml"


def _round(z: float) -> SelfComposedEvent:
    return SelfComposedEvent(PoissonSampledEvent(0.25, GaussianEvent(z)), 4)


def test_memoised_pld_gives_bit_identical_epsilon() -> None:
    shared = PldAccountant()
    for k in (1, 2, 3, 2, 1):  # prefixes as a run asks for them, then repeats
        event = SelfComposedEvent(_round(1.1), k)
        assert shared.epsilon(event, 1e-5) == PldAccountant().epsilon(event, 1e-5)
        assert shared.delta(event, 2.0) == PldAccountant().delta(event, 2.0)


def test_memo_is_bounded() -> None:
    acc = PldAccountant()
    for i in range(_PLD_MEMO_SIZE + 10):
        acc.pld(GaussianEvent(5.0 + i))
    assert len(acc._memo) <= _PLD_MEMO_SIZE


def test_calibration_and_account_match_fresh_accountants(tmp_path: Path) -> None:
    """The main job's calibration path (one shared accountant) against fresh accountants at
    every step: same z bit for bit, same ε after every round."""
    cfg = load(MAIN_JOB, out=str(tmp_path), rounds=2, target_epsilon=4.0)

    def build(z: float) -> SelfComposedEvent:
        return client_event(40, cfg.local_epochs, cfg.batch_size, z)

    def fresh_eps(z: float) -> float:
        return privacy.epsilon_of(cfg, [build(z)] * cfg.rounds)

    z = privacy.calibrate(cfg, build, accountant=privacy.accountant_for(cfg))
    assert fresh_eps(z) <= cfg.target_epsilon < fresh_eps(z - 1e-3)
    account = privacy.PrivacyAccount(cfg, [])
    for r in range(1, cfg.rounds + 1):
        account.events.append(build(z))
        assert account.epsilon() == privacy.epsilon_of(cfg, [build(z)] * r)


def test_report_curve_reuses_one_accountant_bit_identically() -> None:
    from securefl.audit.spend import compose, epsilon, epsilon_curve

    events = [_round(1.1).to_dict()] * 3 + [_round(1.3).to_dict()]
    curve = epsilon_curve("pld", events, [1, 2, 3, 4], 1e-5)
    assert curve == [epsilon("pld", compose(events[:k]), 1e-5) for k in (1, 2, 3, 4)]
