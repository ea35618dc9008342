"""Masking-based secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Public API: :class:`SecAggConfig`, the sans-I/O :class:`ClientProtocol` / :class:`ServerProtocol`,
the wire codec (:func:`decode`, ``Message.encode``), the one stage driver :func:`drive_round`
(over any ``securefl.secagg.driver.Transport``), the in-process simulation :func:`run_round`
(:class:`SimulatedTransport`, :class:`SimulatedIdentities`, :class:`DropoutPlan`,
:class:`RoundResult`), and :func:`secure_sum_named` for named tensors.
Normative spec: ``protocols/secagg.md``.
"""

from __future__ import annotations

from securefl.secagg.client import ClientPolicy, ClientProtocol
from securefl.secagg.config import (
    PROTOCOL_VERSION,
    THREAT_MODELS,
    InsecureThresholdError,
    SecAggConfig,
    required_threshold,
)
from securefl.secagg.driver import drive_round
from securefl.secagg.graph import neighbours
from securefl.secagg.messages import (
    STAGE_LABELS,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencyRequest,
    MaskedInput,
    MaskedInputRequest,
    Message,
    PeerKeys,
    ShareKeys,
    ShareKeysRequest,
    ShareKind,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
    decode,
)
from securefl.secagg.randomness import DeterministicRandomness, RandomSource, SystemRandomness
from securefl.secagg.server import ServerProtocol
from securefl.secagg.simulate import (
    DropoutPlan,
    NamedSumResult,
    RoundResult,
    SimulatedIdentities,
    SimulatedTransport,
    run_round,
    secure_sum_named,
    simulation_config,
)
from securefl.secagg.transitions import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientEvent,
    ClientState,
    ServerEvent,
    ServerState,
)

__all__ = [
    "CLIENT_TRANSITIONS",
    "PROTOCOL_VERSION",
    "SERVER_TRANSITIONS",
    "STAGE_LABELS",
    "THREAT_MODELS",
    "AdvertiseKeys",
    "ClientEvent",
    "ClientPolicy",
    "ClientProtocol",
    "ClientState",
    "ConsistencyCheck",
    "ConsistencyRequest",
    "DeterministicRandomness",
    "DropoutPlan",
    "InsecureThresholdError",
    "MaskedInput",
    "MaskedInputRequest",
    "Message",
    "NamedSumResult",
    "PeerKeys",
    "RandomSource",
    "RoundResult",
    "SecAggConfig",
    "ServerEvent",
    "ServerProtocol",
    "ServerState",
    "ShareKeys",
    "ShareKeysRequest",
    "ShareKind",
    "SimulatedIdentities",
    "SimulatedTransport",
    "Stage",
    "SystemRandomness",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode",
    "drive_round",
    "neighbours",
    "required_threshold",
    "run_round",
    "secure_sum_named",
    "simulation_config",
]
