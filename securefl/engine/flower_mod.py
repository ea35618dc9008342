"""Add securefl to an existing Flower app: the client mod for the ClientApp.

``ClientApp(mods=[securefl_mod])`` (or ``@app.train(mods=[securefl_mod])``) leaves the app's
train function unchanged and puts securefl between it and the SuperLink, as Flower's own
``secaggplus_mod`` does. A ``train`` message from :class:`~securefl.engine.flower_strategy.
SecureStrategy` carries a ``securefl`` record; the mod answers it as a
:class:`~securefl.engine.job.JobNode` (identity, registry, SecAgg floor and optional own policy
and signed ledger from the node config, exactly as the engine job's ClientApp reads them).
In the first stage the node checks the announced terms — the DP event is the one the announced
configuration and noise multiplier imply, the threshold and neighbour degree are the run's, the
minimum cohort covers the noise the event counts on, its own policy admits the round — then
calls the train function on the global arrays the session binds, takes the arrays it returns,
computes the update, clips it to ``clip`` (client-level DP), encodes it in the ring with its
share of the distributed discrete Gaussian noise, and masks it (SecAgg+). The train function's
reply — parameters and metrics — never leaves the node; only masked ring vectors do.

A ``train`` message without a ``securefl`` record is refused (a server that does not run the
wrapper would otherwise receive the plaintext parameters); ``evaluate`` and ``query`` messages
pass through unchanged. Node config keys: those of :mod:`securefl.engine.flower_job`
(``identity-key`` required, ``registry``, ``threat-model``, ``min-threshold``,
``node-policy``, ``node-ledger``, ``node-key-dir``). Spec: ``protocols/engine-flower.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from securefl.engine.flower import REFUSED, answer
from securefl.engine.flower_job import job_node_from_context
from securefl.engine.flower_strategy import (
    GLOBAL_FIELD,
    SECUREFL_KEYS,
    arrays_to_named,
    global_bytes,
)
from securefl.engine.job import JobNode
from securefl.engine.wire import BLOBS_RECORD, RECORD
from securefl.errors import ConfigurationError, SecureFLError, UnsafeRequestError
from securefl.fl.client import ClientUpdate, clip_l2
from securefl.fl.config import RunConfig
from securefl.fl.errors import UnsupportedCombinationError
from securefl.secagg import Stage
from securefl.tensors import FloatVector, TensorLayout

#: MetricRecord keys the mod reads from the train reply (they stay on the node).
EXAMPLES_KEY = "num-examples"
LOSS_KEYS = ("train_loss", "train-loss", "loss")


class AppTraining:
    """A :class:`~securefl.engine.job.LocalTraining` that runs the app's own train function
    (``call_next``) on the request's arrays and returns its clipped update."""

    def __init__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> None:
        self.msg = msg
        self.context = context
        self.call_next = call_next

    def __call__(
        self,
        cfg: RunConfig,
        global_flat: FloatVector,
        client: int,
        round_index: int,
        *,
        trainer: Any = None,
    ) -> ClientUpdate:
        if trainer is not None:
            raise UnsupportedCombinationError(
                "local DP-SGD cannot run inside the app's train function", parameter="dp"
            )
        content = self.msg.content
        user = RecordDict({k: v for k, v in content.items() if k not in SECUREFL_KEYS})
        if len(user.array_records) != 1:
            raise UnsafeRequestError("the train request must carry exactly one ArrayRecord")
        ((key, arrays),) = user.array_records.items()
        named = arrays_to_named(arrays)
        layout = TensorLayout.from_tensors(named)
        flat = layout.flatten(named)
        # the app trains from exactly the model the SecAgg session binds (model digest)
        if flat.shape != global_flat.shape or not np.array_equal(flat, global_flat):
            raise UnsafeRequestError("the arrays to train on are not the bound global model")
        self.msg.content = user  # the app sees its own records only
        reply = self.call_next(self.msg, self.context)
        if reply.has_error():
            raise ConfigurationError(
                f"the app's train function failed (code {reply.error.code})", parameter="train"
            )
        out = reply.content.array_records
        returned = (
            out.get(key) if key in out else (next(iter(out.values())) if len(out) == 1 else None)
        )
        if returned is None:
            raise ConfigurationError(
                "the train function must return one ArrayRecord", parameter="train"
            )
        delta = layout.flatten(arrays_to_named(returned)) - global_flat
        if cfg.client_level_dp:
            delta, _ = clip_l2(delta, cfg.clip)
        metrics = next(iter(reply.content.metric_records.values()), None)
        examples = metrics.get(EXAMPLES_KEY, 1) if metrics is not None else 1
        loss = next((metrics[k] for k in LOSS_KEYS if metrics is not None and k in metrics), None)
        return ClientUpdate(
            client_id=client,
            round_index=round_index,
            layout_digest=layout.digest(),
            delta=np.asarray(delta, dtype=np.float64),
            num_examples=int(examples) if isinstance(examples, int | float) else 1,
            train_loss=float(loss) if isinstance(loss, int | float) else float("nan"),
            local_steps=0,
        )


def securefl_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: run the app's train function inside securefl's SecAgg(+) and DP (module doc)."""
    if msg.metadata.message_type.split(".")[0] != "train":
        return call_next(msg, context)
    if RECORD not in msg.content.config_records:
        return Message(
            Error(REFUSED, "securefl_mod: plaintext train request refused (no securefl record)"),
            reply_to=msg,
        )

    record = msg.content.config_records[RECORD]
    blobs = msg.content.array_records.get(BLOBS_RECORD, {})
    stage0 = record.get("stage") == int(Stage.ADVERTISE_KEYS)
    if stage0 and GLOBAL_FIELD not in record and GLOBAL_FIELD not in blobs:
        # the global model came once, as the app's ArrayRecord: its bytes are what the session's
        # model digest must bind (checked by the node before anything is computed)
        models = [v for k, v in msg.content.array_records.items() if k not in SECUREFL_KEYS]
        try:
            if len(models) != 1:
                raise UnsafeRequestError("the train request must carry exactly one ArrayRecord")
            record[GLOBAL_FIELD] = global_bytes(models[0])
        except SecureFLError as exc:
            return Message(Error(REFUSED, f"{type(exc).__name__}: {exc}"), reply_to=msg)

    def make_node(ctx: Context) -> JobNode:
        node = job_node_from_context(ctx)
        if not isinstance(node, JobNode):
            raise ConfigurationError(
                "a CKKS key-holder node does not train: securefl_mod runs on client nodes",
                parameter="role",
            )
        node.training = AppTraining(msg, ctx, call_next)
        return node

    return answer(msg, context, make_node)


__all__ = ["AppTraining", "securefl_mod"]
