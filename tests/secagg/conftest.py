"""Fixtures for the SecAgg tests: a step-by-step harness over the real client and server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from securefl.crypto import keys
from securefl.secagg import (
    ClientPolicy,
    ClientProtocol,
    Message,
    SecAggConfig,
    ServerProtocol,
    Stage,
    simulation_config,
)
from securefl.vocabulary import ThreatModel

#: The explicit semi-honest opt-in of tests written before the malicious default (issue 12
#: hole 5): their thresholds (t = 3 for n = 6, …) test protocol rules that do not depend on
#: the threat model, so they pass the weak model and a permissive client policy explicitly.
SEMI_HONEST_POLICY = ClientPolicy(threat_model=ThreatModel.SEMI_HONEST, min_cohort=0)


class Harness:
    """Drives an honest round stage by stage so a test can forge one server message."""

    def __init__(
        self,
        config: SecAggConfig,
        identities: dict[int, keys.Ed25519PrivateKey],
        policy: ClientPolicy | None = None,
    ):
        self.config = config
        self.identities = identities
        self.policy = policy
        self.server = ServerProtocol(config)
        self.clients = {
            u: ClientProtocol(config, u, identities[u], policy=policy) for u in config.client_ids
        }
        self.inputs = {u: np.full(config.dimension, u, dtype=np.uint32) for u in config.client_ids}
        self.outbox: dict[int, Message] = {}
        self.stage: Stage | None = None

    def advertise(self, skip: frozenset[int] = frozenset()) -> dict[int, Message]:
        for u, c in self.clients.items():
            if u not in skip:
                self.server.receive(c.advertise_keys(), transport_sender=u)
        self.outbox = self.server.close_stage()
        self.stage = Stage.SHARE_KEYS
        return self.outbox

    def step(self, skip: frozenset[int] = frozenset()) -> dict[int, Message]:
        """Answer the current outbox with every client not in ``skip``; close the stage."""
        for u, m in self.outbox.items():
            if u in skip:
                continue
            values = self.inputs[u] if self.stage is Stage.MASKED_INPUT else None
            self.server.receive(self.clients[u].handle(m, values), transport_sender=u)
        self.outbox = self.server.close_stage()
        assert self.stage is not None
        self.stage = Stage(self.stage + 1) if self.stage < Stage.UNMASK else None
        return self.outbox

    def run_to(self, stage: Stage) -> dict[int, Message]:
        """Advance until the outbox holds the requests of ``stage``."""
        self.advertise()
        while self.stage is not stage:
            self.step()
        return self.outbox


def make_harness(n: int = 6, t: int = 3, degree: int | None = None, **kw: Any) -> Harness:
    """A round of n clients; without ``threat_model`` the explicit semi-honest opt-in
    (config and :data:`SEMI_HONEST_POLICY`), with one the library's default client policy."""
    ids = list(range(1, n + 1))
    identities = {u: keys.generate_ed25519() for u in ids}
    policy = None if "threat_model" in kw else SEMI_HONEST_POLICY
    kw.setdefault("threat_model", ThreatModel.SEMI_HONEST)
    kw.setdefault("bits", 16)
    kw.setdefault("dimension", 8)
    kw.setdefault("model_digest", hashlib.sha256(b"test global model").digest())
    cfg = simulation_config(ids, threshold=t, degree=degree, identities=identities, **kw)
    return Harness(cfg, identities, policy)


@pytest.fixture
def harness() -> Callable[..., Harness]:
    return make_harness
