"""Synthetic pieces for the engine job (``benchmarks/engine_bench.py`` and its tests): no model,
no data, only a vector of dimension d, so a round costs what the engine costs.

* :func:`training` — the node config's ``training`` factory: a node's update is a fixed-seed
  random vector of the global model's dimension with L2 norm exactly ``cfg.clip`` (so it is
  clipped to C by construction and never changes under client-level clipping).
* :func:`server_model` — the run config's ``model`` factory: one float64 tensor
  ``synthetic.weight`` of ``d = cfg.extra["synthetic_dimension"]`` coordinates (default
  :data:`DEFAULT_DIMENSION`), initial state zero, no evaluation.

The updates are toy data, not secrets: a seeded numpy generator is fine here (never for keys,
masks or noise, which the engine draws itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from securefl.engine.identity import NodeIdentity, generate_identity, save_registry
from securefl.engine.job import JobNode, run_job
from securefl.engine.local import InProcessTransport
from securefl.engine.task import Scalar
from securefl.errors import ConfigurationError
from securefl.fl.client import ClientUpdate, derive_seed
from securefl.fl.config import RunConfig, from_mapping
from securefl.fl.orchestrator import Evaluate, ModelInfo, RunResult
from securefl.secagg import ClientPolicy
from securefl.tensors import FloatVector, TensorLayout, TensorSpec
from securefl.vocabulary import ThreatModel

DEFAULT_DIMENSION = 1000
MAX_DIMENSION = 1 << 31
TENSOR = "synthetic.weight"


def layout_of(dimension: int) -> TensorLayout:
    """The one-tensor layout of dimension ``d`` (both sides build it from d alone)."""
    if type(dimension) is not int or not 0 < dimension <= MAX_DIMENSION:
        raise ConfigurationError(
            f"must be an int in 1..{MAX_DIMENSION}", parameter="synthetic_dimension"
        )
    return TensorLayout((TensorSpec(TENSOR, (dimension,), "float64", "numpy"),))


class SyntheticTraining:
    """A :class:`securefl.engine.job.LocalTraining` whose update is a seeded random direction
    of L2 norm ``cfg.clip`` (seed: run seed, client, round)."""

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
            raise ConfigurationError(
                "the synthetic update has no local DP-SGD (dp = 'local')", parameter="dp"
            )
        d = int(global_flat.shape[0])
        rng = np.random.default_rng(derive_seed(cfg.seed, client, round_index, d))
        delta = rng.standard_normal(d)
        delta *= cfg.clip / float(np.linalg.norm(delta))
        return ClientUpdate(
            client_id=client,
            round_index=round_index,
            layout_digest=layout_of(d).digest(),
            delta=delta,
            num_examples=1,
            train_loss=0.0,
            local_steps=0,
        )


def training(node_config: Mapping[str, Scalar]) -> SyntheticTraining:
    """Node-config ``training`` factory (reads no keys)."""
    del node_config
    return SyntheticTraining()


def dimension_of(cfg: RunConfig) -> int:
    value = cfg.extra.get("synthetic_dimension", DEFAULT_DIMENSION)
    layout_of(value)  # validates
    d: int = value
    return d


def server_model(
    cfg: RunConfig, *, with_evaluation: bool = False
) -> tuple[ModelInfo, Evaluate | None]:
    """Run-config ``model`` factory: the one-tensor model of ``cfg.extra["synthetic_dimension"]``
    coordinates, initial state zero; never an evaluation (there is nothing to score)."""
    del with_evaluation
    d = dimension_of(cfg)
    info = ModelInfo(
        layout=layout_of(d),
        initial=np.zeros(d, dtype=np.float64),
        provenance={"model": "securefl.testing.engine_synthetic", "dimension": d},
    )
    return info, None


# ------------------------------------------------------------------ benchmark/test scaffolding
TRAINING_REF = "securefl.testing.engine_synthetic:training"
MODEL_REF = "securefl.testing.engine_synthetic:server_model"


def run_fields(
    n_nodes: int, dimension: int, rounds: int, *, dp: str = "distributed"
) -> dict[str, Any]:
    """The ``[run]`` table of a synthetic SecAgg+ job: every node in every round (noise
    multiplier 2 unless ``dp = "none"``)."""
    return {
        "name": "engine-synthetic",
        "model": "synthetic",  # recorded only: the model comes from the ``model`` factory
        "n_clients": n_nodes,
        "rounds": rounds,
        "sampling": "fixed",
        "clients_per_round": n_nodes,
        "dropout_rate": 0.0,
        "clip": 1.0,
        "aggregation": "secagg+",
        "dp": dp,
        "extra": {"synthetic_dimension": dimension},
        # a fixed noise multiplier: no calibration search before the first round
        **({} if dp == "none" else {"noise_multiplier": 2.0}),
    }


def run_toml(fields: Mapping[str, Any]) -> str:
    """``fields`` as a run TOML (``[run]`` and ``[run.extra]``; scalar values only)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v))

    top = [f"{k} = {value(v)}" for k, v in fields.items() if k != "extra"]
    extra = [f"{k} = {value(v)}" for k, v in dict(fields.get("extra", {})).items()]
    return "[run]\n" + "\n".join(top) + "\n\n[run.extra]\n" + "\n".join(extra) + "\n"


def identities(directory: str | Path, n_nodes: int) -> dict[int, NodeIdentity]:
    """Fresh identity keys ``node{u}.key`` (clients 1..n) and ``registry.json`` in ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ids = {u: generate_identity(root / f"node{u}.key", u) for u in range(1, n_nodes + 1)}
    save_registry(root / "registry.json", {u: i.public for u, i in ids.items()})
    return ids


def run_in_process(directory: str | Path, fields: Mapping[str, Any], n_nodes: int) -> RunResult:
    """The synthetic job over :class:`~securefl.engine.local.InProcessTransport` (n nodes, the
    malicious-server client policy a SuperNode uses by default)."""
    root = Path(directory)
    ids = identities(root / "ids", n_nodes)
    registry = {u: i.public for u, i in ids.items()}
    nodes = {
        100 + u: JobNode(
            ident,
            SyntheticTraining(),
            registry=registry,
            policy=ClientPolicy(threat_model=ThreatModel.MALICIOUS),
        )
        for u, ident in ids.items()
    }
    cfg = from_mapping({**fields, "out": str(root / "run"), "key_dir": str(root / "keys")})
    info, _ = server_model(cfg)
    return run_job(InProcessTransport(nodes), cfg, info, registry=registry, stage_timeout=600)


def round_figures(metrics: list[Mapping[str, Any]], dimension: int) -> list[dict[str, float]]:
    """Per completed round: engine round wall time (``timings.local_training``: the remote
    round, from the first request to the decoded sum), bytes a surviving client sent, and
    those bytes per parameter."""
    out = []
    for m in metrics:
        n = int(m.get("n_participants", 0))
        if not n:
            continue
        up = float(m["bytes_up"]) / n
        out.append(
            {
                "round_s": float(m["timings"]["local_training"]),
                "bytes_up_per_client": up,
                "wire_bytes_per_param": up / dimension,
                "participants": float(n),
            }
        )
    return out
