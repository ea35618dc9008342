"""The public API: one ``Federation`` for a team's own model, data and training loop.

.. code-block:: python

    from securefl.api import Federation, SecAggPlus, CentralDP, Poisson

    fed = Federation(population=100, rounds=20, run_dir="runs/x",
                     aggregation=SecAggPlus(), privacy=CentralDP(clip=1.0, epsilon=8.0),
                     sampling=Poisson(0.1), policy="audits/policies/client_level_secagg.toml")
    for rnd in fed.rounds(initial_state):
        for client in rnd.cohort:
            rnd.submit(client, my_training(rnd.state, client))
        state = rnd.finish()

Every run writes a signed ledger and an audit report to ``run_dir``. See ``examples/``.
"""

from securefl.api.federation import Federation, Round, TrainContext, Trainer
from securefl.api.specs import (
    CKKS,
    DPFTRL,
    AdaptiveClip,
    CentralDP,
    DistributedDP,
    FixedSize,
    LocalDPSGD,
    NoDP,
    Plain,
    Poisson,
    SecAgg,
    SecAggPlus,
)
from securefl.fl.orchestrator import RunResult
from securefl.vocabulary import Adjacency, ThreatModel

__all__ = [
    "CKKS",
    "DPFTRL",
    "AdaptiveClip",
    "Adjacency",
    "CentralDP",
    "DistributedDP",
    "Federation",
    "FixedSize",
    "LocalDPSGD",
    "NoDP",
    "Plain",
    "Poisson",
    "Round",
    "RunResult",
    "SecAgg",
    "SecAggPlus",
    "ThreatModel",
    "TrainContext",
    "Trainer",
]
