"""Many clients' local LoRA training in one batched pass (issue 13 §2).

The per-client loop (:func:`securefl.fl.client.client_step`) loads the global adapter into the
one model, builds an AdamW, and runs small forward/backward passes of one client's batch: the
cost is dominated by per-call overhead, not arithmetic. Here a *chunk* of clients trains
together, with no model copy:

- the frozen base network runs once per micro-batch on sequences of many clients; every peft
  LoRA layer adds the term ``s · x A_cᵀ B_cᵀ`` with ``(A_c, B_c)`` the adapter of the
  sequence's own client ``c``, gathered from adapters stacked along a client axis (a batched
  matmul, Hu et al. 2021 §4.1, one adapter per row);
- the loss is ``Σ_c mean_{i ∈ batch_c} CE_i``. Clients' adapters are disjoint, so the gradient
  of that sum with respect to client c's adapter *is* the gradient of client c's own mean batch
  loss — what :func:`securefl.fl.client.local_train` computes;
- AdamW is elementwise, so one vectorised AdamW over the stacked adapters is every client's
  own AdamW (torch's defaults, ``weight_decay=0`` as in ``local_train``). A client whose batches
  are used up is not stepped (clients are ordered by step count, the active ones a prefix).

Exactness claim: for the same data order (each client's seeded permutation per epoch,
``derive_seed(seed, round, client)``, as the loop draws it), the updates equal the loop's up to
float32 rounding (different summation order in larger matmuls; padding to the longest sequence
of a micro-batch instead of a client's batch, where masked keys contribute ``exp(−∞) = 0``).
Dropout (BERT's 0.1 when training) is drawn from one seeded stream per chunk, so with dropout
on the two paths draw *different, identically distributed* masks; with dropout off they agree
to float tolerance (tests/train).

With a :class:`~securefl.train.frozen.FeatureCache` (``feature_cache=``) the frozen prefix's
outputs come from the cache and each micro-batch runs only the part above the cut (for the
head adapter: the classifier alone); same exactness claim, the prefix in eval mode
(protocols/fl.md §7.1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.fl.client import ClientUpdate, TrainSpec, clip_l2, derive_seed
from securefl.fl.data import TextDataset
from securefl.fl.model import AdapterModel
from securefl.tensors import FloatVector
from securefl.train.errors import CohortError, TrainingDivergedError, UnsupportedModelError
from securefl.train.frozen import FeatureCache, tokenize_texts

#: torch.optim.AdamW defaults (``local_train`` uses them with ``weight_decay=0``).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: Default tokens (sequences × padded length) per forward pass: bounds activation memory.
DEFAULT_TOKEN_BUDGET = 8192
#: Default clients trained together: bounds the stacked adapter/AdamW state (4 copies each).
DEFAULT_CHUNK_SIZE = 64

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TokenizedClient:
    """One client's examples, tokenised once: unpadded ids truncated to the model's length."""

    input_ids: tuple[IntArray, ...]
    token_type_ids: tuple[IntArray, ...] | None
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise CohortError("input_ids and labels differ in length", parameter="input_ids")
        if self.token_type_ids is not None and [len(t) for t in self.token_type_ids] != [
            len(t) for t in self.input_ids
        ]:
            raise CohortError("token_type_ids differ in shape from input_ids", parameter="data")
        if any(len(t) == 0 for t in self.input_ids):
            raise CohortError("empty token sequence", parameter="input_ids")

    def __len__(self) -> int:
        return len(self.labels)


ClientData = TextDataset | TokenizedClient


def tokenize_client(model: AdapterModel, data: TextDataset) -> TokenizedClient:
    """Tokenise a client's texts once (same ids as ``model.encode`` gives, without padding)."""
    return tokenize_clients(model, [data])[0]


def tokenize_clients(model: AdapterModel, datas: Sequence[TextDataset]) -> list[TokenizedClient]:
    """Tokenise many clients in one tokenizer call (per-call overhead paid once)."""
    ids, types = tokenize_texts(model, [t for d in datas for t in d.texts])
    out, start = [], 0
    for d in datas:
        stop = start + len(d)
        out.append(
            TokenizedClient(
                tuple(ids[start:stop]),
                None if types is None else tuple(types[start:stop]),
                tuple(int(y) for y in d.labels),
            )
        )
        start = stop
    return out


@dataclass(frozen=True)
class UpdateChunk:
    """The updates of one chunk of clients, rows in ``client_ids`` order (layout order)."""

    client_ids: tuple[int, ...]
    deltas: FloatVector  # (clients, layout.size), local − global, clipped if spec.clip
    num_examples: tuple[int, ...]
    train_loss: tuple[float, ...]
    local_steps: tuple[int, ...]
    # 1 if the unclipped update's norm was ≤ spec.clip, else 0 (adaptive clipping, as
    # client_step reports it); None without a clip
    clip_indicator: tuple[int, ...] | None = None

    def client_updates(self, round_index: int, layout_digest: bytes) -> Iterator[ClientUpdate]:
        """The chunk as :class:`ClientUpdate` messages (what ``client_step`` returns)."""
        for row, cid in enumerate(self.client_ids):
            yield ClientUpdate(
                client_id=cid,
                round_index=round_index,
                layout_digest=layout_digest,
                delta=self.deltas[row],
                num_examples=self.num_examples[row],
                train_loss=self.train_loss[row],
                local_steps=self.local_steps[row],
                clip_indicator=None if self.clip_indicator is None else self.clip_indicator[row],
            )


@dataclass(frozen=True)
class _LoraSlot:
    """One peft LoRA linear layer and the layout names of its A and B matrices."""

    module: Any
    a_name: str
    b_name: str
    scaling: float
    dropout: Any


def _lora_slots(model: AdapterModel) -> tuple[_LoraSlot, ...]:
    """Every LoRA layer of ``model``; refuses variants the batched path would not reproduce."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    slots: list[_LoraSlot] = []
    for name, module in model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        adapters = list(module.active_adapters)
        if not isinstance(module, LoraLinear) or len(adapters) != 1:
            raise UnsupportedModelError(
                f"{name}: only linear LoRA layers with one active adapter are supported",
                parameter="model",
            )
        (ad,) = adapters
        if ad in getattr(module, "lora_variant", {}) or getattr(module, "fan_in_fan_out", False):
            raise UnsupportedModelError(
                f"{name}: LoRA variants (DoRA, …) and fan_in_fan_out are not supported",
                parameter="model",
            )
        if module.lora_A[ad].bias is not None or module.lora_B[ad].bias is not None:
            raise UnsupportedModelError(f"{name}: LoRA bias is not supported", parameter="model")
        slots.append(
            _LoraSlot(
                module,
                f"{name}.lora_A.{ad}.weight",
                f"{name}.lora_B.{ad}.weight",
                float(module.scaling[ad]),
                module.lora_dropout[ad],
            )
        )
    covered = {s.a_name for s in slots} | {s.b_name for s in slots}
    if covered != set(model.layout.names):
        raise UnsupportedModelError(
            "trainable parameters are not exactly the LoRA layers' A and B matrices",
            parameter="model",
        )
    return tuple(slots)


def _check_spec(spec: TrainSpec) -> None:
    if isinstance(spec.epochs, bool) or not isinstance(spec.epochs, int) or spec.epochs < 1:
        raise ConfigurationError(f"must be an int ≥ 1, got {spec.epochs!r}", parameter="epochs")
    if (
        isinstance(spec.batch_size, bool)
        or not isinstance(spec.batch_size, int)
        or spec.batch_size < 1
    ):
        raise ConfigurationError(
            f"must be an int ≥ 1, got {spec.batch_size!r}", parameter="batch_size"
        )
    if not math.isfinite(spec.lr) or spec.lr <= 0:
        raise ConfigurationError(f"must be a finite number > 0, got {spec.lr!r}", parameter="lr")


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"must be an int ≥ 1, got {value!r}", parameter=name)
    return value


def client_batches(n: int, spec: TrainSpec, seed: int) -> list[IntArray]:
    """A client's batches over all local epochs, in the order ``local_train`` draws them
    (one ``default_rng(seed)`` permutation per epoch, cut into ``batch_size`` pieces)."""
    rng = np.random.default_rng(seed)
    out: list[IntArray] = []
    for _ in range(spec.epochs):
        order = rng.permutation(n)
        out.extend(order[i : i + spec.batch_size] for i in range(0, n, spec.batch_size))
    return out


class BatchedClientTrainer:
    """Local AdamW training of a cohort's LoRA adapters, many clients per forward pass.

    ``chunk_size`` clients train together (their stacked adapters and AdamW moments are the
    memory this holds: 4 × chunk_size × layout.size floats); ``token_budget`` bounds the padded
    tokens of one forward pass (a cached pooled feature counts as one token).
    ``feature_cache`` (of this model; None: uncached) skips the frozen prefix. Results
    stream out one chunk at a time (:meth:`train_chunks`), so an aggregator never holds the
    whole cohort's updates.

    The model is shared, not copied: while a chunk trains, its LoRA layers are switched off
    and forward hooks add the per-client terms (removed afterwards, even on error), so one
    model serves one training call at a time (not re-entrant, not thread-safe).
    """

    def __init__(
        self,
        model: AdapterModel,
        spec: TrainSpec,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        _check_spec(spec)
        if feature_cache is not None and feature_cache.prefix.model is not model:
            raise ConfigurationError(
                "the feature cache belongs to another model", parameter="feature_cache"
            )
        self.feature_cache = feature_cache
        self.model = model
        self.spec = spec
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.token_budget = _positive_int("token_budget", token_budget)
        self._slots = _lora_slots(model)
        config = model.model.config
        self._num_labels = int(config.num_labels)
        if self._num_labels < 2 or getattr(config, "problem_type", None) not in (
            None,
            "single_label_classification",
        ):
            raise UnsupportedModelError(
                "only single-label classification (cross-entropy) is supported",
                parameter="model",
            )

    # --- public --------------------------------------------------------------------------
    def train_chunks(
        self,
        global_flat: FloatVector,
        cohort: Sequence[ClientData],
        *,
        client_ids: Sequence[int],
        round_index: int,
        seed: int,
    ) -> Iterator[UpdateChunk]:
        """Yield the cohort's updates chunk by chunk (client ``client_ids[i]`` owns
        ``cohort[i]``); client c's data order comes from ``derive_seed(seed, round, c)``."""
        flat = self._check_global(global_flat)
        ids = self._check_cohort(cohort, client_ids)
        for cid, data in zip(ids, cohort, strict=True):
            self._check_client(cid, data)
        for start in range(0, len(ids), self.chunk_size):
            stop = start + self.chunk_size
            chunk = self._tokenized(cohort[start:stop])
            yield self._train_chunk(flat, chunk, ids[start:stop], round_index, seed)

    def _tokenized(self, datas: Sequence[ClientData]) -> list[TokenizedClient]:
        texts = [d for d in datas if isinstance(d, TextDataset)]
        done = iter(tokenize_clients(self.model, texts))
        return [d if isinstance(d, TokenizedClient) else next(done) for d in datas]

    def client_updates(
        self,
        global_flat: FloatVector,
        cohort: Sequence[ClientData],
        *,
        client_ids: Sequence[int],
        round_index: int,
        seed: int,
    ) -> Iterator[ClientUpdate]:
        """:meth:`train_chunks` as a stream of :class:`ClientUpdate` (``client_step``'s type)."""
        digest = self.model.layout.digest()
        for chunk in self.train_chunks(
            global_flat, cohort, client_ids=client_ids, round_index=round_index, seed=seed
        ):
            yield from chunk.client_updates(round_index, digest)

    # --- validation ----------------------------------------------------------------------
    def _check_global(self, global_flat: FloatVector) -> FloatVector:
        flat = np.asarray(global_flat, dtype=np.float64)
        size = self.model.layout.size
        if flat.shape != (size,):
            raise CohortError(
                f"global state has shape {flat.shape}, the layout needs ({size},)",
                parameter="global_flat",
            )
        if not np.all(np.isfinite(flat)):
            raise CohortError("global state contains NaN or Inf", parameter="global_flat")
        return flat

    @staticmethod
    def _check_cohort(cohort: Sequence[ClientData], client_ids: Sequence[int]) -> list[int]:
        if len(cohort) == 0:
            raise CohortError("empty cohort", parameter="cohort")
        ids = [int(c) for c in client_ids]
        if len(ids) != len(cohort):
            raise CohortError(
                f"{len(ids)} client ids for {len(cohort)} datasets", parameter="client_ids"
            )
        if len(set(ids)) != len(ids):
            raise CohortError("duplicate client ids", parameter="client_ids")
        return ids

    def _check_client(self, cid: int, data: ClientData) -> None:
        if not isinstance(data, TextDataset | TokenizedClient):
            raise CohortError(
                f"client {cid}: expected TextDataset or TokenizedClient, got {type(data).__name__}",
                parameter="data",
            )
        if len(data) == 0:
            raise CohortError(f"client {cid} has no data", parameter="data")
        if any(not 0 <= y < self._num_labels for y in data.labels):
            raise CohortError(
                f"client {cid} has labels outside [0, {self._num_labels})", parameter="labels"
            )
        if isinstance(data, TokenizedClient) and any(
            len(t) > self.model.max_length for t in data.input_ids
        ):
            raise CohortError(
                f"client {cid} has sequences longer than max_length {self.model.max_length}",
                parameter="input_ids",
            )

    # --- the batched pass ----------------------------------------------------------------
    def _train_chunk(
        self,
        global_flat: FloatVector,
        datas: Sequence[TokenizedClient],
        ids: Sequence[int],
        round_index: int,
        seed: int,
    ) -> UpdateChunk:
        import torch

        spec = self.spec
        batches = [
            client_batches(len(d), spec, derive_seed(seed, round_index, cid))
            for d, cid in zip(datas, ids, strict=True)
        ]
        # clients with the most steps first: at step t the active clients are a prefix
        order = sorted(range(len(ids)), key=lambda i: -len(batches[i]))
        datas = [datas[i] for i in order]
        batches = [batches[i] for i in order]
        n_steps = [len(b) for b in batches]
        cache = self.feature_cache
        feats = (
            None
            if cache is None
            else [cache.features(d.input_ids, d.token_type_ids) for d in datas]
        )
        net = self.model.model
        device = self.model.device
        stacked = self._stack(global_flat, len(ids))
        exp_avg = {k: torch.zeros_like(p) for k, p in stacked.items()}
        exp_avg_sq = {k: torch.zeros_like(p) for k, p in stacked.items()}
        step_losses: list[list[float]] = [[] for _ in ids]
        was_training = net.training
        route: dict[str, Any] = {}
        hooks = [
            slot.module.register_forward_hook(self._hook(slot, stacked, route))
            for slot in self._slots
        ]
        try:
            # dropout draws from a seeded stream that is restored afterwards (CPU and, on a
            # GPU, that device's generator): the caller's torch RNG state is left as it was
            rng_devices = [torch.device(device)] if device.startswith("cuda") else []
            with torch.random.fork_rng(devices=rng_devices), net.disable_adapter():
                torch.manual_seed(derive_seed(seed, round_index, *ids))
                net.train()
                for t in range(n_steps[0]):
                    active = sum(1 for n in n_steps if n > t)
                    losses = torch.zeros(active, dtype=torch.float64, device=device)
                    for mb in self._micro_batches(datas, batches, t, active, feats):
                        route["seg"] = mb["seg"]
                        if cache is None:
                            logits = net(**mb["inputs"]).logits
                        else:
                            logits = cache.prefix.top(*mb["inputs"])
                        ce = torch.nn.functional.cross_entropy(
                            logits.float(), mb["labels"], reduction="none"
                        )
                        weighted = ce * mb["weight"]
                        weighted.sum().backward()
                        losses.index_add_(0, mb["seg"], weighted.detach().double())
                    self._adam_step(stacked, exp_avg, exp_avg_sq, active, t + 1)
                    for i, loss in enumerate(losses.tolist()):
                        step_losses[i].append(loss)
        finally:
            for h in hooks:
                h.remove()
            route.clear()
            net.train(was_training)
        deltas = self._deltas(stacked, global_flat)
        unsort = np.argsort(order)
        deltas = deltas[unsort]
        if not np.all(np.isfinite(deltas)):
            bad = [ids[i] for i in range(len(ids)) if not np.all(np.isfinite(deltas[i]))]
            raise TrainingDivergedError(f"non-finite update for clients {bad}")
        indicator: tuple[int, ...] | None = None
        if spec.clip is not None:
            clipped = [clip_l2(row, spec.clip) for row in deltas]
            deltas = np.stack([c for c, _ in clipped])
            indicator = tuple(int(norm <= spec.clip) for _, norm in clipped)
        return UpdateChunk(
            client_ids=tuple(ids),
            deltas=deltas,
            num_examples=tuple(len(datas[j]) for j in unsort),
            train_loss=tuple(float(np.mean(step_losses[j])) for j in unsort),
            local_steps=tuple(n_steps[j] for j in unsort),
            clip_indicator=indicator,
        )

    def _stack(self, global_flat: FloatVector, clients: int) -> dict[str, Any]:
        """The global adapter repeated along a new client axis (float32 leaves, like the
        model's own parameters: the loop's ``set_flat`` rounds to float32 the same way)."""
        import torch

        out: dict[str, Any] = {}
        for spec, start, stop in self.model.layout.offsets():
            value = torch.as_tensor(global_flat[start:stop].reshape(spec.shape)).float()
            rep = value.unsqueeze(0).repeat(clients, *([1] * len(spec.shape)))
            out[spec.name] = rep.to(self.model.device).requires_grad_(True)
        return out

    def _deltas(self, stacked: dict[str, Any], global_flat: FloatVector) -> FloatVector:
        parts = [
            stacked[spec.name].detach().cpu().double().reshape(-1, spec.size).numpy()
            for spec, _, _ in self.model.layout.offsets()
        ]
        local = np.concatenate(parts, axis=1)
        return np.asarray(local - global_flat[None, :], dtype=np.float64)

    @staticmethod
    def _hook(slot: _LoraSlot, stacked: dict[str, Any], route: dict[str, Any]) -> Any:
        """Forward hook: add each sequence's own client adapter term to the frozen output."""
        import torch

        def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            seg = route["seg"]
            x = slot.dropout(args[0])
            n = x.shape[0]
            a = stacked[slot.a_name].index_select(0, seg)  # (n, r, in)
            b = stacked[slot.b_name].index_select(0, seg)  # (n, out, r)
            h = torch.bmm(x.reshape(n, -1, x.shape[-1]), a.transpose(1, 2))
            delta = torch.bmm(h, b.transpose(1, 2)) * slot.scaling
            return output + delta.reshape(output.shape)

        return hook

    def _micro_batches(
        self,
        datas: Sequence[TokenizedClient],
        batches: Sequence[Sequence[IntArray]],
        t: int,
        active: int,
        feats: Sequence[Sequence[Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Step t's sequences of the active clients, sorted by length and cut into forward
        passes of at most ``token_budget`` padded tokens (less padding, bounded memory).

        With ``feats`` (cached prefix outputs, per client and example) ``inputs`` is the
        ``(features, mask)`` pair :meth:`FrozenPrefix.top` takes; a pooled feature counts
        as one token."""
        import torch

        per_token = feats is None or (
            self.feature_cache is not None and self.feature_cache.prefix.sequence
        )
        rows: list[tuple[int, int, int]] = []  # (length, client position, example index)
        for c in range(active):
            for i in batches[c][t]:
                n = len(datas[c].input_ids[int(i)]) if per_token else 1
                rows.append((n, c, int(i)))
        rows.sort()
        sizes = [len(batches[c][t]) for c in range(active)]
        tok = self.model.tokenizer
        pad_id = int(tok.pad_token_id or 0)
        pad_type = int(getattr(tok, "pad_token_type_id", 0) or 0)
        device = self.model.device
        start = 0
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and (stop + 1 - start) * rows[stop][0] <= self.token_budget:
                stop += 1
            group = rows[start:stop]
            seg = [c for _, c, _ in group]
            labels = torch.as_tensor(
                [datas[c].labels[i] for _, c, i in group], dtype=torch.long, device=device
            )
            weight = torch.as_tensor(
                [1.0 / sizes[c] for c in seg], dtype=torch.float32, device=device
            )
            seg_t = torch.as_tensor(seg, dtype=torch.long, device=device)
            if feats is not None and self.feature_cache is not None:
                stacked = self.feature_cache.stack([feats[c][i] for _, c, i in group])
                yield {"inputs": stacked, "seg": seg_t, "labels": labels, "weight": weight}
                start = stop
                continue
            length = group[-1][0]
            ids = np.full((len(group), length), pad_id, dtype=np.int64)
            mask = np.zeros((len(group), length), dtype=np.int64)
            types = np.full((len(group), length), pad_type, dtype=np.int64)
            for j, (n, c, i) in enumerate(group):
                ids[j, :n] = datas[c].input_ids[i]
                mask[j, :n] = 1
                tt = datas[c].token_type_ids
                if tt is not None:
                    types[j, :n] = tt[i]
            inputs = {
                "input_ids": torch.as_tensor(ids, device=device),
                "attention_mask": torch.as_tensor(mask, device=device),
            }
            if datas[0].token_type_ids is not None:
                inputs["token_type_ids"] = torch.as_tensor(types, device=device)
            yield {"inputs": inputs, "seg": seg_t, "labels": labels, "weight": weight}
            start = stop

    def _adam_step(
        self,
        stacked: dict[str, Any],
        exp_avg: dict[str, Any],
        exp_avg_sq: dict[str, Any],
        active: int,
        step: int,
    ) -> None:
        """torch's single-tensor AdamW update (``weight_decay=0``) on the first ``active``
        clients, all at the same step count ``step`` (torch.optim.adam._single_tensor_adam)."""
        import torch

        beta1, beta2 = ADAM_BETAS
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = self.spec.lr / bias_correction1
        with torch.no_grad():
            for name, param in stacked.items():
                grad = param.grad
                param.grad = None
                if grad is None:  # a layer no active sequence reached: gradient zero
                    grad = torch.zeros_like(param)
                g = grad[:active]
                m = exp_avg[name][:active]
                v = exp_avg_sq[name][:active]
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
                param[:active].addcdiv_(m, denom, value=-step_size)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TOKEN_BUDGET",
    "BatchedClientTrainer",
    "ClientData",
    "TokenizedClient",
    "UpdateChunk",
    "client_batches",
    "tokenize_client",
    "tokenize_clients",
]
