"""The embedded default job on engine nodes: the same model, data split and client step as
``securefl simulate``, so a deployment can be checked against a simulation of its config.

A node that holds real data passes ``data`` (a CSV/JSONL path read with the run's text and
label columns); without it, client ``c`` trains on the partition ``securefl simulate`` gives
client ``c`` (a demonstration: every node could derive every partition). The server side
(:func:`server_model`) evaluates on the simulation's held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from securefl.fl.client import ClientUpdate, client_step, evaluate
from securefl.fl.config import RunConfig
from securefl.fl.data import TextDataset, load_text_dataset
from securefl.fl.orchestrator import Evaluate, ModelInfo
from securefl.fl.run import builtin_model, load_data, model_info, train_spec
from securefl.tensors import FloatVector


@dataclass
class BuiltinTraining:
    """:class:`securefl.engine.job.LocalTraining` of the built-in task (model cached per
    configuration, so a long-lived node process loads it once)."""

    data: str | None = None
    _cache: dict[str, tuple[Any, TextDataset | None, list[TextDataset]]] = field(
        default_factory=dict
    )

    def _load(self, cfg: RunConfig) -> tuple[Any, TextDataset | None, list[TextDataset]]:
        key = cfg.digest()
        if key not in self._cache:
            clients, test = load_data(cfg)
            own = (
                load_text_dataset(
                    self.data, text_column=cfg.text_column, label_column=cfg.label_column
                )
                if self.data
                else None
            )
            self._cache = {key: (builtin_model(cfg, len(test.label_names)), own, clients)}
        return self._cache[key]

    def __call__(
        self,
        cfg: RunConfig,
        global_flat: FloatVector,
        client: int,
        round_index: int,
        *,
        trainer: Any = None,
    ) -> ClientUpdate:
        model, own, clients = self._load(cfg)
        data = own if own is not None else clients[client]
        return client_step(
            model,
            global_flat,
            data,
            train_spec(cfg),
            client_id=client,
            round_index=round_index,
            seed=cfg.seed,
            trainer=trainer,
        )


def server_model(
    cfg: RunConfig, *, with_evaluation: bool = True
) -> tuple[ModelInfo, Evaluate | None]:
    """The server's model record and (optionally) its held-out evaluation."""
    _clients, test = load_data(cfg)
    model = builtin_model(cfg, len(test.label_names))
    info = model_info(cfg, model)
    if not with_evaluation:
        return info, None

    def score(flat: FloatVector) -> dict[str, float]:
        model.set_flat(flat)
        accuracy, loss = evaluate(model, test)
        return {"accuracy": accuracy, "loss": loss}

    return info, score
