"""Sample-level DP-SGD through Opacus on a small torch model (example-level event)."""

from __future__ import annotations

import warnings

import pytest

from securefl.dp.accounting import get_accountant
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

torch = pytest.importorskip("torch")


def _setup() -> tuple[object, object, object]:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)  # synthetic data and model init (not DP noise)
    x = torch.randn(128, 6)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return model, opt, DataLoader(TensorDataset(x, y), batch_size=16)


def test_make_private_trains_and_reports_the_performed_event() -> None:
    from securefl.dp.local import make_private

    model, opt, loader = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_private(model, opt, loader, noise_multiplier=1.1, max_grad_norm=1.0)
        assert s.event().to_dict()["type"] == "noop"
        for _ in range(2):
            for xb, yb in s.data_loader:
                s.optimizer.zero_grad()
                torch.nn.functional.cross_entropy(s.module(xb), yb).backward()
                s.optimizer.step()
    assert s.steps == 16 and s.sample_rate == pytest.approx(1 / 8)
    assert s.event() == SelfComposedEvent(PoissonSampledEvent(0.125, GaussianEvent(1.1)), 16)
    eps_pld = s.epsilon(1e-5)
    assert eps_pld == get_accountant("pld").epsilon(s.event(), 1e-5)
    assert eps_pld <= s.engine.get_epsilon(1e-5)  # tighter than Opacus's own RDP/PRV
    assert s.params()["privacy_unit"] == "example"


def test_validation() -> None:
    from securefl.dp.local import make_private

    model, opt, loader = _setup()
    with pytest.raises(InvalidParameterError) as info:
        make_private(model, opt, loader, noise_multiplier=0.0, max_grad_norm=1.0)
    assert info.value.parameter == "noise_multiplier"
