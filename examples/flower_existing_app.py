"""An existing Flower FedAvg app (message API, flwr >= 1.21) made private with securefl.

The app below is an ordinary Flower app: a linear model, each SuperNode trains on its own
data, ``FedAvg`` averages. Two changes make it private — look for ``# securefl``:

1. the ClientApp gets ``mods=[securefl_mod]``: the train function is unchanged, but what leaves
   the node is its clipped, noised update masked by SecAgg+, never the parameters it returns;
2. the ServerApp wraps its strategy: ``SecureStrategy(FedAvg(...), cfg, registry=...)`` samples
   the nodes with secret coins, runs SecAgg+ with distributed DP, accounts ε, enforces the
   budget, keeps the signed ledger and writes the report; ``FedAvg`` gets the released mean.

Each SuperNode needs an identity key (``securefl.engine.identity.generate_identity``) and the
registry of all of them (``save_registry``): ``--node-config "identity-key='node1.key'
registry='registry.json' partition-id=0"``. Run config (``pyproject.toml`` of the app):
``registry``, ``out`` (run directory), ``key-dir`` (outside it), ``n-clients``,
``num-server-rounds``, optionally ``dp`` and ``noise-multiplier``. Then ``flwr run .``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from securefl.engine.flower_mod import securefl_mod  # securefl
from securefl.engine.flower_strategy import SecureStrategy  # securefl
from securefl.engine.identity import load_registry  # securefl
from securefl.fl.config import RunConfig  # securefl

DIM = 4


# ---------------------------------------------------------------- the app as it was
def initial_arrays() -> ArrayRecord:
    return to_record(np.zeros(DIM, np.float32), np.zeros(1, np.float32))


def to_record(weight: np.ndarray, bias: np.ndarray) -> ArrayRecord:
    return ArrayRecord({"weight": Array(weight), "bias": Array(bias)})


def local_data(partition: int) -> tuple[np.ndarray, np.ndarray]:
    """Each node's private data (here: a fixed synthetic regression task per partition)."""
    rng = np.random.default_rng(1000 + partition)
    x = rng.normal(size=(32, DIM))
    y = x @ np.linspace(0.5, -0.5, DIM) + 0.1 * partition
    return x, y


def local_step(
    weight: np.ndarray, bias: np.ndarray, partition: int, lr: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """One full-batch gradient step of least squares: (weight, bias, loss)."""
    x, y = local_data(partition)
    err = x @ weight.astype(np.float64) + float(bias[0]) - y
    new_w = weight - lr * (x.T @ err) / len(y)
    new_b = bias - lr * np.array([err.mean()])
    return new_w.astype(np.float32), new_b.astype(np.float32), float(np.mean(err**2))


client_app = ClientApp(mods=[securefl_mod])  # securefl: the only change on the node


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"]
    lr = float(msg.content["config"].get("lr", 0.1))  # type: ignore[arg-type]
    partition = int(context.node_config.get("partition-id", 0))  # type: ignore[arg-type]
    w, b, loss = local_step(arrays["weight"].numpy(), arrays["bias"].numpy(), partition, lr)
    reply = RecordDict(
        {
            "arrays": to_record(w, b),
            "metrics": MetricRecord({"num-examples": 32, "train_loss": loss}),
        }
    )
    return Message(reply, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"]
    partition = int(context.node_config.get("partition-id", 0))  # type: ignore[arg-type]
    x, y = local_data(partition)
    err = x @ arrays["weight"].numpy() + arrays["bias"].numpy()[0] - y
    metrics = MetricRecord({"num-examples": len(y), "eval_loss": float(np.mean(err**2))})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    cfg = RunConfig(  # securefl: what the run may spend and how it aggregates
        name="flower-private",
        n_clients=int(rc["n-clients"]),  # type: ignore[arg-type]
        sampling="poisson",
        sampling_rate=1.0,
        aggregation="secagg+",
        dp=str(rc.get("dp", "distributed")),  # type: ignore[arg-type]
        clip=1.0,
        target_epsilon=8.0,
        noise_multiplier=float(rc["noise-multiplier"]) if "noise-multiplier" in rc else None,  # type: ignore[arg-type]
        out=str(rc["out"]),
        key_dir=str(rc["key-dir"]),
    )
    strategy = SecureStrategy(  # securefl: wrap the strategy the app already had
        FedAvg(fraction_evaluate=1.0, min_available_nodes=cfg.n_clients),
        cfg,
        registry=load_registry(str(rc["registry"])),
        stage_timeout=float(rc.get("stage-timeout", 60.0)),  # type: ignore[arg-type]
        # federated_evaluation=True would run evaluate() above on the nodes: their metrics
        # reach the server in plaintext, outside the DP guarantee (recorded opt-in)
    )
    strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(),
        num_rounds=int(rc["num-server-rounds"]),  # type: ignore[arg-type]
        train_config=ConfigRecord({"lr": 0.1}),
    )
