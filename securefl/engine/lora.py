"""Optional :class:`EngineTask` that fine-tunes LoRA adapters with ``securefl.fl``'s client step.

``task = "securefl.engine.lora:LoraTask"`` in the run config. The global state is the flat
float64 adapter vector; each node trains from it on its local data (``securefl.fl``:
``AdapterModel``, ``client_step``) and the engine securely sums the deltas; ``apply`` adds
the mean delta (FedAvg, McMahan et al. 2017). Every party builds the same initial adapters
from ``model-seed``. The delta is L2-clipped to ``update-clip`` on the node (DP-FedAvg
clipping; no noise here) and each coordinate is bounded by the ring's ``clip``.

Run config: ``model`` ("tiny" | "minilm" | a local HF directory), ``num-labels``, ``lora-r``,
``lora-alpha``, ``lora-targets`` (comma list), ``max-length``, ``model-seed``, ``epochs``,
``batch-size``, ``lr``, ``update-clip``, ``labels`` (comma list, for user data).
Node config: ``data`` (CSV/JSONL path) or the built-in synthetic topics task split by
``partition-id`` / ``num-partitions`` (``synthetic-examples`` in total).

Depends on ``securefl.fl`` (torch, transformers, peft), imported only when used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.engine.task import Scalar
from securefl.errors import ConfigurationError
from securefl.tensors import TensorLayout


def _get(config: Mapping[str, Scalar], key: str, default: Scalar) -> Any:
    value = config.get(key, default)
    if type(default) is float and type(value) is int:
        value = float(value)
    if type(value) is not type(default):
        raise ConfigurationError(f"must be {type(default).__name__}", parameter=key)
    return value


class LoraTask:
    """Federated LoRA fine-tuning step over the engine (one model per process, cached)."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    def _model(self, run_config: Mapping[str, Scalar]) -> Any:
        from securefl.fl.model import AdapterModel

        args = {
            "model": _get(run_config, "model", "tiny"),
            "num_labels": _get(run_config, "num-labels", 4),
            "lora_r": _get(run_config, "lora-r", 4),
            "lora_alpha": _get(run_config, "lora-alpha", 8.0),
            "lora_targets": tuple(_get(run_config, "lora-targets", "query,value").split(",")),
            "max_length": _get(run_config, "max-length", 32),
            "seed": _get(run_config, "model-seed", 0),
        }
        key = repr(sorted(args.items()))
        if key not in self._models:
            model = args.pop("model")
            self._models[key] = AdapterModel(str(model), device="cpu", **args)
        return self._models[key]

    def layout(self, run_config: Mapping[str, Scalar]) -> TensorLayout:
        layout: TensorLayout = self._model(run_config).layout
        return layout

    def initial_state(self, run_config: Mapping[str, Scalar]) -> bytes:
        flat = np.asarray(self._model(run_config).get_flat(), dtype="<f8")
        return flat.tobytes()

    def _data(self, node_config: Mapping[str, Scalar], run_config: Mapping[str, Scalar]) -> Any:
        from securefl.fl import data as fl_data

        path = _get(node_config, "data", "")
        if path:
            labels = _get(run_config, "labels", "")
            return fl_data.load_text_dataset(
                path, label_names=labels.split(",") if labels else None
            )
        parts = _get(node_config, "num-partitions", 4)
        part = _get(node_config, "partition-id", 0)
        pool = fl_data.synthetic_topics(_get(run_config, "synthetic-examples", 256), seed=0)
        if not 0 <= part < parts:
            raise ConfigurationError("must lie in 0..num-partitions-1", parameter="partition-id")
        return pool.subset(list(range(part, len(pool), parts)))

    def update(
        self,
        global_state: bytes,
        node_config: Mapping[str, Scalar],
        run_config: Mapping[str, Scalar],
    ) -> dict[str, npt.NDArray[Any]]:
        from securefl.fl.client import TrainSpec, client_step

        model = self._model(run_config)
        global_flat = np.frombuffer(global_state, dtype="<f8").astype(np.float64)
        if global_flat.shape != (model.layout.size,):
            raise ConfigurationError("global state has the wrong size", parameter="global")
        spec = TrainSpec(
            epochs=_get(run_config, "epochs", 1),
            batch_size=_get(run_config, "batch-size", 8),
            lr=_get(run_config, "lr", 1e-3),
            clip=_get(run_config, "update-clip", 1.0),
        )
        part = _get(node_config, "partition-id", 0)
        seed = int.from_bytes(hashlib.sha256(global_state).digest()[:4], "little")
        result = client_step(
            model,
            global_flat,
            self._data(node_config, run_config),
            spec,
            client_id=part,
            round_index=0,
            seed=seed,
        )
        named: dict[str, npt.NDArray[Any]] = model.layout.unflatten(result.delta)
        return named

    def apply(
        self,
        global_state: bytes,
        sums: Mapping[str, npt.NDArray[np.float64]],
        n: int,
        run_config: Mapping[str, Scalar],
    ) -> bytes:
        layout = self.layout(run_config)
        current = np.frombuffer(global_state, dtype="<f8")
        return (current + layout.flatten(sums) / max(n, 1)).astype("<f8").tobytes()
