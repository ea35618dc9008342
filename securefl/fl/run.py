"""``securefl simulate``'s task: federated LoRA fine-tuning of a text classifier, assembled from
the one round orchestrator (:mod:`securefl.fl.orchestrator`).

This module only knows the built-in task — a Hugging Face model with LoRA adapters
(:class:`~securefl.fl.model.AdapterModel`), text datasets with a Dirichlet partition, local
AdamW (or Opacus DP-SGD) — and hands every round to the orchestrator, which owns budget
checks, sampling, aggregation, DP noise, checkpoints and the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from securefl.fl.aggregation import WireObserver
from securefl.fl.client import ClientUpdate, TrainSpec, client_step, evaluate
from securefl.fl.config import RunConfig
from securefl.fl.data import (
    TextDataset,
    dirichlet_partition,
    load_text_dataset,
    synthetic_topics,
    train_test_split,
)
from securefl.fl.model import AdapterModel
from securefl.fl.orchestrator import Callback, ModelInfo, Orchestrator, RunResult
from securefl.tensors import FloatVector
from securefl.train.batched import BatchedClientTrainer
from securefl.train.frozen import FeatureCache


def load_data(cfg: RunConfig) -> tuple[list[TextDataset], TextDataset]:
    """Client datasets (Dirichlet label skew) and the held-out evaluation set."""
    if cfg.data == "synthetic":
        full = synthetic_topics(cfg.synthetic_examples, seed=cfg.seed)
    else:
        full = load_text_dataset(
            cfg.data, text_column=cfg.text_column, label_column=cfg.label_column
        )
    train, test = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    parts = dirichlet_partition(train.labels, cfg.n_clients, cfg.dirichlet_alpha, seed=cfg.seed)
    return [train.subset(p) for p in parts], test


def builtin_model(cfg: RunConfig, num_labels: int) -> AdapterModel:
    """The built-in task's model (LoRA adapters on ``cfg.model``), at its seeded initial state."""
    return AdapterModel(
        cfg.model,
        num_labels=num_labels,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_targets=cfg.lora_targets,
        max_length=cfg.max_length,
        seed=cfg.seed,
        device=cfg.device,
    )


def feature_cache_of(cfg: RunConfig, model: AdapterModel) -> FeatureCache | None:
    """The run's frozen-prefix cache (None: ``feature_cache`` off, or no frozen prefix)."""
    if not cfg.feature_cache:
        return None
    return FeatureCache.for_model(model, max_bytes=cfg.feature_cache_mb << 20)


def model_info(cfg: RunConfig, model: AdapterModel) -> ModelInfo:
    """What the orchestrator records of the model (layout, initial state, provenance)."""
    return ModelInfo(
        layout=model.layout,
        initial=model.get_flat(),
        provenance=model.provenance.to_dict(),
        adapter={
            "lora_r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha,
            "targets": list(cfg.lora_targets),
        },
        device=model.device,
    )


def train_spec(cfg: RunConfig) -> TrainSpec:
    """Local training settings; the delta is clipped on the client under client-level DP."""
    return TrainSpec(
        cfg.local_epochs,
        cfg.batch_size,
        cfg.local_lr,
        clip=cfg.clip if cfg.client_level_dp else None,
    )


def run_simulation(
    cfg: RunConfig,
    *,
    callback: Callback | None = None,
    resume: bool = True,
    wire_observer: WireObserver | None = None,
) -> RunResult:
    """Run (or resume) the built-in fine-tuning task described by ``cfg``.

    ``wire_observer`` sees every plaintext / SecAgg(+) wire message (who-sees-what tests).
    """
    clients, test = load_data(cfg)
    if callback is not None:
        callback("loading_model", {"model": cfg.model})
    model = builtin_model(cfg, len(test.label_names))

    def score(flat: FloatVector) -> dict[str, float]:
        model.set_flat(flat)
        accuracy, loss = evaluate(model, test)
        return {"accuracy": accuracy, "loss": loss}

    info = model_info(cfg, model)
    spec = train_spec(cfg)
    cache = feature_cache_of(cfg, model)
    with Orchestrator(
        cfg,
        info,
        client_sizes=tuple(len(c) for c in clients),
        evaluate=score,
        resume=resume,
        observer=wire_observer,
        callback=callback,
    ) as orch:
        while (plan := orch.next_round()) is not None:
            t0 = time.perf_counter()
            updates: dict[int, ClientUpdate] = {}
            round_spec = spec if plan.clip is None else replace(spec, clip=plan.clip)
            trained: Iterable[ClientUpdate]
            if cfg.batched_training:  # the whole cohort in one batched pass (train.batched)
                cohort = list(plan.cohort)
                trained = (
                    BatchedClientTrainer(model, round_spec, feature_cache=cache).client_updates(
                        plan.global_flat,
                        [clients[c] for c in cohort],
                        client_ids=cohort,
                        round_index=plan.index,
                        seed=cfg.seed,
                    )
                    if cohort
                    else ()
                )
            else:
                trained = (
                    client_step(
                        model,
                        plan.global_flat,
                        clients[cid],
                        round_spec,
                        client_id=cid,
                        round_index=plan.index,
                        seed=cfg.seed,
                        trainer=orch.local_trainer,
                        feature_cache=cache,
                    )
                    for cid in plan.cohort
                )
            for update in trained:
                updates[update.client_id] = update
                if callback is not None:
                    callback("client_done", {"round": plan.index, "client": update.client_id})
            orch.complete_round(plan, updates, train_s=time.perf_counter() - t0)
        return orch.finish()


__all__ = [
    "RunResult",
    "builtin_model",
    "feature_cache_of",
    "load_data",
    "model_info",
    "run_simulation",
    "train_spec",
]
