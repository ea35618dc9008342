"""Flower (flwr ≥ 1.41) ServerApp and ClientApp running securefl's SecAgg(+) over a real grid.

Every stage is one Flower ``Message`` of type ``train.secagg`` per node whose content is a
``RecordDict`` holding one ``ConfigRecord`` named ``securefl`` (scalar fields; the SecAgg(+)
wire bytes in ``payload``) and, for bytes fields of 64 KiB or more (masked inputs, the global
model, key shares), one ``ArrayRecord`` ``securefl.blobs`` of uint8 arrays (:func:`to_content`);
a reply carries the node's answer the same way, or a Flower ``Error`` when the node refuses.
Node state between stages lives in ``context.state``, its large fields in an encrypted
node-local file (:mod:`securefl.engine.node_state`). Mapping and semantics:
``protocols/engine-flower.md``.

Run config (``[tool.flwr.app.config]`` or ``flwr run --run-config``): ``task``, ``num-rounds``,
``registry`` (path; empty = trust on first use), ``min-nodes``, ``node-wait-timeout``,
``stage-timeout``, ``clip``, ``frac-bits``, ``threshold`` (0 = smallest safe), ``degree``
(0 = complete graph), ``min-cohort``, ``threat-model``, ``corrupt-fraction``, ``result-file``,
``progress-file``. Node config (``flower-supernode --node-config``): ``identity-key`` (path,
required), ``registry`` (path, recommended), ``min-threshold``, ``min-cohort``,
``threat-model``, ``state-dir`` (where large round state is spilled, encrypted; default
``<tmp>/securefl-node-<uid>-<node id>``), plus whatever the task reads (``partition-id`` for
the synthetic task).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from securefl.engine.client import SecAggNode
from securefl.engine.identity import load_identity, load_registry
from securefl.engine.node_state import NodeStore
from securefl.engine.server import (
    EngineRoundResult,
    RoundSettings,
    discover_identities,
    run_secure_round,
)
from securefl.engine.task import DEFAULT_TASK, Scalar, load_task
from securefl.engine.wire import (
    BLOB_STYPE,
    BLOBS_RECORD,
    INLINE_MAX,
    MESSAGE_TYPE,
    RECORD,
    STATE_RECORD,
)
from securefl.errors import (
    AbortError,
    ConfigurationError,
    MalformedMessageError,
    SecureFLError,
)
from securefl.secagg import ClientPolicy

#: Flower ``Error.code`` of a node that refused or failed a stage (it drops out).
REFUSED = 4001
#: Seconds between two pulls of replies from the SuperLink.
POLL_S = 0.25

server_app = ServerApp()
client_app = ClientApp()


# ---------------------------------------------------------------------- config helpers
def _get(config: Mapping[str, Scalar], key: str, default: Any, kind: type) -> Any:
    value = config.get(key, default)
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise ConfigurationError(f"must be {kind.__name__}", parameter=key)
    return value


def settings_from_config(config: Mapping[str, Scalar]) -> RoundSettings:
    threshold = _get(config, "threshold", 0, int)
    degree = _get(config, "degree", 0, int)
    return RoundSettings(
        clip=_get(config, "clip", 1.0, float),
        frac_bits=_get(config, "frac-bits", 16, int),
        threshold=threshold or None,
        degree=degree or None,
        min_cohort=_get(config, "min-cohort", 0, int),
        threat_model=_get(config, "threat-model", "malicious", str),
        corrupt_fraction=_get(config, "corrupt-fraction", 0.0, float),
        stage_timeout=_get(config, "stage-timeout", 30.0, float),
    )


def policy_from_node_config(config: Mapping[str, Scalar]) -> ClientPolicy:
    return ClientPolicy(
        threat_model=_get(config, "threat-model", "malicious", str),
        corrupt_fraction=_get(config, "corrupt-fraction", 0.0, float),
        min_threshold=_get(config, "min-threshold", 2, int),
        min_cohort=_get(config, "min-cohort", 0, int),
    )


# ---------------------------------------------------------------------- message content
def to_content(record: Mapping[str, Any]) -> RecordDict:
    """A request/reply as Flower content: scalars and short bytes in the ``securefl``
    ConfigRecord, every bytes field of ``INLINE_MAX`` or more as one uint8 ``Array`` of the
    ``securefl.blobs`` ArrayRecord (Flower's array payload; the bytes object is not copied)."""
    small: dict[str, Any] = {}
    blobs: dict[str, Array] = {}
    for key, value in record.items():
        if isinstance(value, bytes) and len(value) >= INLINE_MAX:
            blobs[key] = Array(dtype="uint8", shape=(len(value),), stype=BLOB_STYPE, data=value)
        else:
            small[key] = value
    content = RecordDict({RECORD: ConfigRecord(small)})
    if blobs:
        content[BLOBS_RECORD] = ArrayRecord(array_dict=blobs)
    return content


def from_content(content: RecordDict) -> dict[str, Any] | None:
    """The record :func:`to_content` wrote (None without a ``securefl`` record); a blob that
    is not a well-formed uint8 bytes array, or that names a field twice, is malformed."""
    config = content.config_records.get(RECORD)
    if config is None:
        return None
    record = dict(config)
    blobs = content.array_records.get(BLOBS_RECORD)
    for key, array in (blobs or {}).items():
        data = array.data
        if (
            key in record
            or array.stype != BLOB_STYPE
            or array.dtype != "uint8"
            or not isinstance(data, bytes)
            or tuple(array.shape) != (len(data),)
        ):
            raise MalformedMessageError(f"field {key!r} is not a well-formed bytes array")
        record[key] = data
    return record


# ---------------------------------------------------------------------- transport
class FlowerTransport:
    """:class:`~securefl.engine.server.Transport` over a Flower ``Grid`` (SuperLink)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.errors: dict[int, str] = {}

    def node_ids(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def message(
        self, node: int, request: Mapping[str, Any], *, timeout: float, round_index: int
    ) -> Message:
        """The Flower message carrying ``request`` to ``node`` (subclasses change its type or
        content; the push/pull loop of :meth:`exchange` is the same for all)."""
        return Message(
            to_content(request),
            dst_node_id=node,
            message_type=MESSAGE_TYPE,
            group_id=str(round_index),
            ttl=timeout + 10.0,  # a request nobody fetched in time expires, never runs late
        )

    def exchange(
        self, requests: Mapping[int, Mapping[str, Any]], *, timeout: float, round_index: int
    ) -> dict[int, Mapping[str, Any]]:
        messages = [
            self.message(node, request, timeout=timeout, round_index=round_index)
            for node, request in requests.items()
        ]
        # push, then pull every POLL_S (Grid.send_and_receive sleeps 3 s between pulls)
        pending = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        out: dict[int, Mapping[str, Any]] = {}
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                node = int(reply.metadata.src_node_id)
                if node not in requests:
                    continue
                if reply.has_error():
                    self.errors[node] = f"{reply.error.code}: {reply.error.reason}"
                    continue
                try:
                    record = from_content(reply.content)
                except MalformedMessageError as exc:
                    self.errors[node] = f"malformed reply: {exc}"
                    continue
                if record is not None:
                    out[node] = record
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        return out


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


# ---------------------------------------------------------------------- server
def _round_summary(result: EngineRoundResult) -> dict[str, Any]:
    return {
        "round": result.round_index,
        "survivors": sorted(result.survivors),
        "dropped": {k: sorted(v) for k, v in result.dropped.items()},
        "node_of": {str(u): str(n) for u, n in sorted(result.node_of.items())},
        "rejected": {str(n): why for n, why in result.rejected.items()},
        "refused": {str(u): why for u, why in result.refused.items()},
        "session_id": result.config.session_id.hex(),
        "threshold": result.config.threshold,
        "bits": result.plan.bits,
        "frac_bits": result.plan.frac_bits,
        "dtype": result.total.dtype.name,
        "total_b64": base64.b64encode(
            result.total.astype(result.total.dtype.newbyteorder("<")).tobytes()
        ).decode(),
        "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down,
        "timings": result.timings,
    }


def _write_json(path: str, doc: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def run_server(grid: Grid, run_config: Mapping[str, Scalar]) -> dict[str, Any]:
    """The ServerApp's main loop; returns (and writes to ``result-file``) the run summary."""
    settings = settings_from_config(run_config)
    task_name = _get(run_config, "task", DEFAULT_TASK, str)
    task = load_task(task_name)
    transport = FlowerTransport(grid)
    progress_path = _get(run_config, "progress-file", "", str)

    current = [0]

    def progress(stage: str, info: Mapping[str, Any]) -> None:
        if progress_path:
            line = {"round": current[0], "stage": stage, **{k: str(v) for k, v in info.items()}}
            with open(progress_path, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    nodes = wait_for_nodes(
        grid,
        _get(run_config, "min-nodes", 2, int),
        _get(run_config, "node-wait-timeout", 60.0, float),
    )
    registry_path = _get(run_config, "registry", "", str)
    if registry_path:
        registry = load_registry(registry_path)
    else:
        registry = discover_identities(transport, timeout=settings.stage_timeout)
    summary: dict[str, Any] = {"nodes": [str(n) for n in nodes], "rounds": [], "aborted": None}
    summary["trust"] = "registry" if registry_path else "trust-on-first-use"
    state = task.initial_state(run_config)
    for r in range(_get(run_config, "num-rounds", 1, int)):
        current[0] = r
        progress("start", {})
        try:
            result = run_secure_round(
                transport,
                task,
                task_name=task_name,
                registry=registry,
                global_state=state,
                round_index=r,
                run_config=run_config,
                settings=settings,
                progress=progress,
            )
        except AbortError as exc:
            summary["aborted"] = f"round {r}: {exc}"
            break
        state = task.apply(state, result.sums, len(result.survivors), run_config)
        summary["rounds"].append(_round_summary(result))
        summary["rounds"][-1]["global_sha256"] = hashlib.sha256(state).hexdigest()
    summary["node_errors"] = {str(n): why for n, why in transport.errors.items()}
    result_path = _get(run_config, "result-file", "", str)
    if result_path:
        _write_json(result_path, summary)
    return summary


def _server_main(grid: Grid, context: Context) -> None:
    run_server(grid, context.run_config)


# ---------------------------------------------------------------------- client
def node_from_context(context: Context) -> SecAggNode:
    """Identity, registry and policy from the node config; task from the run config."""
    node_config = context.node_config
    key_path = _get(node_config, "identity-key", "", str)
    if not key_path:
        raise ConfigurationError("the node config needs identity-key", parameter="identity-key")
    registry_path = _get(node_config, "registry", "", str)
    task_name = _get(context.run_config, "task", DEFAULT_TASK, str)
    return SecAggNode(
        load_identity(key_path),
        load_task(task_name),
        task_name=task_name,
        node_config=node_config,
        run_config=context.run_config,
        policy=policy_from_node_config(node_config),
        registry=load_registry(registry_path) if registry_path else None,
    )


def _client_secagg(msg: Message, context: Context) -> Message:
    return answer(msg, context, node_from_context)


class Handler(Protocol):
    """What :func:`answer` asks: a SecAgg(+) node, a job node or the CKKS key holder."""

    def handle(
        self, request: Mapping[str, Any], store: MutableMapping[str, Any]
    ) -> dict[str, Any]: ...


def node_state_dir(context: Context) -> Path:
    """Where this node spills large round state (:mod:`securefl.engine.node_state`): node
    config ``state-dir``, else ``<tmp>/securefl-node-<uid>-<node id>``; created 0700."""
    configured = _get(context.node_config, "state-dir", "", str)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"securefl-node-{os.geteuid()}-{context.node_id}"


def answer(msg: Message, context: Context, make_node: Callable[[Context], Handler]) -> Message:
    """One request to ``make_node(context)``'s node; its round state in ``context.state``,
    large fields (the ring vector) in an encrypted node-local file (:class:`NodeStore`)."""
    previous = context.state.config_records.get(STATE_RECORD)
    store = NodeStore(node_state_dir(context))
    try:
        store = NodeStore(store.directory, previous)
        node = make_node(context)
        request = from_content(msg.content)
        if request is None:
            raise ConfigurationError("message has no securefl record", parameter="content")
        reply = node.handle(request, store)
        record = store.persist()
    except Exception as exc:  # refuse: the server sees an error reply and drops us
        store.clear()  # no round secret outlives a refusal or a crash of the client step
        _save_state(context, {})
        # protocol errors say what was wrong; anything else only its type (could hold data)
        why = (
            f"{type(exc).__name__}: {exc}" if isinstance(exc, SecureFLError) else type(exc).__name__
        )
        return Message(Error(REFUSED, why), reply_to=msg)
    _save_state(context, record)
    return Message(to_content(reply), reply_to=msg)


server_app.main()(_server_main)
client_app.train("secagg")(_client_secagg)


def _save_state(context: Context, store: Mapping[str, Any]) -> None:
    if store:
        context.state[STATE_RECORD] = ConfigRecord(dict(store))
    elif STATE_RECORD in context.state:
        del context.state[STATE_RECORD]
