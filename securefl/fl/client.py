"""The client step: (global adapter state, local data) → update message. No I/O, no clock.

A client loads the global LoRA state, runs a few epochs of local AdamW (or DP-SGD through
Opacus for example-level DP), and returns the *delta* ``local − global`` (FedAvg, McMahan et al.
2017, Alg. 1). With client-level DP the delta is clipped to L2 norm C on the client (DP-FedAvg,
McMahan et al. 2018, Alg. 1), so neither the server nor the aggregation sees an unclipped update.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from securefl.errors import ConfigurationError
from securefl.fl.data import TextDataset
from securefl.fl.model import AdapterModel
from securefl.tensors import FloatVector


@dataclass(frozen=True)
class ClientUpdate:
    """The message a client sends (before encoding/masking/encryption)."""

    client_id: int
    round_index: int
    layout_digest: bytes
    delta: FloatVector
    num_examples: int
    train_loss: float
    local_steps: int
    # Adaptive clipping (Andrew et al. 2021): 1 if the unclipped update's norm was ≤ the
    # round's clip, else 0; it travels only inside the noised secure sum (None: fixed clip).
    clip_indicator: int | None = None

    def validate(self, layout_digest: bytes, dimension: int) -> None:
        if self.layout_digest != layout_digest:
            raise ConfigurationError(
                "update layout differs from the global layout", parameter="delta"
            )
        if self.delta.shape != (dimension,) or not np.all(np.isfinite(self.delta)):
            raise ConfigurationError(
                f"update of client {self.client_id} has wrong shape or non-finite values",
                parameter="delta",
            )


@dataclass(frozen=True)
class TrainSpec:
    """Local optimisation settings (same for every client in a round)."""

    epochs: int
    batch_size: int
    lr: float
    clip: float | None = None  # client-level L2 clip of the delta (None: no clipping)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (data order/dropout only; never for keys, masks or noise)."""
    h = hashlib.sha256(b"securefl/fl/seed\x00" + b"|".join(str(p).encode() for p in parts))
    return int.from_bytes(h.digest()[:8], "big") >> 1


def clip_l2(flat: FloatVector, clip: float) -> tuple[FloatVector, float]:
    """Scale ``flat`` to L2 norm ≤ clip; returns (clipped, original norm)."""
    try:
        from securefl.dp.clipping import clip_l2 as dp_clip

        clipped, norm = dp_clip(flat, clip)
        return np.asarray(clipped, dtype=np.float64), float(norm)
    except ImportError:
        norm = float(np.linalg.norm(flat))
        scale = 1.0 if norm <= clip else clip / norm
        return flat * scale, norm


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def local_train(
    model: AdapterModel, data: TextDataset, spec: TrainSpec, *, seed: int
) -> tuple[float, int]:
    """Plain local AdamW on the LoRA parameters; returns (mean loss, steps)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = model.model
    net.train()
    opt = torch.optim.AdamW(model.trainable_parameters, lr=spec.lr, weight_decay=0.0)
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    losses: list[float] = []
    for _ in range(spec.epochs):
        for idx in _batches(len(data), spec.batch_size, rng):
            batch = model.encode(tuple(data.texts[i] for i in idx))
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out = net(**batch, labels=labels[idx].to(model.device))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
    return (float(np.mean(losses)) if losses else math.nan), len(losses)


def client_step(
    model: AdapterModel,
    global_flat: FloatVector,
    data: TextDataset,
    spec: TrainSpec,
    *,
    client_id: int,
    round_index: int,
    seed: int,
    trainer: Any | None = None,
) -> ClientUpdate:
    """Run one client's local training from the global state; return its (clipped) delta.

    ``trainer`` replaces :func:`local_train` (same signature) — the hook for DP-SGD.
    """
    if len(data) == 0:
        raise ConfigurationError(f"client {client_id} has no data", parameter="data")
    model.set_flat(global_flat)
    train = trainer if trainer is not None else local_train
    loss, steps = train(model, data, spec, seed=derive_seed(seed, round_index, client_id))
    delta = model.get_flat() - global_flat
    indicator: int | None = None
    if spec.clip is not None:
        delta, norm = clip_l2(delta, spec.clip)
        indicator = int(norm <= spec.clip)
    return ClientUpdate(
        client_id=client_id,
        round_index=round_index,
        layout_digest=model.layout.digest(),
        delta=delta,
        num_examples=len(data),
        train_loss=loss,
        local_steps=steps,
        clip_indicator=indicator,
    )


def evaluate(
    model: AdapterModel, data: TextDataset, *, batch_size: int = 64
) -> tuple[float, float]:
    """Held-out (accuracy, mean cross-entropy) of the model's current state."""
    import torch

    net = model.model
    net.eval()
    correct, total_loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            texts = data.texts[start : start + batch_size]
            y = torch.as_tensor(data.labels[start : start + batch_size], dtype=torch.long)
            batch = {k: v.to(model.device) for k, v in model.encode(texts).items()}
            logits = net(**batch).logits.float().cpu()
            total_loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
    return correct / len(data), total_loss / len(data)
