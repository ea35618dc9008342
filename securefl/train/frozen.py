"""Frozen-prefix feature cache: compute the frozen bottom of the network once per example.

Only LoRA matrices train (securefl.fl.model), and the encoder's own weights never change in a
run. When the adapter touches only the top of the network — ``lora_targets = ["classifier"]``
(the main job) or LoRA restricted to the last layers (peft ``layers_to_transform``) — the
output of the untouched bottom for an example is the same in every step, epoch and round. It
is computed once (:class:`FeatureCache`) and training runs only the part above
(:meth:`FrozenPrefix.top`): for a head-only adapter that is ``classifier(dropout(pooled))``,
no encoder pass at all, and DP-SGD's per-example gradients are those of the head alone.

**Deliberate difference.** The prefix runs in *eval mode* under ``torch.no_grad``: dropout
inside the frozen part is off (a cached value cannot redraw a mask each pass). Dropout above
the cut (e.g. the head's own dropout) still runs in train mode. With dropout off everywhere,
training through the cache gives the uncached path's updates to float tolerance
(tests/train/test_frozen.py); with dropout on, the two paths train slightly different models.
``feature_cache = false`` (RunConfig) keeps the uncached path.

**No wrong hit.** An entry is keyed by the SHA-256 of the example's token ids and token type
ids (the only inputs of the prefix besides the weights; the attention mask of an unpadded
example is all ones) and a hit also compares the stored ids. The frozen weights are
fingerprinted (SHA-256 of the prefix parameters) when the cache is built; every use checks
that no prefix parameter was replaced or modified in place (storage pointer and torch's
version counter), and on a change re-hashes: different weights drop every entry.

Supported: BERT-style sequence classifiers (``embeddings`` → ``encoder.layer[i]`` →
``pooler`` → ``dropout`` → ``classifier``; all-MiniLM-L6-v2 and the tiny test BERT).
:meth:`FrozenPrefix.of` returns None — train uncached — for other architectures and for
adapters that touch the embeddings or layer 0 (nothing worth caching).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.fl.model import AdapterModel

IntArray = npt.NDArray[np.int64]

#: Default byte limit of one cache (least recently used entries are evicted beyond it).
DEFAULT_MAX_BYTES = 1 << 30
#: Examples per prefix pass when filling the cache.
FILL_BATCH = 64
_DTYPES = ("float32", "float16", "bfloat16")
_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


class _Captured(Exception):
    """Raised by the capture hook to stop the prefix pass at the cut."""

    def __init__(self, value: Any) -> None:
        super().__init__("captured")
        self.value = value


def _hf_parts(model: AdapterModel) -> tuple[Any, Any] | None:
    """(the transformers classifier, its encoder) when the model is BERT-shaped, else None."""
    net = model.model
    hf = net.get_base_model() if hasattr(net, "get_base_model") else net
    prefix = getattr(hf, "base_model_prefix", "")
    enc = getattr(hf, prefix, None) if prefix else None
    config = getattr(hf, "config", None)
    if (
        enc is None
        or config is None
        or getattr(config, "is_decoder", False)
        or not all(hasattr(hf, a) for a in ("dropout", "classifier"))
        or not hasattr(enc, "embeddings")
        or getattr(enc, "pooler", None) is None
        or not hasattr(getattr(enc, "encoder", None), "layer")
    ):
        return None
    return hf, enc


def first_trained_layer(model: AdapterModel) -> int | None:
    """Index of the first network stage a LoRA adapter touches: ``i`` for encoder layer i,
    ``L`` (= number of layers) for the pooler, ``L + 1`` for the classifier head alone; None
    for an unsupported architecture or an adapter on anything else (e.g. the embeddings)."""
    from peft.tuners.lora.layer import LoraLayer

    parts = _hf_parts(model)
    if parts is None:
        return None
    hf, enc = parts
    n_layers = len(enc.encoder.layer)
    pooler = {id(m) for m in enc.pooler.modules()}
    head = {id(m) for m in hf.classifier.modules()}
    first = n_layers + 1
    found = False
    for name, module in hf.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        found = True
        match = _LAYER.search(name + ".")
        if match is not None:
            first = min(first, int(match.group(1)))
        elif id(module) in pooler:
            first = min(first, n_layers)
        elif id(module) not in head:
            return None
    return first if found else None


class FrozenPrefix:
    """Where the network is cut: the frozen prefix below, the trained top above.

    ``layer`` is :func:`first_trained_layer`. Cached feature per example: the hidden states
    entering encoder layer ``layer`` (``(tokens, hidden)``) when ``layer < L``; the [CLS]
    hidden state entering the pooler (``(1, hidden)``) when ``layer == L``; the pooled output
    the head reads (``(hidden,)``) when ``layer == L + 1``.
    """

    def __init__(self, model: AdapterModel, layer: int) -> None:
        parts = _hf_parts(model)
        if parts is None:
            raise ConfigurationError("not a BERT-style classifier", parameter="model")
        self.model = model
        self.hf, self.encoder = parts
        self.n_layers = len(self.encoder.encoder.layer)
        if not 1 <= layer <= self.n_layers + 1:
            raise ConfigurationError(
                f"cut at stage {layer} leaves no frozen prefix", parameter="layer"
            )
        self.layer = layer
        self.sequence = layer < self.n_layers  # per-token features (padded in a batch)
        if self.sequence:
            self._capture_at = self.encoder.encoder.layer[layer]
        elif layer == self.n_layers:
            self._capture_at = self.encoder.pooler
        else:
            self._capture_at = self.hf.classifier
        self.top_module = _make_top(self)

    @classmethod
    def of(cls, model: AdapterModel) -> FrozenPrefix | None:
        """The model's cut, or None when its adapter leaves no cacheable frozen prefix."""
        layer = first_trained_layer(model)
        if layer is None or layer < 1:
            return None
        return cls(model, layer)

    @property
    def kind(self) -> str:
        """``head`` | ``pooler`` | ``layer<i>`` (recorded with the run)."""
        if self.layer == self.n_layers + 1:
            return "head"
        return "pooler" if self.layer == self.n_layers else f"layer{self.layer}"

    def parameters(self) -> list[tuple[str, Any]]:
        """The frozen parameters the cached value depends on (name, tensor)."""
        enc = self.encoder
        mods: list[tuple[str, Any]] = [("embeddings", enc.embeddings)]
        n_below = min(self.layer, self.n_layers)
        mods += [(f"layer{i}", enc.encoder.layer[i]) for i in range(n_below)]
        if self.layer > self.n_layers:
            mods.append(("pooler", enc.pooler))
        return [(f"{m}.{n}", p) for m, mod in mods for n, p in mod.named_parameters()]

    def compute(self, inputs: dict[str, Any]) -> Any:
        """The prefix output of a padded batch (eval mode, no grad, stops at the cut)."""
        import torch

        def hook(module: Any, args: tuple[Any, ...]) -> None:
            raise _Captured(args[0])

        handle = self._capture_at.register_forward_pre_hook(hook)
        was_training = self.hf.training
        self.hf.eval()
        try:
            with torch.no_grad():
                self.hf(**inputs)
        except _Captured as cap:
            value = cap.value
        else:  # pragma: no cover - the hook always fires before the head returns
            raise ConfigurationError("the prefix pass did not reach the cut", parameter="model")
        finally:
            handle.remove()
            self.hf.train(was_training)
        if self.layer == self.n_layers:
            value = value[:, :1]
        return value

    def top(self, features: Any, attention_mask: Any | None = None) -> Any:
        """Logits of the trained part above the cut (the model's own modules, its mode)."""
        h = features
        if self.sequence:
            from transformers.masking_utils import create_bidirectional_mask

            mask = create_bidirectional_mask(
                config=self.encoder.config, inputs_embeds=h, attention_mask=attention_mask
            )
            for layer in self.encoder.encoder.layer[self.layer :]:
                h = layer(h, mask)
        if self.layer <= self.n_layers:
            h = self.encoder.pooler(h)
        return self.hf.classifier(self.hf.dropout(h))


def _top_class() -> type:
    import torch

    class Top(torch.nn.Module):  # type: ignore[misc]
        """The trained part as a module (Opacus wraps it for per-example gradients)."""

        def __init__(self, prefix: FrozenPrefix) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(
                list(prefix.encoder.encoder.layer[prefix.layer :]) if prefix.sequence else []
            )
            self.pooler = prefix.encoder.pooler if prefix.layer <= prefix.n_layers else None
            self.dropout = prefix.hf.dropout
            self.classifier = prefix.hf.classifier
            self._prefix = [prefix]  # a list: not registered as a submodule

        def forward(self, features: Any, attention_mask: Any | None = None) -> Any:
            return self._prefix[0].top(features, attention_mask)

    return Top


def _make_top(prefix: FrozenPrefix) -> Any:
    return _top_class()(prefix)


@dataclass
class CacheStats:
    """Counters of one cache (benchmarks and the run record read them)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    bytes: int = 0
    entries: int = 0


@dataclass(frozen=True)
class _Entry:
    ids: IntArray
    types: IntArray | None
    value: Any
    nbytes: int


class FeatureCache:
    """Per-example prefix outputs of one model, bounded by ``max_bytes`` (LRU eviction).

    Values are stored per example (no padding) in ``dtype`` (float32 by default; float16 or
    bfloat16 halve the memory at the cost of exact equality) on the model's device. Eviction
    only costs recomputation: an evicted example is computed again when next needed.
    """

    def __init__(
        self,
        prefix: FrozenPrefix,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        dtype: str = "float32",
        fill_batch: int = FILL_BATCH,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigurationError(
                f"must be an int ≥ 1, got {max_bytes!r}", parameter="max_bytes"
            )
        if dtype not in _DTYPES:
            raise ConfigurationError(f"must be one of {_DTYPES}, got {dtype!r}", parameter="dtype")
        if isinstance(fill_batch, bool) or not isinstance(fill_batch, int) or fill_batch < 1:
            raise ConfigurationError(
                f"must be an int ≥ 1, got {fill_batch!r}", parameter="fill_batch"
            )
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.dtype = dtype
        self.fill_batch = fill_batch
        self.stats = CacheStats()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._params = prefix.parameters()
        self._state = self._param_state()
        self.fingerprint = self._hash_params()

    @classmethod
    def for_model(cls, model: AdapterModel, **kwargs: Any) -> FeatureCache | None:
        """A cache for ``model``, or None when its adapter leaves no frozen prefix."""
        prefix = FrozenPrefix.of(model)
        return None if prefix is None else cls(prefix, **kwargs)

    # --- fingerprint -----------------------------------------------------------------------
    def _param_state(self) -> tuple[tuple[int, int, int, bool], ...]:
        return tuple(
            (id(p), p.data_ptr(), int(p._version), bool(p.requires_grad)) for _, p in self._params
        )

    def _hash_params(self) -> str:
        h = hashlib.sha256(f"securefl/train/frozen|{self.prefix.kind}".encode())
        for name, p in self._params:
            h.update(name.encode() + b"\x00" + str(tuple(p.shape)).encode())
            h.update(p.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy())
        return h.hexdigest()

    def check_weights(self) -> None:
        """Drop every entry if a frozen prefix parameter changed since the cache was built."""
        state = self._param_state()
        if state == self._state:
            return
        if any(trainable for *_, trainable in state):
            raise ConfigurationError(
                "a parameter below the cut became trainable; the cache would be stale",
                parameter="model",
            )
        self._state = state
        digest = self._hash_params()
        if digest != self.fingerprint:
            self.fingerprint = digest
            self.clear()
            self.stats.invalidations += 1

    def clear(self) -> None:
        self._entries.clear()
        self.stats.bytes = self.stats.entries = 0

    # --- lookup ----------------------------------------------------------------------------
    @staticmethod
    def _key(ids: IntArray, types: IntArray | None) -> bytes:
        h = hashlib.sha256(b"ids\x00" + np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        if types is not None:
            h.update(b"\x00types\x00" + np.ascontiguousarray(types, dtype=np.int64).tobytes())
        return h.digest()

    def features(
        self, input_ids: Sequence[IntArray], token_type_ids: Sequence[IntArray] | None = None
    ) -> list[Any]:
        """The prefix output of each example (unpadded ids), computing the missing ones."""
        self.check_weights()
        if token_type_ids is not None and len(token_type_ids) != len(input_ids):
            raise ConfigurationError("token_type_ids differ from input_ids", parameter="data")
        out: list[Any] = [None] * len(input_ids)
        missing: dict[bytes, list[int]] = {}
        keys: list[bytes] = []
        for i, ids in enumerate(input_ids):
            types = None if token_type_ids is None else token_type_ids[i]
            key = self._key(ids, types)
            keys.append(key)
            entry = self._entries.get(key)
            if (
                entry is not None
                and np.array_equal(entry.ids, ids)
                and (
                    (entry.types is None and types is None)
                    or (
                        entry.types is not None
                        and types is not None
                        and np.array_equal(entry.types, types)
                    )
                )
            ):
                self._entries.move_to_end(key)
                out[i] = entry.value
                self.stats.hits += 1
            else:
                missing.setdefault(key, []).append(i)
        if missing:
            first = [rows[0] for rows in missing.values()]
            types_of = None if token_type_ids is None else [token_type_ids[i] for i in first]
            values = self._fill([input_ids[i] for i in first], types_of)
            for rows, value in zip(missing.values(), values, strict=True):
                for i in rows:
                    out[i] = value
                self.stats.misses += len(rows)
            for i, value in zip(first, values, strict=True):
                types = None if token_type_ids is None else token_type_ids[i]
                self._store(keys[i], input_ids[i], types, value)
        return out

    def _store(self, key: bytes, ids: IntArray, types: IntArray | None, value: Any) -> None:
        nbytes = int(value.numel() * value.element_size()) + int(ids.nbytes)
        if types is not None:
            nbytes += int(types.nbytes)
        if nbytes > self.max_bytes:
            return
        ids_copy = np.array(ids, dtype=np.int64)
        types_copy = None if types is None else np.array(types, dtype=np.int64)
        self._entries[key] = _Entry(ids_copy, types_copy, value, nbytes)
        self.stats.bytes += nbytes
        while self.stats.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.stats.bytes -= old.nbytes
            self.stats.evictions += 1
        self.stats.entries = len(self._entries)

    def _fill(
        self, input_ids: Sequence[IntArray], token_type_ids: Sequence[IntArray] | None
    ) -> list[Any]:
        """Prefix outputs of examples, in batches of similar length (little padding)."""
        import torch

        torch_dtype = getattr(torch, self.dtype)
        model = self.prefix.model
        order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
        out: list[Any] = [None] * len(input_ids)
        pad_id = int(model.tokenizer.pad_token_id or 0)
        for start in range(0, len(order), self.fill_batch):
            rows = order[start : start + self.fill_batch]
            inputs = _pad(
                [input_ids[i] for i in rows],
                None if token_type_ids is None else [token_type_ids[i] for i in rows],
                pad_id,
                model.device,
            )
            value = self.prefix.compute(inputs)
            for j, i in enumerate(rows):
                v = value[j, : len(input_ids[i])] if self.prefix.sequence else value[j]
                out[i] = v.to(torch_dtype).clone()
        return out

    def batch(
        self, input_ids: Sequence[IntArray], token_type_ids: Sequence[IntArray] | None = None
    ) -> tuple[Any, Any | None]:
        """Features of a batch stacked for :meth:`FrozenPrefix.top`: ``(features, mask)``;
        sequence features are zero-padded to the longest with a 0/1 attention mask."""
        return self.stack(self.features(input_ids, token_type_ids))

    def stack(self, values: Sequence[Any], length: int | None = None) -> tuple[Any, Any | None]:
        """Stack cached values (float32) — padded to ``length`` (default: the longest)."""
        import torch

        device = self.prefix.model.device
        if not self.prefix.sequence:
            return torch.stack([v.float() for v in values]).to(device), None
        longest = max(v.shape[0] for v in values) if length is None else length
        hidden = values[0].shape[-1]
        feats = torch.zeros(len(values), longest, hidden, dtype=torch.float32, device=device)
        mask = torch.zeros(len(values), longest, dtype=torch.long, device=device)
        for j, v in enumerate(values):
            feats[j, : v.shape[0]] = v.float()
            mask[j, : v.shape[0]] = 1
        return feats, mask

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._entries))


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def _pad(
    ids: Sequence[IntArray], types: Sequence[IntArray] | None, pad_id: int, device: str
) -> dict[str, Any]:
    import torch

    length = max(len(t) for t in ids)
    arr = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for j, t in enumerate(ids):
        arr[j, : len(t)] = t
        mask[j, : len(t)] = 1
    out = {
        "input_ids": torch.as_tensor(arr, device=device),
        "attention_mask": torch.as_tensor(mask, device=device),
    }
    if types is not None:
        tt = np.zeros((len(ids), length), dtype=np.int64)
        for j, t in enumerate(types):
            tt[j, : len(t)] = t
        out["token_type_ids"] = torch.as_tensor(tt, device=device)
    return out


def tokenize_texts(
    model: AdapterModel, texts: Sequence[str]
) -> tuple[list[IntArray], list[IntArray] | None]:
    """Unpadded token ids (and type ids) of texts, truncated to the model's ``max_length`` —
    the ids ``model.encode`` gives, without the padding."""
    if not texts:
        return [], None
    enc = model.tokenizer(list(texts), truncation=True, max_length=model.max_length)
    ids = [np.asarray(t, dtype=np.int64) for t in enc["input_ids"]]
    raw = enc.get("token_type_ids")
    types = None if raw is None else [np.asarray(t, dtype=np.int64) for t in raw]
    return ids, types


__all__ = [
    "DEFAULT_MAX_BYTES",
    "CacheStats",
    "FeatureCache",
    "FrozenPrefix",
    "first_trained_layer",
    "tokenize_texts",
]
