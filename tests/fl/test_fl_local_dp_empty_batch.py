"""An empty Poisson batch in the loop's DP-SGD trainer is a noise-only step, not a skipped one.

Skipping it (the old behaviour) released whether the batch was empty — which depends on who is
in the data — took fewer steps than the accounted event, and made the run fail its own
declared-event check now and then in CI (one step short)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import securefl.dp.local as dp_local
from securefl.fl.client import TrainSpec
from securefl.fl.data import synthetic_topics
from securefl.fl.local_dp import DpSgdTrainer, client_event
from securefl.fl.model import AdapterModel

EPOCHS, BATCH, Z = 1, 4, 1.0


class _FirstBatchEmpty:
    """The session's loader with its first batch replaced by an empty one (same step count)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            yield tuple(t[:0] for t in batch) if i == 0 else batch


def test_empty_poisson_batch_is_a_noise_only_step(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dp_local.make_private
    sessions: list[Any] = []

    def with_empty_first_batch(*args: Any, **kwargs: Any) -> Any:
        session = dataclasses.replace(real(*args, **kwargs))
        session.data_loader = _FirstBatchEmpty(session.data_loader)
        sessions.append(session)
        return session

    monkeypatch.setattr(dp_local, "make_private", with_empty_first_batch)
    model = AdapterModel(
        "tiny",
        num_labels=4,
        lora_r=2,
        lora_alpha=4.0,
        lora_targets=("query", "value", "classifier"),
        max_length=16,
        seed=0,
        device="cpu",
    )
    data = synthetic_topics(16, seed=0)
    trainer = DpSgdTrainer(Z, 1.0, lambda n: client_event(n, EPOCHS, BATCH, Z))
    before = np.concatenate([p.detach().numpy().ravel() for p in model.trainable_parameters])
    trainer(model, data, TrainSpec(EPOCHS, BATCH, 1e-2), seed=0)  # old code: raises
    (session,) = sessions
    assert session.event() == client_event(len(data), EPOCHS, BATCH, Z)  # every step taken
    after = np.concatenate([p.detach().numpy().ravel() for p in model.trainable_parameters])
    assert not np.array_equal(before, after)
    assert all(torch.isfinite(p).all() for p in model.trainable_parameters)
