"""Sample-level DP-SGD inside one client's local training, through Opacus.

:func:`make_private` wraps a user's ordinary ``torch`` module, optimizer and data loader with
Opacus's ``PrivacyEngine.make_private`` (per-example clipping to ``max_grad_norm``, Gaussian
noise ``noise_multiplier·max_grad_norm`` per step, Poisson sampling of examples with rate
q = 1/len(data_loader) — Abadi et al. 2016). The event it reports is built from the steps
Opacus actually recorded (its accountant history), so the accounted sampling is the performed
one.

Privacy unit: ONE EXAMPLE of this client's data, add/remove adjacency. This guarantee is
per client and says nothing about a client's whole contribution; the client-level guarantee
comes from DP-FedAvg / DDGauss (``securefl.dp.fedavg`` / ``securefl.dp.distributed``). See
``protocols/dp.md`` §"Privacy units" for how the two compose.

Opacus draws its noise with ``torch.normal`` (floating point, not a CSPRNG) unless
``secure_mode=True`` with ``torchcsprng`` installed; we pass ``secure_mode`` through and record
it, and say so in the docs — the central and distributed mechanisms of this package do not
share that limitation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    secure_mode: bool

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
            "secure_mode": self.secure_mode,
        }


def make_private(
    module: Any,
    optimizer: Any,
    data_loader: Any,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    secure_mode: bool = False,
) -> LocalDpSession:
    """Opacus ``make_private`` with Poisson sampling (the sampling our event assumes)."""
    from opacus import PrivacyEngine

    z = v.positive("noise_multiplier", noise_multiplier)
    c = v.positive("max_grad_norm", max_grad_norm)
    try:
        n_batches = len(data_loader)
    except TypeError as exc:
        raise InvalidParameterError("must have a length", parameter="data_loader") from exc
    if n_batches < 1:
        raise InvalidParameterError("is empty", parameter="data_loader")
    engine = PrivacyEngine(accountant="rdp", secure_mode=secure_mode)
    module, optimizer, loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=data_loader,
        noise_multiplier=z,
        max_grad_norm=c,
        poisson_sampling=True,
    )
    return LocalDpSession(
        module=module,
        optimizer=optimizer,
        data_loader=loader,
        engine=engine,
        noise_multiplier=z,
        max_grad_norm=c,
        sample_rate=1.0 / len(loader),
        secure_mode=secure_mode,
    )
