"""Add securefl to an existing Flower app: a strategy wrapper for the ServerApp.

:class:`SecureStrategy` wraps the app's own message-API strategy (``flwr.serverapp.strategy``,
e.g. ``FedAvg``) the way Flower's DP wrappers do, and is started the same way
(``strategy.start(grid=..., initial_arrays=...)``). Each training round is securefl's, not
Flower's: the cohort is drawn with secret keyed coins and checked against the budget policy
(:class:`~securefl.fl.orchestrator.Orchestrator`), the sampled nodes take part in a SecAgg(+)
round (:func:`securefl.engine.job.run_remote_round`, the engine job's round) whose first
request also carries the inner strategy's own train content, each node's
:func:`~securefl.engine.flower_mod.securefl_mod` runs the app's unchanged train function and
masks its clipped, noised update, and the server learns only the sum over survivors. The
orchestrator releases the mean (DP: fixed denominator, distributed discrete Gaussian noise
inside SecAgg by default; central noise only when ``dp = "central"`` is chosen and recorded),
accounts ε, keeps the signed ledger and writes the report. The inner strategy is handed one
reply: the global arrays plus the released mean, so its own server step (FedAvg, FedAdam …)
is post-processing. Federated evaluation (the inner strategy's evaluate rounds) is off unless
``federated_evaluation=True``: node metrics would reach the server in plaintext, outside the DP
guarantee; the choice is recorded in the ledger's ``run_started`` (model provenance).
``evaluate_fn`` (server-side evaluation on the server's own data) runs as in Flower.
The global model travels once per round and node, as the inner strategy's ArrayRecord in the
first request; the node derives from it the ``global`` bytes the session's model digest binds.

Spec: ``protocols/engine-flower.md`` ("Strategy wrapper and client mod").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from securefl.engine.flower import FlowerTransport, to_content, wait_for_nodes
from securefl.engine.job import (
    check_engine_config,
    close_remote_round,
    discover_nodes,
    run_remote_round,
)
from securefl.engine.server import Transport
from securefl.engine.wire import BLOBS_RECORD, RECORD
from securefl.errors import ConfigurationError
from securefl.fl.config import RunConfig
from securefl.fl.errors import UnsupportedCombinationError
from securefl.fl.orchestrator import Callback, ModelInfo, Orchestrator, RunResult
from securefl.secagg import Stage
from securefl.tensors import TensorLayout

#: The stage-0 request field of the global state (little-endian float64 of the flat model).
GLOBAL_FIELD = "global"
#: Content keys securefl owns in a train message (the inner strategy must not use them).
SECUREFL_KEYS = (RECORD, BLOBS_RECORD)


def arrays_to_named(arrays: ArrayRecord) -> dict[str, Any]:
    """An ArrayRecord as name → numpy array (what :class:`TensorLayout` flattens)."""
    return {key: array.numpy() for key, array in arrays.items()}


def global_bytes(arrays: ArrayRecord) -> bytes:
    """The flat model of an ArrayRecord as the engine's ``global`` field: little-endian float64
    in layout order (names sorted), what :func:`securefl.engine.wire.model_digest` binds."""
    named = arrays_to_named(arrays)
    flat = TensorLayout.from_tensors(named).flatten(named)
    return np.ascontiguousarray(flat, dtype="<f8").tobytes()


def named_to_arrays(named: Mapping[str, Any]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in named.items()})


class TrainTransport(FlowerTransport):
    """:class:`~securefl.engine.flower.FlowerTransport` whose every message is of type
    ``train`` (so the app's own ``@app.train`` handler, wrapped by the mod, gets it); the first
    stage's requests also carry ``first_content`` (the inner strategy's records)."""

    def __init__(self, grid: Grid, *, first_content: RecordDict | None = None) -> None:
        super().__init__(grid)
        self.first_content = first_content

    def message(
        self, node: int, request: Mapping[str, Any], *, timeout: float, round_index: int
    ) -> Message:
        first = self.first_content is not None and request.get("stage") == int(Stage.ADVERTISE_KEYS)
        if first:
            # the global model travels once, as the inner strategy's ArrayRecord; the mod
            # derives the bound ``global`` bytes from it (the model digest then binds the
            # very arrays the app trains on)
            request = {k: v for k, v in request.items() if k != GLOBAL_FIELD}
        content = to_content(request)
        if first and self.first_content is not None:
            for key, record in self.first_content.items():
                content[key] = record
        return Message(
            content,
            dst_node_id=node,
            message_type=MessageType.TRAIN,
            group_id=str(round_index),
            ttl=timeout + 10.0,
        )


TransportOf = Callable[[Grid, RecordDict | None], Transport]


def _grid_transport(grid: Grid, first: RecordDict | None) -> Transport:
    return TrainTransport(grid, first_content=first)


class SecureStrategy(Strategy):  # type: ignore[misc]
    """Wrap ``inner`` so that its training rounds run under securefl (see the module doc).

    ``cfg`` is a securefl :class:`~securefl.fl.config.RunConfig`; the fields that matter here
    are ``n_clients`` (= the registry's clients 1..N), ``sampling``/``sampling_rate``/
    ``clients_per_round``, ``aggregation`` (``secagg+`` default, or ``secagg``), ``dp``
    (``distributed`` default; ``central`` and ``none`` are explicit, recorded choices; local
    DP-SGD cannot run inside an opaque train function and is refused), ``clip``,
    ``target_epsilon``/``noise_multiplier``, ``delta``, ``accountant``, ``policy``,
    ``epsilon_budget``, ``out`` (run directory: ledger, checkpoint, report) and ``key_dir``
    (ledger signing key and sampling secret, never inside ``out``). ``rounds`` is set from
    :meth:`start`'s ``num_rounds``. The server step is the inner strategy's: ``cfg``'s
    server optimiser is forced to plain FedAvg with lr 1, so the orchestrator's state after a
    round is exactly global + released mean, which is what the inner strategy is handed.

    The run directory is new for each :meth:`start` (a checkpoint there is refused): the inner
    strategy's state is not checkpointed, so a killed run is not resumed by the wrapper.

    ``node_wait_timeout``: how long :meth:`start` waits for all ``n_clients`` nodes to connect.
    ``transport_of(grid, first_content)`` builds the engine transport (default
    :class:`TrainTransport`).

    ``registry`` maps SecAgg client ids 1..N to their Ed25519 identity keys (the nodes'
    ``identity-key`` files, :func:`securefl.engine.identity.generate_identity`).
    """

    def __init__(
        self,
        inner: Strategy,
        cfg: RunConfig,
        *,
        registry: Mapping[int, bytes],
        stage_timeout: float = 60.0,
        train_timeout: float = 600.0,
        callback: Callback | None = None,
        federated_evaluation: bool = False,
        node_wait_timeout: float = 60.0,
        transport_of: TransportOf | None = None,
    ) -> None:
        if isinstance(inner, SecureStrategy):
            raise ConfigurationError("inner strategy is already wrapped", parameter="inner")
        check_engine_config(cfg)
        if cfg.dp == "local":
            raise UnsupportedCombinationError(
                "local DP-SGD needs securefl's own trainer; the mod wraps an opaque train "
                "function (use dp = 'distributed')",
                parameter="dp",
            )
        if sorted(registry) != list(range(1, cfg.n_clients + 1)):
            raise ConfigurationError(
                f"the registry must name clients 1..{cfg.n_clients} (n_clients)",
                parameter="registry",
            )
        if cfg.server_lr_schedule != "constant":
            raise UnsupportedCombinationError(
                "the inner strategy is the server optimiser: it receives the released mean "
                "unscaled, so a server learning-rate schedule belongs to it",
                parameter="server_lr_schedule",
            )
        self.inner = inner
        self.cfg = cfg.replace(dropout_rate=0.0, server_optimizer="fedavg", server_lr=1.0)
        self.registry = dict(registry)
        self.stage_timeout = stage_timeout
        self.train_timeout = train_timeout
        self.callback = callback
        self.federated_evaluation = federated_evaluation
        self.node_wait_timeout = node_wait_timeout
        self.transport_of = transport_of or _grid_transport
        self.run_result: RunResult | None = None
        #: per round: what the inner strategy was handed (global + released mean)
        self.released: dict[int, ArrayRecord] = {}

    # ------------------------------------------------------------------ Strategy API
    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Not used: a secure round is several exchanges (see :meth:`start`). Refused rather
        than delegated, so that a hand-written loop cannot silently train in plaintext."""
        raise UnsupportedCombinationError(
            "SecureStrategy runs its training rounds in start(); do not call configure_train",
            parameter="configure_train",
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise UnsupportedCombinationError(
            "SecureStrategy aggregates inside start(); do not call aggregate_train",
            parameter="aggregate_train",
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages: Iterable[Message] = self.inner.configure_evaluate(
            server_round, arrays, config, grid
        )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    # ------------------------------------------------------------------ the run
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's ``Strategy.start`` loop with securefl's training rounds; the securefl run
        result (ε, ledger anchor, report paths) is left in :attr:`run_result`."""
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        named = arrays_to_named(initial_arrays)
        layout = TensorLayout.from_tensors(named)
        model = ModelInfo(
            layout=layout,
            initial=layout.flatten(named),
            provenance={
                "source": "flower ArrayRecord",
                "inner_strategy": type(self.inner).__name__,
                "federated_evaluation": (
                    "on: nodes' evaluation metrics reach the server in plaintext, outside "
                    "the DP guarantee"
                    if self.federated_evaluation
                    else "off"
                ),
            },
        )
        cfg = self.cfg.replace(rounds=num_rounds)
        result = Result()
        if evaluate_fn is not None:
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        # up to node_wait_timeout for every registered node to connect (then go on with those
        # that did: the sampled ones that are missing drop out of their rounds)
        wait_for_nodes(grid, self.cfg.n_clients, self.node_wait_timeout)
        node_of = discover_nodes(self.transport_of(grid, None), timeout=self.stage_timeout)
        with Orchestrator(cfg, model, resume=False, callback=self.callback) as orch:
            while (plan := orch.next_round()) is not None:
                server_round = plan.index + 1
                # the inner strategy's own train content (config, e.g. lr) rides on stage 0;
                # its arrays are the global model the SecAgg session binds
                first = self._train_content(server_round, arrays, train_config, grid)
                transport = self.transport_of(grid, first)
                if any(c + 1 not in node_of for c in plan.members):
                    node_of = {**node_of, **discover_nodes(transport, timeout=self.stage_timeout)}
                t0 = time.perf_counter()
                res = run_remote_round(
                    orch,
                    plan,
                    transport,
                    registry=self.registry,
                    node_of=node_of,
                    stage_timeout=self.stage_timeout,
                    train_timeout=self.train_timeout,
                )
                close_remote_round(orch, plan, res, train_s=time.perf_counter() - t0)
                if res.outcome is not None:
                    released = named_to_arrays(layout.unflatten(orch.global_flat))
                    self.released[server_round] = released
                    agg, metrics = self.inner.aggregate_train(
                        server_round, [self._released_reply(released, len(res.outcome.survivors))]
                    )
                    if agg is not None:
                        arrays = agg
                        result.arrays = agg
                    if metrics is not None:
                        result.train_metrics_clientapp[server_round] = metrics
                # the next round starts from the inner strategy's model, not the orchestrator's
                orch.global_flat = layout.flatten(arrays_to_named(arrays))
                if self.federated_evaluation:
                    replies = grid.send_and_receive(
                        self.inner.configure_evaluate(server_round, arrays, evaluate_config, grid),
                        timeout=timeout,
                    )
                    agg_eval = self.inner.aggregate_evaluate(server_round, replies)
                    if agg_eval is not None:
                        result.evaluate_metrics_clientapp[server_round] = agg_eval
                if evaluate_fn is not None:
                    res_eval = evaluate_fn(server_round, arrays)
                    if res_eval is not None:
                        result.evaluate_metrics_serverapp[server_round] = res_eval
            self.run_result = orch.finish()
        result.arrays = arrays
        return result

    def _train_content(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> RecordDict:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not messages:
            return RecordDict({"arrays": arrays})
        content = messages[0].content
        if any(k in content for k in SECUREFL_KEYS):
            raise ConfigurationError(
                f"the inner strategy's train content uses a securefl key {SECUREFL_KEYS}",
                parameter="inner",
            )
        return content

    def _released_reply(self, released: ArrayRecord, survivors: int) -> Message:
        """The one reply the inner strategy aggregates: the released model. Its weight is the
        number of survivors (a count the server learns anyway); no node metric is included —
        nodes' own train metrics never leave them."""
        key = getattr(self.inner, "arrayrecord_key", "arrays")
        weight_key = getattr(self.inner, "weighted_by_key", "num-examples")
        content = RecordDict({key: released, "metrics": MetricRecord({weight_key: survivors})})
        return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


__all__ = [
    "GLOBAL_FIELD",
    "SECUREFL_KEYS",
    "SecureStrategy",
    "TrainTransport",
    "arrays_to_named",
    "global_bytes",
    "named_to_arrays",
]
