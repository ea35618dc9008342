"""Flower ServerApp and ClientApp that run the whole securefl job (:mod:`securefl.engine.job`).

The ServerApp runs the orchestrator — budget policy, secret-coin sampling, the signed ledger,
checkpoints, resume, the report — with each round's SecAgg(+) over the SuperNodes; every
SuperNode's ClientApp trains on its own data and answers as a :class:`JobNode`. Messages are
those of :mod:`securefl.engine.flower` (type ``train.secagg``, one ``ConfigRecord``).

Run config (``flwr run --run-config`` or the app's ``pyproject.toml``): ``config`` (path of
the securefl run TOML on the server host; required), ``out`` and ``key-dir`` (override the
TOML's; the key directory holds the ledger signing key and the sampling secret, never the run
directory), ``registry`` (path; required: the identity registry that pins each client's key),
``min-nodes``, ``node-wait-timeout``, ``stage-timeout``, ``train-timeout`` (the first stage,
in which nodes train; default 600 s), ``client-examples`` (local DP-SGD: the sites' dataset sizes,
comma-separated; the event accounted is the worst of theirs), ``evaluate`` (server-side held-out
evaluation, default true), ``progress-file``, ``result-file``.

Node config (``flower-supernode --node-config``): ``identity-key`` (required), ``registry``
(recommended), ``data`` (the node's CSV/JSONL; default: the built-in demo partition of its
client id), ``node-policy`` (TOML; with it the node keeps its own signed ``node-ledger``
under ``node-key-dir`` and refuses rounds its policy forbids), ``threat-model``,
``min-threshold``. Spec: ``protocols/engine-flower.md`` §7.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from securefl.engine.flower import (
    FlowerTransport,
    _get,
    _write_json,
    answer,
    policy_from_node_config,
    wait_for_nodes,
)
from securefl.engine.identity import load_identity, load_registry
from securefl.engine.job import JobNode, JobTerms, run_job
from securefl.engine.task import Scalar
from securefl.errors import ConfigurationError
from securefl.fl import config as fl_config

job_server_app = ServerApp()
job_client_app = ClientApp()


# ---------------------------------------------------------------------- server
def run_job_on_grid(grid: Grid, run_config: Mapping[str, Scalar]) -> dict[str, Any]:
    """The ServerApp's main: the job over the grid; returns (and writes) the run summary."""
    path = _get(run_config, "config", "", str)
    if not path:
        raise ConfigurationError("the run config needs config (a run TOML)", parameter="config")
    overrides = {
        "out": _get(run_config, "out", "", str) or None,
        "key_dir": _get(run_config, "key-dir", "", str) or None,
    }
    cfg = fl_config.load(path, **overrides)
    registry_path = _get(run_config, "registry", "", str)
    if not registry_path:
        raise ConfigurationError(
            "the job needs an identity registry (trust on first use is not offered: a "
            "server could invent clients)",
            parameter="registry",
        )
    registry = load_registry(registry_path)
    progress_path = _get(run_config, "progress-file", "", str)

    def log(line: Mapping[str, Any]) -> None:
        if progress_path:
            with open(progress_path, "a") as fh:
                fh.write(json.dumps(line, default=str) + "\n")

    def callback(kind: str, info: dict[str, Any]) -> None:
        if kind in ("started", "round_started", "refused"):
            log({"event": kind, **{k: v for k, v in info.items() if k != "global_flat"}})
        elif kind == "round":
            log({"event": "round", "round": info.get("round")})

    wait_for_nodes(
        grid,
        _get(run_config, "min-nodes", 2, int),
        _get(run_config, "node-wait-timeout", 60.0, float),
    )
    from securefl.engine.builtin import server_model

    info, evaluate = server_model(cfg, with_evaluation=_get(run_config, "evaluate", True, bool))
    transport = FlowerTransport(grid)
    result = run_job(
        transport,
        cfg,
        info,
        registry=registry,
        evaluate=evaluate,
        stage_timeout=_get(run_config, "stage-timeout", 60.0, float),
        train_timeout=_get(run_config, "train-timeout", 600.0, float),
        client_examples=_sizes(_get(run_config, "client-examples", "", str)),
        callback=callback,
        progress=lambda r, stage: log({"event": "stage", "round": r, "stage": stage}),
    )
    summary = result.summary()
    summary["node_errors"] = {str(n): why for n, why in transport.errors.items()}
    result_path = _get(run_config, "result-file", "", str)
    if result_path:
        _write_json(result_path, summary)
    return summary


def _sizes(text: str) -> tuple[int, ...] | None:
    """``client-examples``: comma-separated local dataset sizes ("" = not local DP-SGD)."""
    if not text.strip():
        return None
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ConfigurationError(
            "must be positive ints, comma-separated", parameter="client-examples"
        )
    return sizes


def _server_main(grid: Grid, context: Context) -> None:
    run_job_on_grid(grid, context.run_config)


# ---------------------------------------------------------------------- client
def job_node_from_context(context: Context) -> JobNode:
    """The node's identity, registry, data and (optional) own policy from its node config.

    Flower starts a process per message and only the first stage trains and consults the
    policy: training, policy and ledger are opened on first use, not for every stage."""
    cfg = context.node_config
    key_path = _get(cfg, "identity-key", "", str)
    if not key_path:
        raise ConfigurationError("the node config needs identity-key", parameter="identity-key")
    registry_path = _get(cfg, "registry", "", str)
    policy_path = _get(cfg, "node-policy", "", str)
    guard = None
    if policy_path:
        ledger = _get(cfg, "node-ledger", "", str) or str(Path(policy_path).with_suffix(".sqlite"))
        guard = _NodeGate(policy_path, ledger, _get(cfg, "node-key-dir", "", str) or None)
    return JobNode(
        load_identity(key_path),
        _BuiltinOnDemand(_get(cfg, "data", "", str) or None),
        registry=load_registry(registry_path) if registry_path else None,
        policy=policy_from_node_config(cfg),
        guard=guard,
        terms_of=_round_terms if guard is not None else None,
    )


class _BuiltinOnDemand:
    """The built-in node training, imported (model stack included) only when a round trains."""

    def __init__(self, data: str | None) -> None:
        self.data = data

    def __call__(
        self, cfg: Any, global_flat: Any, client: int, round_index: int, *, trainer: Any = None
    ) -> Any:
        from securefl.engine.builtin import BuiltinTraining

        return BuiltinTraining(self.data)(cfg, global_flat, client, round_index, trainer=trainer)


class _NodeGate:
    """The node's policy gate, opened for one admission and closed again (the ledger is
    never held open by a process that may be killed mid-stage)."""

    def __init__(self, policy: str, ledger: str, key_dir: str | None) -> None:
        self.policy, self.ledger, self.key_dir = policy, ledger, key_dir

    def admit(self, terms: Any) -> object:
        from securefl.engine.node_job import node_guard

        guard, _ = node_guard(self.policy, self.ledger, self.key_dir)
        try:
            return guard.admit(terms)
        finally:
            guard.ledger.close()


def _round_terms(job: JobTerms, config: Any) -> Any:
    from securefl.engine.node_job import round_terms

    return round_terms(job, config)


def _client_job(msg: Message, context: Context) -> Message:
    return answer(msg, context, job_node_from_context)


job_server_app.main()(_server_main)
job_client_app.train("secagg")(_client_job)
