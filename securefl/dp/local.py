"""Sample-level DP-SGD inside one client's local training, through Opacus.

:func:`make_private` wraps a user's ordinary ``torch`` module, optimizer and data loader with
Opacus (per-example clipping to ``max_grad_norm``, Gaussian noise of standard deviation
``noise_multiplier·max_grad_norm`` per step, Poisson sampling of examples with rate
q = 1/len(data_loader) — Abadi et al. 2016). The event it reports is built from the steps
Opacus actually recorded (its accountant history), so the accounted sampling is the performed
one.

Privacy unit: ONE EXAMPLE of this client's data, add/remove adjacency. This guarantee is
per client and says nothing about a client's whole contribution; the client-level guarantee
comes from DP-FedAvg / DDGauss (``securefl.dp.fedavg`` / ``securefl.dp.distributed``). See
``protocols/dp.md`` §"Privacy units" for how the two compose.

Randomness (protocols/dp.md §4.6). Both random choices the DP-SGD guarantee rests on come from
the AES-256-CTR source :class:`~securefl.dp.sampling.CryptoRandom` keyed by ``os.urandom``,
never from torch's (seedable, Mersenne-Twister/Philox) generators: a config seed written to a
ledger would otherwise let anyone regenerate and subtract the noise, or know which examples
each step used (which voids the amplification-by-sampling the event claims).

* The Gaussian noise: :func:`standard_normal` (Box–Muller from 53-bit uniforms), smoothed as in
  Opacus's ``secure_mode`` (Holohan & Braghin 2021 §5.1): each coordinate is the sum of four
  independent N(0, 1) divided by 2, so the set of floats one noisy coordinate can take is not
  the sparse image of a single Box–Muller draw (the floating-point attacks of Jin et al. 2022
  / Mironov 2012 read the input from that sparsity).
* The Poisson sample: each example joins each step by an exact Bernoulli(1/k) draw
  (k = number of batches), :meth:`CryptoRandom.bernoulli`.

Data shuffling outside DP (the user's own loader order) is replaced by the Poisson sample.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import (
    ComposedEvent,
    DpEvent,
    GaussianEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
)
from securefl.dp.sampling import CryptoRandom

FloatVector = npt.NDArray[np.float64]

#: Number of N(0, 1) summed (then divided by √SMOOTHING) per noise coordinate.
SMOOTHING = 4

_TWO_M53 = 2.0**-53


def standard_normal(n: int, *, rng: CryptoRandom) -> FloatVector:
    """``n`` independent N(0, 1) float64 draws by Box–Muller from 53-bit uniforms.

    Each 64-bit keystream word w gives k = w >> 11 uniform on [0, 2^53); u₁ = (k₁ + 1)·2^−53
    ∈ (0, 1] and u₂ = k₂·2^−53 ∈ [0, 1) are exact float64 values, and
    (√(−2 ln u₁)·cos 2πu₂, √(−2 ln u₁)·sin 2πu₂) are two independent standard normals (both
    are used). The only deviation from N(0, 1) beyond float64 rounding is the truncation
    |x| ≤ √(106 ln 2) ≈ 8.57 caused by u₁ ≥ 2^−53 (tail mass ≈ 1e−17).
    """
    n = v.count("n", n)
    pairs = (n + 1) // 2
    words = rng.uint64(2 * pairs) >> np.uint64(11)
    u1 = (words[:pairs].astype(np.float64) + 1.0) * _TWO_M53
    u2 = words[pairs:].astype(np.float64) * _TWO_M53
    r = np.sqrt(-2.0 * np.log(u1))
    theta = (2.0 * math.pi) * u2
    return np.concatenate((r * np.cos(theta), r * np.sin(theta)))[:n]


def smoothed_normal(n: int, *, rng: CryptoRandom) -> FloatVector:
    """``n`` N(0, 1) draws, each (X₁ + X₂ + X₃ + X₄)/2 of :func:`standard_normal` draws.

    The sum of four independent N(0, 1) over √4 is exactly N(0, 1); its float64 values are
    dense where one Box–Muller output is not (Holohan & Braghin 2021 §5.1, Opacus
    ``secure_mode``), and it is bounded only at |x| ≤ 17.1 (tail mass < 1e−60).
    """
    n = v.count("n", n)
    draws = standard_normal(SMOOTHING * n, rng=rng).reshape(SMOOTHING, n)
    return np.asarray(draws.sum(axis=0) / math.sqrt(SMOOTHING), dtype=np.float64)


def crypto_gaussian_like(reference: Any, std: float, *, rng: CryptoRandom) -> Any:
    """A torch tensor of N(0, std²) noise with ``reference``'s shape, dtype and device, drawn
    by :func:`smoothed_normal` (for any DP-SGD code path that is not :func:`make_private`)."""
    import torch

    s = v.non_negative("std", std)
    flat = smoothed_normal(int(reference.numel()), rng=rng) * s
    return torch.from_numpy(flat).view(reference.shape).to(reference.device, reference.dtype)


def noise_source(*, seeded: bool) -> dict[str, Any]:
    """The ledger description of how DP-SGD randomness is drawn."""
    return {
        "generator": "AES-256-CTR (cryptography) keyed by os.urandom(32)"
        if not seeded
        else "AES-256-CTR keyed by a caller-given key (TESTS ONLY)",
        "seeded": seeded,
        "method": "float64 Box-Muller from 53-bit uniforms; each coordinate = sum of "
        f"{SMOOTHING} N(0,1) / {math.sqrt(SMOOTHING):g} (Holohan-Braghin smoothing), "
        "scaled by noise_multiplier*max_grad_norm, cast to the gradient dtype",
        "sampling": "Poisson, exact Bernoulli(1/batches) per example per step",
    }


class CryptoPoissonBatches:
    """Batch sampler: ``batches`` steps, each example joins each step w.p. exactly 1/batches.

    Used as a ``DataLoader`` ``batch_sampler``; its length is the number of steps per epoch,
    so Opacus derives the same sample rate q = 1/batches from it.
    """

    def __init__(self, num_samples: int, batches: int, rng: CryptoRandom) -> None:
        self.num_samples = v.count("num_samples", num_samples, minimum=1)
        self.batches = v.count("batches", batches, minimum=1)
        self.rng = rng

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches):
            mask = self.rng.bernoulli(1, self.batches, self.num_samples)
            yield np.flatnonzero(mask).tolist()


@functools.cache
def _crypto_optimizer_class() -> type:
    """A ``DPOptimizer`` whose ``add_noise`` draws from :class:`CryptoRandom` (built lazily so
    importing this module does not import opacus)."""
    import torch
    from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed

    class CryptoNoiseDPOptimizer(DPOptimizer):  # type: ignore[misc]
        """Opacus's flat-clipping optimizer with noise from the AES-CTR source (one keystream
        draw for all parameters per step)."""

        def __init__(self, optimizer: Any, *, rng: CryptoRandom, **kwargs: Any) -> None:
            super().__init__(optimizer, generator=None, secure_mode=False, **kwargs)
            self.crypto_rng = rng

        def add_noise(self) -> None:
            params = list(self.params)
            for p in params:
                _check_processed_flag(p.summed_grad)
            std = float(self.noise_multiplier) * float(self.max_grad_norm)
            sizes = [int(p.summed_grad.numel()) for p in params]
            flat = smoothed_normal(sum(sizes), rng=self.crypto_rng) * std
            offset = 0
            for p, size in zip(params, sizes, strict=True):
                ref = p.summed_grad
                chunk = torch.from_numpy(flat[offset : offset + size]).view(ref.shape)
                noise = chunk.to(device=ref.device, dtype=ref.dtype)
                p.grad = (ref + noise).view_as(p)
                _mark_as_processed(ref)
                offset += size

    return CryptoNoiseDPOptimizer


@functools.cache
def _crypto_engine_class() -> type:
    from opacus import PrivacyEngine
    from opacus.optimizers.optimizer import DPOptimizer

    class CryptoPrivacyEngine(PrivacyEngine):  # type: ignore[misc]
        """Opacus engine that builds :func:`_crypto_optimizer_class` optimizers only."""

        def __init__(self, rng: CryptoRandom) -> None:
            # Opacus's secure_mode would draw from its own CSPRNG; the noise here comes from
            # the AES-CTR source instead (CryptoNoiseDPOptimizer), so its "Secure RNG turned
            # off" warning is false for this engine and only misleads whoever reads the logs.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
                super().__init__(accountant="rdp", secure_mode=False)
            self.noise_rng = rng

        def _prepare_optimizer(
            self,
            *,
            optimizer: Any,
            noise_multiplier: float,
            max_grad_norm: float,
            expected_batch_size: int,
            loss_reduction: str = "mean",
            distributed: bool = False,
            clipping: str = "flat",
            noise_generator: Any = None,
            grad_sample_mode: str = "hooks",
            **kwargs: Any,
        ) -> Any:
            if distributed or clipping != "flat" or "ghost" in grad_sample_mode:
                raise InvalidParameterError(
                    "only flat clipping on one process is supported", parameter="clipping"
                )
            if isinstance(optimizer, DPOptimizer):
                optimizer = optimizer.original_optimizer
            return _crypto_optimizer_class()(
                optimizer,
                rng=self.noise_rng,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                expected_batch_size=expected_batch_size,
                loss_reduction=loss_reduction,
                **kwargs,
            )

    return CryptoPrivacyEngine


@dataclass
class LocalDpSession:
    """Opacus-wrapped training objects of one client plus their accounting."""

    module: Any
    optimizer: Any
    data_loader: Any
    engine: Any
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    noise_source: dict[str, Any]

    @property
    def steps(self) -> int:
        """Noisy optimizer steps taken so far (from Opacus's accountant history)."""
        return sum(int(s) for _, _, s in self.engine.accountant.history)

    def event(self) -> DpEvent:
        """Example-level event of the steps actually taken (add/remove adjacency)."""
        parts: list[DpEvent] = [
            SelfComposedEvent(PoissonSampledEvent(float(q), GaussianEvent(float(z))), int(s))
            for z, q, s in self.engine.accountant.history
        ]
        if not parts:
            return NoOpEvent()
        return parts[0] if len(parts) == 1 else ComposedEvent(tuple(parts))

    def noise_only_step(self) -> None:
        """The step for an empty Poisson batch: zero clipped gradients, then the noisy step.

        A loop must not skip it: skipping releases whether the batch was empty, which depends
        on who is in the data, and takes fewer steps than the accounted event."""
        import torch

        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        for p in opt.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        opt.step()

    def epsilon(self, delta: float, accountant: str = "pld") -> float:
        """ε of this client's example-level guarantee so far."""
        from securefl.dp.accounting import get_accountant

        return get_accountant(accountant).epsilon(self.event(), delta)

    def params(self) -> dict[str, Any]:
        return {
            "mechanism": "dp_sgd_opacus",
            "privacy_unit": "example",
            "neighboring": "add_remove",
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "sampling": "poisson",
            "steps": self.steps,
            "noise_source": dict(self.noise_source),
        }


def make_private(
    module: Any,
    optimizer: Any,
    data_loader: Any,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    rng: CryptoRandom | None = None,
) -> LocalDpSession:
    """Opacus DP-SGD with cryptographic Poisson sampling and cryptographic Gaussian noise.

    ``data_loader`` supplies the dataset, collate function and batch size (q = 1/len); its own
    sampler/shuffle is not used. ``rng`` is for tests only (a keyed, reproducible stream,
    recorded as ``seeded: true``); by default a fresh ``os.urandom`` key is drawn, which no
    configuration value determines.
    """
    from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
    from torch.utils.data import DataLoader, IterableDataset
    from torch.utils.data._utils.collate import default_collate

    z = v.positive("noise_multiplier", noise_multiplier)
    c = v.positive("max_grad_norm", max_grad_norm)
    try:
        n_batches = len(data_loader)
        dataset = data_loader.dataset
    except (TypeError, AttributeError) as exc:
        raise InvalidParameterError(
            "must be a DataLoader with a length", parameter="data_loader"
        ) from exc
    if isinstance(dataset, IterableDataset):
        raise InvalidParameterError(
            "Poisson sampling needs a map-style dataset", parameter="data_loader"
        )
    if n_batches < 1 or len(dataset) < 1:
        raise InvalidParameterError("is empty", parameter="data_loader")
    seeded = rng is not None
    source = rng if rng is not None else CryptoRandom()
    first = dataset[0]
    loader = DataLoader(
        dataset,
        batch_sampler=CryptoPoissonBatches(len(dataset), n_batches, source),
        collate_fn=wrap_collate_with_empty(
            collate_fn=data_loader.collate_fn or default_collate,
            sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
            dtypes=[dtype_safe(x) for x in first],
        ),
        num_workers=data_loader.num_workers,
        pin_memory=data_loader.pin_memory,
    )
    engine = _crypto_engine_class()(source)
    module, optimizer, loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=z,
        max_grad_norm=c,
        poisson_sampling=False,  # the loader above already samples (cryptographically)
    )
    module.forbid_grad_accumulation()  # what Opacus does for its own Poisson loader
    return LocalDpSession(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        engine=engine,
        noise_multiplier=z,
        max_grad_norm=c,
        sample_rate=1.0 / len(loader),
        noise_source=noise_source(seeded=seeded),
    )
