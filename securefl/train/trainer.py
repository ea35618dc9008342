"""A :class:`~securefl.api.federation.Trainer` that trains a whole cohort in one batched pass.

``Federation.run`` calls ``train(state, data, ctx)`` once per client today; this trainer also
offers ``train_cohort(state, datas, ctxs)`` (and the streaming ``iter_cohort``) so a round can
hand it every cohort client at once (the hook the orchestrator needs is described in
protocols/fl.md, "Batched client training"). Updates are named tensors ``local − global`` in
the model's layout; clipping and everything after stays in ``Round.submit``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from securefl.fl.client import TrainSpec
from securefl.fl.data import TextDataset
from securefl.fl.model import AdapterModel
from securefl.train.batched import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    BatchedClientTrainer,
    ClientData,
)
from securefl.train.errors import CohortError
from securefl.train.frozen import FeatureCache


class BatchedTrainer:
    """Local AdamW on an :class:`AdapterModel`'s LoRA adapters, a cohort at a time.

    ``test`` (optional) is the held-out set ``evaluate(state)`` scores. The data order of
    client c in round r is ``derive_seed(ctx.seed, r, c)`` — the one ``securefl simulate``'s
    per-client loop uses — so both give the same updates (dropout off; see
    :mod:`securefl.train.batched`).
    """

    def __init__(
        self,
        model: AdapterModel,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        test: TextDataset | None = None,
        feature_cache: bool = True,
    ) -> None:
        self.model = model
        self.test = test
        self._engine = BatchedClientTrainer(
            model,
            TrainSpec(epochs, batch_size, lr),
            chunk_size=chunk_size,
            token_budget=token_budget,
            # the frozen-prefix cache when the adapter leaves one (securefl.train.frozen)
            feature_cache=FeatureCache.for_model(model) if feature_cache else None,
        )

    def initial_state(self) -> dict[str, Any]:
        """The model's current adapter state as named tensors (the Federation's layout)."""
        return dict(self.model.layout.unflatten(self.model.get_flat()))

    def iter_cohort(
        self, state: Mapping[str, Any], datas: Sequence[ClientData], ctxs: Sequence[Any]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(client, update)`` chunk by chunk, in ``ctxs`` order."""
        if len(datas) != len(ctxs):
            raise CohortError(f"{len(datas)} datasets for {len(ctxs)} contexts", parameter="ctxs")
        if not ctxs:
            raise CohortError("empty cohort", parameter="cohort")
        rounds = {(int(c.round_index), int(c.seed)) for c in ctxs}
        if len(rounds) != 1:
            raise CohortError("contexts of different rounds or seeds", parameter="ctxs")
        ((round_index, seed),) = rounds
        flat = self.model.layout.flatten(state)
        offsets = self.model.layout.offsets()
        for chunk in self._engine.train_chunks(
            flat,
            datas,
            client_ids=[int(c.client) for c in ctxs],
            round_index=round_index,
            seed=seed,
        ):
            for row, cid in enumerate(chunk.client_ids):
                delta = chunk.deltas[row]
                yield (
                    cid,
                    {spec.name: np.array(delta[a:b].reshape(spec.shape)) for spec, a, b in offsets},
                )

    def train_cohort(
        self, state: Mapping[str, Any], datas: Sequence[ClientData], ctxs: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Every cohort client's update, in ``ctxs`` order."""
        return [update for _, update in self.iter_cohort(state, datas, ctxs)]

    def train(self, state: Mapping[str, Any], data: ClientData, ctx: Any) -> dict[str, Any]:
        """One client (the plain :class:`Trainer` protocol): a cohort of one."""
        return self.train_cohort(state, [data], [ctx])[0]

    def evaluate(self, state: Mapping[str, Any]) -> dict[str, float]:
        """Held-out accuracy and loss of ``state`` (needs ``test``)."""
        from securefl.fl.client import evaluate

        if self.test is None:
            raise CohortError("no test set given to BatchedTrainer", parameter="test")
        self.model.set_flat(self.model.layout.flatten(state))
        accuracy, loss = evaluate(self.model, self.test)
        return {"accuracy": accuracy, "loss": loss}


__all__ = ["BatchedTrainer"]
