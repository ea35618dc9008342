"""Local (example-level) DP-SGD inside each client's training, through Opacus.

Privacy unit: one training example, add/remove adjacency (Abadi et al. 2016). Each client runs
DP-SGD with Poisson sampling of its own examples at rate q_k = 1/⌈n_k/B⌉ for E·⌈n_k/B⌉ steps
per round (``securefl.dp.local.make_private``). The accountant is told, per round, the event
of the *worst* client (largest ε over the run's planned rounds) and — conservatively — that
every client takes part in every round: amplification by client sampling is not claimed. The
event each client actually performed (from Opacus's history) is checked against the declared
one.

The DP-SGD noise and the Poisson sample come from ``securefl.dp.local``'s AES-256-CTR source
keyed by ``os.urandom``, never from the run's seed: ``seed`` only fixes torch's generator for
non-private randomness (dropout, the tokenised data order before Poisson sampling). How the
noise was drawn is ``DpSgdTrainer.noise_source`` (dp.md §4.6), for the ledger.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from securefl.dp.events import DpEvent, GaussianEvent, PoissonSampledEvent, SelfComposedEvent
from securefl.dp.local import noise_source
from securefl.errors import ConfigurationError
from securefl.fl import privacy
from securefl.fl.client import TrainSpec
from securefl.fl.data import TextDataset
from securefl.fl.model import AdapterModel


def client_event(n_examples: int, spec_epochs: int, batch_size: int, z: float) -> DpEvent:
    """One round of DP-SGD on a client with n examples (Opacus Poisson sampling)."""
    batches = max(1, math.ceil(n_examples / batch_size))
    return SelfComposedEvent(
        PoissonSampledEvent(1.0 / batches, GaussianEvent(z)), spec_epochs * batches
    )


def attach_local_dp(backend: Any) -> None:
    cfg = backend.cfg
    # A client's event depends on its size only through its batch count ⌈n/B⌉: one
    # representative size per count (the accountant is the slow part of a small run).
    by_batches = {max(1, math.ceil(n / cfg.batch_size)): n for n in backend.client_sizes}
    sizes = sorted(by_batches.values())
    if not sizes:
        raise ConfigurationError("local DP needs the client dataset sizes", parameter="dp")
    chosen: dict[float, DpEvent] = {}  # z → worst event; the same every round
    acc = privacy.accountant_for(cfg)  # one accountant: its PLDs are reused across steps

    def per_client(z: float) -> dict[int, DpEvent]:
        return {n: client_event(n, cfg.local_epochs, cfg.batch_size, z) for n in sizes}

    def worst(z: float) -> DpEvent:
        # Worst over the whole run, not one round: the order of two clients' ε can flip under
        # composition (B = 16, z = 1, δ = 1e-5: 32 examples is worse than 16 after one round,
        # 16 is worse after 5), and a client chosen by one round under-states the others.
        if z not in chosen:
            events = per_client(z)
            run = cfg.rounds
            eps = {n: privacy.epsilon_of(cfg, [e] * run, accountant=acc) for n, e in events.items()}
            chosen[z] = events[max(eps, key=lambda n: eps[n])]
        return chosen[z]

    z = cfg.noise_multiplier
    if z is None:
        z = privacy.calibrate(cfg, worst, accountant=acc)
    backend.noise_multiplier = z
    backend.event_for = worst
    backend.trainer = DpSgdTrainer(
        z, cfg.clip, lambda n: client_event(n, cfg.local_epochs, cfg.batch_size, z)
    )


class DpSgdTrainer:
    """A ``local_train`` replacement running Opacus DP-SGD on the LoRA parameters.

    With a ``feature_cache`` (securefl.train.frozen) the examples are the cached outputs of
    the frozen prefix and Opacus wraps only the part above the cut: per-example gradients (and
    their clipping and noise) are those of the same LoRA parameters, without an encoder pass.
    ``rng`` (a factory of seeded ``CryptoRandom``) is for tests only: recorded as seeded.
    """

    def __init__(
        self, noise_multiplier: float, max_grad_norm: float, expected: Any, *, rng: Any = None
    ) -> None:
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected = expected
        self._rng = rng
        self.noise_source: dict[str, Any] = noise_source(seeded=rng is not None)  # ledger

    def __call__(
        self,
        model: AdapterModel,
        data: TextDataset,
        spec: TrainSpec,
        *,
        seed: int,
        feature_cache: Any | None = None,
    ) -> tuple[float, int]:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from securefl.dp.local import make_private

        torch.manual_seed(seed)  # non-private randomness only; DP noise is not seeded
        labels = torch.as_tensor(data.labels, dtype=torch.long)
        if feature_cache is None:
            enc = model.tokenizer(
                list(data.texts),
                padding="max_length",
                truncation=True,
                max_length=model.max_length,
                return_tensors="pt",
            )
            tensors: tuple[Any, ...] = (enc["input_ids"], enc["attention_mask"])
            net = model.model
        else:
            from securefl.train.frozen import tokenize_texts

            ids, types = tokenize_texts(model, data.texts)
            feats, mask = feature_cache.stack(feature_cache.features(ids, types), model.max_length)
            tensors = (feats,) if mask is None else (feats, mask)
            net = feature_cache.prefix.top_module
        dataset = TensorDataset(*tensors, labels)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=spec.batch_size, shuffle=True, generator=gen)
        model.model.train()
        opt = torch.optim.AdamW(model.trainable_parameters, lr=spec.lr, weight_decay=0.0)
        session = make_private(
            net,
            opt,
            loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            rng=None if self._rng is None else self._rng(),
        )
        losses: list[float] = []
        try:
            for _ in range(spec.epochs):
                for *xs, y in session.data_loader:
                    if xs[0].shape[0] == 0:
                        session.noise_only_step()
                        continue
                    xs = [x.to(model.device) for x in xs]
                    if feature_cache is None:
                        out = session.module(input_ids=xs[0], attention_mask=xs[1]).logits
                    else:
                        out = session.module(*xs)
                    loss = torch.nn.functional.cross_entropy(out, y.to(model.device))
                    session.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    session.optimizer.step()
                    losses.append(float(loss.detach()))
            performed = session.event()
        finally:
            session.module._close()
        declared = self.expected(len(data))
        if performed != declared:
            raise ConfigurationError(
                f"DP-SGD performed {performed.to_dict()} but declared {declared.to_dict()}",
                parameter="dp",
            )
        return (float(np.mean(losses)) if losses else math.nan), len(losses)
