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
in which nodes train; default 600 s), ``client-examples`` (local DP-SGD: the sites' dataset
sizes, comma-separated; the event accounted is the worst of theirs), ``evaluate``
(server-side held-out evaluation, default true), ``progress-file``, ``result-file``, ``model``
(``"package.module:factory"``, default :func:`securefl.engine.builtin.server_model`: called as
``factory(cfg, with_evaluation=...)`` with the loaded :class:`~securefl.fl.config.RunConfig`,
it returns ``(ModelInfo, Evaluate | None)``, the server's model record and held-out evaluation).

Node config (``flower-supernode --node-config``): ``identity-key`` (required), ``registry``
(recommended), ``data`` (the node's CSV/JSONL; default: the built-in demo partition of its
client id), ``training`` (``"package.module:factory"``, default the built-in
:class:`~securefl.engine.builtin.BuiltinTraining` of ``data``: ``factory(node_config)`` returns
the node's :class:`~securefl.engine.job.LocalTraining`; it reads its own keys, ``data`` included,
from the node config), ``node-policy`` (TOML; with it the node keeps its own signed
``node-ledger`` under ``node-key-dir`` and refuses rounds its policy forbids), ``threat-model``,
``min-threshold``, ``key-holder-fingerprint`` (hex; needed for ``aggregation = "he"``: the
CKKS key holder's public-context fingerprint the node encrypts to), ``state-dir`` (where the
node's large round state is spilled, AES-GCM-encrypted, between messages; default
``<tmp>/securefl-node-<uid>-<node id>``, :func:`securefl.engine.flower.node_state_dir`).
The key holder's node
config instead: ``role = "keyholder"``, ``he-secret-key`` (its CKKS secret key, made by
:func:`securefl.engine.he_job.init_key_holder`, outside any run directory), ``registry``,
``he-state``, ``min-contributions`` and ``he-allow-without-dp``
(:class:`~securefl.engine.he_job.KeyHolderNode`). Both
factories are imported by name in the app's processes, so their module
must be importable there (installed with the app, not only on the host that submits the run).
Spec: ``protocols/engine-flower.md`` §10.
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
from securefl.engine.he_job import HE_MIN_CONTRIBUTIONS, KEYHOLDER_ROLE, KeyHolderNode
from securefl.engine.identity import load_identity, load_registry
from securefl.engine.job import JobNode, JobTerms, LocalTraining, run_job
from securefl.engine.task import Scalar, load_factory
from securefl.errors import ConfigurationError
from securefl.fl import config as fl_config
from securefl.fl.config import RunConfig
from securefl.fl.orchestrator import Evaluate, ModelInfo

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
    info, evaluate = model_from_run_config(
        run_config, cfg, with_evaluation=_get(run_config, "evaluate", True, bool)
    )
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


def model_from_run_config(
    run_config: Mapping[str, Scalar], cfg: RunConfig, *, with_evaluation: bool
) -> tuple[ModelInfo, Evaluate | None]:
    """The server's model record and evaluation from the run config's ``model`` factory."""
    ref = _get(run_config, "model", "", str)
    if not ref:
        from securefl.engine.builtin import server_model

        return server_model(cfg, with_evaluation=with_evaluation)
    factory = load_factory(ref, parameter="model")
    out = factory(cfg, with_evaluation=with_evaluation)
    if not (
        isinstance(out, tuple)
        and len(out) == 2
        and isinstance(out[0], ModelInfo)
        and (out[1] is None or callable(out[1]))
    ):
        raise ConfigurationError(
            f"{ref!r} must return (ModelInfo, Evaluate | None)", parameter="model"
        )
    info: ModelInfo = out[0]
    evaluate: Evaluate | None = out[1]
    return info, evaluate


def _server_main(grid: Grid, context: Context) -> None:
    run_job_on_grid(grid, context.run_config)


# ---------------------------------------------------------------------- client
def job_node_from_context(context: Context) -> JobNode | KeyHolderNode:
    """The node's identity, registry, data and (optional) own policy from its node config;
    with ``role = "keyholder"`` the CKKS key holder instead (never a client).

    Flower starts a process per message and only the first stage trains and consults the
    policy: training, policy and ledger are opened on first use, not for every stage."""
    cfg = context.node_config
    if _get(cfg, "role", "client", str) == KEYHOLDER_ROLE:
        return key_holder_from_node_config(cfg)
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
        training_from_node_config(cfg),
        registry=load_registry(registry_path) if registry_path else None,
        policy=policy_from_node_config(cfg),
        guard=guard,
        terms_of=_round_terms if guard is not None else None,
        key_holder=_fingerprint(_get(cfg, "key-holder-fingerprint", "", str)),
    )


def _fingerprint(text: str) -> bytes | None:
    if not text:
        return None
    try:
        fp = bytes.fromhex(text)
    except ValueError:
        fp = b""
    if len(fp) != 32:
        raise ConfigurationError("must be 64 hex digits", parameter="key-holder-fingerprint")
    return fp


def key_holder_from_node_config(cfg: Mapping[str, Scalar]) -> KeyHolderNode:
    """The CKKS key holder: its secret key (``he-secret-key``, outside any run directory),
    the registry it checks clients' receipts against, its release state file (``he-state``,
    default beside the key), ``min-contributions`` and ``he-allow-without-dp`` (its own
    opt-in to runs without DP, engine-flower.md §12; default false)."""
    key = _get(cfg, "he-secret-key", "", str)
    registry = _get(cfg, "registry", "", str)
    if not key or not registry:
        raise ConfigurationError(
            "a key holder needs he-secret-key and registry", parameter="he-secret-key"
        )
    return KeyHolderNode(
        key,
        registry=load_registry(registry),
        state=_get(cfg, "he-state", "", str) or None,
        min_contributions=_get(cfg, "min-contributions", HE_MIN_CONTRIBUTIONS, int),
        allow_without_dp=_get(cfg, "he-allow-without-dp", False, bool),
    )


def training_from_node_config(cfg: Mapping[str, Scalar]) -> LocalTraining:
    """The node's client step: the ``training`` factory's, else the built-in task on ``data``
    (imported, model stack included, only when a round trains)."""
    ref = _get(cfg, "training", "", str)
    if not ref:
        return _BuiltinOnDemand(_get(cfg, "data", "", str) or None)
    training = load_factory(ref, parameter="training")(cfg)
    if not callable(training):
        raise ConfigurationError(
            f"{ref!r} must return a LocalTraining (a callable)", parameter="training"
        )
    step: LocalTraining = training
    return step


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
