"""Flower (flwr ≥ 1.20 Message API) driving the same sans-I/O client and server steps.

A sketch of how a real FL engine hosts the loop: the ClientApp's ``train`` handler is
:func:`handle_train` (RecordDict in → RecordDict out, i.e. :func:`securefl.fl.client.client_step`
on the node's partition) and the ServerApp's main loop calls :func:`aggregate_replies`, the same
:class:`securefl.fl.backends.Backend` server step as the simulation. Only the *plaintext*
backend and central DP are wired here: Flower's transport carries one message per node and
round, while SecAgg(+) needs its four message rounds (use ``securefl.secagg.ClientProtocol`` /
``ServerProtocol`` as Flower mods for that — not done here). The record handlers are pure and
tested; the two app factories only bind them to Flower's decorators.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from securefl.errors import ConfigurationError
from securefl.fl.backends import Backend, make_backend
from securefl.fl.client import TrainSpec, client_step
from securefl.fl.config import RunConfig
from securefl.fl.model import AdapterModel
from securefl.fl.run import load_data
from securefl.tensors import FloatVector

ARRAYS = "adapters"
METRICS = "metrics"
CONFIG = "config"


_STATE: dict[str, tuple[AdapterModel, list[Any]]] = {}


def _node_state(cfg: RunConfig) -> tuple[AdapterModel, list[Any]]:
    """The node's model and partitions, built once per process and config."""
    key = cfg.digest()
    if key in _STATE:
        return _STATE[key]
    clients, test = load_data(cfg)
    model = AdapterModel(
        cfg.model,
        num_labels=len(test.label_names),
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_targets=cfg.lora_targets,
        max_length=cfg.max_length,
        seed=cfg.seed,
        device=cfg.device,
    )
    return model, clients


def handle_train(cfg: RunConfig, content: Any, partition_id: int) -> Any:
    """ClientApp ``train``: global adapters + round in, clipped delta + metrics out."""
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    if cfg.aggregation != "plain" or cfg.dp not in ("none", "central"):
        raise ConfigurationError(
            "the Flower adapter carries plaintext FedAvg (optionally central DP) only",
            parameter="aggregation",
        )
    model, clients = _node_state(cfg)
    if not 0 <= partition_id < len(clients):
        raise ConfigurationError(f"no partition {partition_id}", parameter="partition-id")
    (global_flat,) = content[ARRAYS].to_numpy_ndarrays()
    round_index = int(content[CONFIG]["round"])
    spec = TrainSpec(
        cfg.local_epochs,
        cfg.batch_size,
        cfg.local_lr,
        clip=cfg.clip if cfg.client_level_dp else None,
    )
    update = client_step(
        model,
        np.asarray(global_flat, dtype=np.float64),
        clients[partition_id],
        spec,
        client_id=partition_id,
        round_index=round_index,
        seed=cfg.seed,
    )
    return RecordDict(
        {
            ARRAYS: ArrayRecord([update.delta]),
            METRICS: MetricRecord(
                {
                    "num-examples": update.num_examples,
                    "train-loss": float(update.train_loss),
                    "client-id": partition_id,
                }
            ),
        }
    )


def aggregate_replies(
    backend: Backend, global_flat: FloatVector, replies: Iterable[Any], round_index: int
) -> FloatVector:
    """ServerApp step: the replies' deltas through the run's Backend (same as simulation)."""
    cfg = backend.cfg
    inputs: dict[int, FloatVector] = {}
    sizes: dict[int, int] = {}
    for content in replies:
        (delta,) = content[ARRAYS].to_numpy_ndarrays()
        cid = int(content[METRICS]["client-id"])
        if cid in inputs:
            raise ConfigurationError(f"two replies from client {cid}", parameter="replies")
        inputs[cid] = np.asarray(delta, dtype=np.float64)
        sizes[cid] = int(content[METRICS]["num-examples"])
    if not inputs:
        return global_flat.copy()
    max_n = max(sizes.values())
    weights = {c: 1.0 if cfg.client_level_dp else sizes[c] / max_n for c in inputs}
    outcome = backend.aggregate(
        inputs, weights, dropouts={}, round_index=round_index, context=bytes(64)
    )
    new_flat, _ = backend.server_update(global_flat, outcome, cfg)
    return new_flat


def make_client_app(cfg: RunConfig) -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()  # type: ignore[misc,untyped-decorator]
    def train(msg: Any, context: Any) -> Any:
        pid = int(context.node_config["partition-id"])
        return msg.create_reply(handle_train(cfg, msg.content, pid))

    return app


def make_server_app(cfg: RunConfig) -> Any:
    """A ServerApp running ``cfg.rounds`` rounds over all connected nodes (no sampling/ledger:
    accounting and budget checks stay with :func:`securefl.fl.run.run_simulation`)."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()  # type: ignore[misc,untyped-decorator]
    def main(grid: Any, context: Any) -> None:
        model, _ = _node_state(cfg)
        backend = make_backend(cfg, dimension=model.layout.size)
        global_flat = model.get_flat()
        for r in range(cfg.rounds):
            messages = [
                Message(
                    RecordDict(
                        {ARRAYS: ArrayRecord([global_flat]), CONFIG: ConfigRecord({"round": r})}
                    ),
                    dst_node_id=node,
                    message_type="train",
                )
                for node in grid.get_node_ids()
            ]
            replies = [m.content for m in grid.send_and_receive(messages) if m.has_content()]
            global_flat = aggregate_replies(backend, global_flat, replies, r)

    return app
