"""Running securefl's sans-I/O secure aggregation on a real federated-learning engine.

The core is engine-agnostic: :func:`run_secure_round` drives the SecAgg(+) server over any
:class:`Transport`, and :class:`SecAggNode` answers one request at a time with all round state
in a store the engine keeps for the node. :mod:`securefl.engine.flower` binds both to Flower
(``server_app`` / ``client_app``; imported lazily because it pulls in ``flwr``);
:class:`InProcessTransport` is the embedded one. Spec: ``protocols/engine-flower.md``.
"""

from __future__ import annotations

from securefl.engine.client import RoundRandomness, SecAggNode
from securefl.engine.identity import (
    NodeIdentity,
    generate_identity,
    load_identity,
    load_registry,
    save_registry,
)
from securefl.engine.local import InProcessTransport
from securefl.engine.node_policy import (
    NodeGuard,
    NodePolicy,
    NodePolicyRefusal,
    check_node_ledger,
    open_node_ledger,
)
from securefl.engine.node_terms import MalformedTermsError, RoundTerms
from securefl.engine.server import (
    EngineRoundResult,
    RoundSettings,
    Transport,
    discover_identities,
    run_secure_round,
)
from securefl.engine.task import DEFAULT_TASK, EngineTask, SyntheticTask, load_task

__all__ = [
    "DEFAULT_TASK",
    "EngineRoundResult",
    "EngineTask",
    "InProcessTransport",
    "MalformedTermsError",
    "NodeGuard",
    "NodeIdentity",
    "NodePolicy",
    "NodePolicyRefusal",
    "RoundRandomness",
    "RoundSettings",
    "RoundTerms",
    "SecAggNode",
    "SyntheticTask",
    "Transport",
    "check_node_ledger",
    "discover_identities",
    "generate_identity",
    "load_identity",
    "load_registry",
    "load_task",
    "open_node_ledger",
    "run_secure_round",
    "save_registry",
]
