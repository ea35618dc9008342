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


def test_no_false_secure_rng_warning() -> None:
    """Opacus warns "Secure RNG turned off" because its own secure_mode is off; the noise comes
    from the AES-CTR source, so that warning would mislead an auditor reading the logs."""
    from securefl.dp.local import make_private

    model, opt, loader = _setup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_private(model, opt, loader, noise_multiplier=1.1, max_grad_norm=1.0)
    assert not [w for w in caught if "Secure RNG" in str(w.message)]


def test_validation() -> None:
    from securefl.dp.local import make_private

    model, opt, loader = _setup()
    with pytest.raises(InvalidParameterError) as info:
        make_private(model, opt, loader, noise_multiplier=0.0, max_grad_norm=1.0)
    assert info.value.parameter == "noise_multiplier"


# ------------------------------------------------------------- noise from a cryptographic source


def _train_once(seed: int, *, noise_multiplier: float = 1.0, key: bytes | None = None) -> object:
    """One short DP-SGD run as fl/local_dp.py did it: torch's generator seeded from a public
    seed before the data, the model and the training."""
    from torch.utils.data import DataLoader, TensorDataset

    from securefl.dp.local import make_private
    from securefl.dp.sampling import CryptoRandom

    torch.manual_seed(seed)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    kwargs = {} if key is None else {"rng": CryptoRandom(key)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_private(
            model, opt, loader, noise_multiplier=noise_multiplier, max_grad_norm=1.0, **kwargs
        )
        for xb, yb in s.data_loader:
            s.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(s.module(xb), yb).backward()
            s.optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_public_seed_gives_different_noisy_updates() -> None:
    """Hole 1 (issue 12): with the old code the same seed gave a bit-identical update."""
    a, b = _train_once(7), _train_once(7)
    assert not torch.equal(a, b)  # type: ignore[arg-type]


def test_only_the_cryptographic_source_differs() -> None:
    """With the DP randomness fixed (a test key) two runs are bit-identical, so the difference
    above is the DP noise/sampling and nothing else; a different key changes the update."""
    key = b"k" * 32
    a, b = _train_once(7, key=key), _train_once(7, key=key)
    assert torch.equal(a, b)  # type: ignore[arg-type]
    assert not torch.equal(a, _train_once(7, key=b"j" * 32))  # type: ignore[arg-type]


def test_noise_has_the_stated_scale() -> None:
    """Zero gradients: the gradient Opacus hands to SGD is pure noise / B, each coordinate
    N(0, (z·C/B)²). Σ g²/σ² over n coordinates is χ²(n); two-sided test at α = 1e-6."""
    from scipy.stats import chi2
    from torch.utils.data import DataLoader, TensorDataset

    from securefl.dp.local import make_private

    z, c, batch = 1.3, 0.7, 16
    torch.manual_seed(0)
    model = torch.nn.Linear(30, 20)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loader = DataLoader(TensorDataset(torch.randn(128, 30)), batch_size=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_private(model, opt, loader, noise_multiplier=z, max_grad_norm=c)
        grads = []
        for _ in range(3):
            for (xb,) in s.data_loader:
                s.optimizer.zero_grad()
                (s.module(xb) * 0.0).sum().backward()
                s.optimizer.step()
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    g = torch.cat(grads).double().numpy()
    sigma = z * c / batch  # Opacus divides the noisy sum by the expected batch size
    stat, n = float(((g / sigma) ** 2).sum()), g.size
    assert n == 24 * 620
    assert chi2.ppf(0.5e-6, n) < stat < chi2.ppf(1 - 0.5e-6, n), stat / n
    assert abs(float(g.mean())) < 6 * sigma / n**0.5


def test_normal_sampler_is_standard_normal() -> None:
    """KS tests of the Box–Muller sampler and of the smoothed one (fresh keys, α = 1e-6)."""
    from scipy.stats import kstest

    from securefl.dp.local import smoothed_normal, standard_normal
    from securefl.dp.sampling import CryptoRandom

    for sampler in (standard_normal, smoothed_normal):
        x = sampler(200_001, rng=CryptoRandom())
        assert x.shape == (200_001,) and x.dtype.name == "float64"
        assert kstest(x, "norm").pvalue > 1e-6
        assert abs(float(x.var()) - 1.0) < 6 * (2 / x.size) ** 0.5
    assert standard_normal(0, rng=CryptoRandom()).shape == (0,)


def test_crypto_gaussian_like_matches_the_reference() -> None:
    from securefl.dp.local import crypto_gaussian_like
    from securefl.dp.sampling import CryptoRandom

    ref = torch.zeros(300, 200, dtype=torch.float32)
    noise = crypto_gaussian_like(ref, 2.5, rng=CryptoRandom())
    assert noise.shape == ref.shape and noise.dtype == ref.dtype and noise.device == ref.device
    assert abs(float(noise.double().std()) - 2.5) < 6 * 2.5 / (2 * noise.numel()) ** 0.5


def test_normal_sampler_is_deterministic_only_in_its_key() -> None:
    from securefl.dp.local import standard_normal
    from securefl.dp.sampling import CryptoRandom

    a = standard_normal(5, rng=CryptoRandom(b"a" * 32))
    assert (a == standard_normal(5, rng=CryptoRandom(b"a" * 32))).all()
    assert not (
        standard_normal(5, rng=CryptoRandom()) == standard_normal(5, rng=CryptoRandom())
    ).all()


def test_session_records_how_the_noise_was_drawn() -> None:
    from securefl.dp.local import make_private

    model, opt, loader = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_private(model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0)
    src = s.params()["noise_source"]
    assert src == s.noise_source and src["seeded"] is False
    assert "AES-256-CTR" in src["generator"] and "os.urandom" in src["generator"]
    assert type(s.optimizer).__name__ == "CryptoNoiseDPOptimizer"


def test_clipping_and_noise_are_both_applied() -> None:
    """Huge identical per-example gradients are clipped to exactly C each: the noisy gradient
    times B minus (batch size)·C·x/‖x‖ is the noise alone, N(0, (zC)²) per coordinate (χ²)."""
    from scipy.stats import chi2
    from torch.utils.data import DataLoader, TensorDataset

    from securefl.dp.local import make_private

    z, c, batch, n = 0.8, 0.5, 8, 64
    x = torch.full((n, 20), 1000.0) * torch.linspace(0.5, 1.5, 20)
    model = torch.nn.Linear(20, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loader = DataLoader(TensorDataset(x), batch_size=batch)
    direction = (x[0] / x[0].norm()).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_private(model, opt, loader, noise_multiplier=z, max_grad_norm=c)
        residuals = []
        for _ in range(8):
            for (xb,) in s.data_loader:
                s.optimizer.zero_grad()
                s.module(xb).sum().backward()
                s.optimizer.step()
                g = model.weight.grad.flatten().double() * batch
                residuals.append(g - xb.shape[0] * c * direction)
    r = torch.cat(residuals).numpy() / (z * c)
    stat = float((r**2).sum())
    assert chi2.ppf(0.5e-6, r.size) < stat < chi2.ppf(1 - 0.5e-6, r.size), stat / r.size
