"""A node's own policy gate for the engine job: the checked :class:`~securefl.engine.job.JobTerms`
and the round's SecAgg configuration as the :class:`~securefl.engine.node_policy.RoundTerms`
its :class:`~securefl.engine.node_policy.NodeGuard` reads.

Every field comes from what the node itself verified — the run configuration it rebuilt the
backend from, the DP event it recomputed, the threshold, degree and cohort of the session it
is about to join — never from a figure the server states alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from securefl.engine.job import JobTerms
from securefl.engine.node_ledger import open_node_ledger
from securefl.engine.node_policy import NodeGuard, NodePolicy
from securefl.engine.node_terms import RoundTerms
from securefl.fl.ledger import privacy_unit
from securefl.secagg import SecAggConfig

#: File name of a node's ledger signing key in its key directory.
NODE_KEY_NAME = "node-ledger.pem"


def round_terms(job: JobTerms, config: SecAggConfig) -> RoundTerms:
    """What the node's policy judges for this round (after the job was checked)."""
    cfg = job.config
    return RoundTerms(
        run_id=job.run_id,
        round_index=job.round_index,
        rounds=cfg.rounds,
        aggregation=cfg.aggregation,
        dp=cfg.dp,
        dp_event=job.event,
        noise_multiplier=job.noise_multiplier,
        clip=cfg.clip if cfg.dp != "none" else None,
        delta=cfg.delta,
        accountant=cfg.accountant,
        threat_model=config.threat_model.value,
        threshold=config.threshold,
        cohort_size=config.n,
        privacy_unit=privacy_unit(cfg),
        degree=None if config.is_complete else config.degree,
    )


def node_guard(
    policy_path: str | os.PathLike[str],
    ledger_path: str | os.PathLike[str],
    key_dir: str | os.PathLike[str] | None = None,
) -> tuple[NodeGuard, Callable[[JobTerms, SecAggConfig], RoundTerms]]:
    """The node's guard (policy + its signed ledger) and the terms builder for a JobNode.

    The signing key lives in ``key_dir`` (default ``~/.securefl/node-keys``), never beside
    the ledger: whoever holds the ledger file must not be able to re-sign its history."""
    keys = Path(key_dir) if key_dir else Path.home() / ".securefl" / "node-keys"
    ledger = open_node_ledger(ledger_path, keys / NODE_KEY_NAME)
    return NodeGuard(NodePolicy.load(policy_path), ledger), round_terms
