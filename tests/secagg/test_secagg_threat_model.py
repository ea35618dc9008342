"""Threat model (spec §1, §3, §7 C0): the threshold must meet the malicious-server bound of
Bell et al. 2020 (complete graph: t > (n + ⌊γn⌋)/2), enforced by the config and, whatever
config the server hands out, by each client's own ClientPolicy."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import keys
from securefl.errors import (
    AbortError,
    ConfigurationError,
    LocalProtocolError,
    UnsafeRequestError,
)
from securefl.secagg import (
    ClientPolicy,
    ClientProtocol,
    ClientState,
    ConsistencyRequest,
    DropoutPlan,
    InsecureThresholdError,
    SecAggConfig,
    ShareKeysRequest,
    SimulatedIdentities,
    UnmaskRequest,
    required_threshold,
    run_round,
    simulation_config,
)
from securefl.secagg.params import solve_parameters
from securefl.vocabulary import ThreatModel

from .conftest import make_harness

MODEL = b"\x01" * 32
KEYS = {u: keys.ed25519_public_bytes(keys.generate_ed25519()) for u in range(1, 41)}


def _cfg(n: int, t: int, **kw: Any) -> SecAggConfig:
    ids = {u: KEYS[u] for u in range(1, n + 1)}
    kw.setdefault("model_digest", MODEL)
    return SecAggConfig.create(ids, threshold=t, bits=16, dimension=4, **kw)


@given(n=st.integers(3, 40), gamma=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3]))
def test_complete_graph_malicious_bound_is_enforced(n: int, gamma: float) -> None:
    corrupt = math.floor(gamma * n + 1e-12)
    t_min = (n + corrupt) // 2 + 1  # smallest t > (n + A)/2
    if t_min > n - 1:
        with pytest.raises(InsecureThresholdError):
            _cfg(n, n - 1, threat_model="malicious", corrupt_fraction=gamma)
        return
    ok = _cfg(n, t_min, threat_model="malicious", corrupt_fraction=gamma)
    assert ok.min_safe_threshold == t_min
    if t_min - 1 >= 2:
        with pytest.raises(InsecureThresholdError) as info:
            _cfg(n, t_min - 1, threat_model="malicious", corrupt_fraction=gamma)
        assert info.value.parameter == "threshold"
        assert isinstance(info.value, ConfigurationError)
    # semi-honest (explicit opt-in): t > A suffices
    semi = max(corrupt + 1, 2)
    if semi <= n - 1:
        weak = _cfg(n, semi, corrupt_fraction=gamma, threat_model="semi-honest")
        assert weak.min_safe_threshold == semi
    # the default is the malicious bound
    assert _cfg(n, n - 1).threat_model is ThreatModel.MALICIOUS


@pytest.mark.parametrize(("n", "gamma"), [(40, 0.05), (40, 0.1), (30, 0.0)])
def test_sparse_bound_equals_the_solver(n: int, gamma: float) -> None:
    """SecAgg+: the config accepts exactly the solver's t (semi-malicious model) and not t − 1."""
    p = solve_parameters(n, gamma, 0.05, model="semi-malicious")
    assert not p.complete_graph
    kw = {"degree": p.k, "threat_model": "malicious", "corrupt_fraction": gamma}
    assert _cfg(n, p.t, **kw).min_safe_threshold == p.t
    if p.t - 1 >= 2:
        with pytest.raises(InsecureThresholdError):
            _cfg(n, p.t - 1, **kw)


@pytest.mark.parametrize(
    ("kw", "parameter"),
    [
        ({"threat_model": "honest-ish"}, "threat_model"),
        ({"corrupt_fraction": float("nan")}, "corrupt_fraction"),
        ({"corrupt_fraction": 1.0}, "corrupt_fraction"),
        ({"corrupt_fraction": -0.1}, "corrupt_fraction"),
        ({"security_bits": float("inf")}, "security_bits"),
        ({"security_bits": 0.5}, "security_bits"),
        ({"model_digest": "x" * 32}, "model_digest"),
    ],
)
def test_threat_parameters_validated(kw: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _cfg(6, 4, **kw)
    assert info.value.parameter == parameter
    with pytest.raises(ConfigurationError):
        ClientPolicy(**{k: v for k, v in kw.items() if k != "model_digest"} or {"min_cohort": -1})


def test_session_id_binds_the_threat_model() -> None:
    base = _cfg(6, 4)
    ids = {
        _cfg(6, 4, threat_model="semi-honest").session_id,
        _cfg(6, 4, corrupt_fraction=0.1).session_id,
        _cfg(6, 4, security_bits=64).session_id,
        base.session_id,
    }
    assert len(ids) == 4


def test_client_policy_refuses_a_weak_server_config() -> None:
    """The server hands out a semi-honest config with t = 3 of n = 6; a client that assumes a
    malicious server needs t ≥ 4 and refuses before sending anything."""
    ident = {u: keys.generate_ed25519() for u in range(1, 7)}
    weak = simulation_config(
        range(1, 7),
        threshold=3,
        bits=16,
        dimension=4,
        identities=ident,
        model_digest=MODEL,
        threat_model="semi-honest",
    )
    with pytest.raises(UnsafeRequestError, match="below this client's minimum 4"):
        ClientProtocol(weak, 1, ident[1], policy=ClientPolicy())
    with pytest.raises(UnsafeRequestError, match="below this client's minimum 4"):
        ClientProtocol(weak, 1, ident[1])  # no policy given: the default one
    with pytest.raises(UnsafeRequestError, match="minimum 5"):
        ClientProtocol(weak, 1, ident[1], policy=ClientPolicy(min_threshold=5))
    with pytest.raises(UnsafeRequestError):  # 3 of 6 corrupt: t > 3
        ClientProtocol(weak, 1, ident[1], policy=ClientPolicy("semi-honest", corrupt_fraction=0.5))
    ClientProtocol(weak, 1, ident[1], policy=ClientPolicy("semi-honest", corrupt_fraction=0.34))
    strong = dataclasses.replace(weak, threshold=4)
    c = ClientProtocol(strong, 1, ident[1], policy=ClientPolicy())
    assert c.min_threshold == 4


def test_share_request_below_policy_threshold_refused() -> None:
    h = make_harness(n=6, t=4)
    h.clients[1] = ClientProtocol(
        h.config, 1, h.identities[1], policy=ClientPolicy(min_threshold=4)
    )
    h.advertise()
    req = h.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    with pytest.raises(UnsafeRequestError, match="below the configured minimum 4"):
        h.clients[1].share_keys(dataclasses.replace(req, threshold=3))
    assert h.clients[1].state is ClientState.FAILED


def test_policy_min_cohort_blocks_signing_and_unmasking() -> None:
    """The config allows any cohort ≥ t, the client's policy demands all 6: after one dropout
    the client refuses to sign U3, and so can never be asked for unmask shares."""
    h = make_harness(n=6, t=4)
    h.clients[1] = ClientProtocol(h.config, 1, h.identities[1], policy=ClientPolicy(min_cohort=6))
    h.advertise()
    h.step()
    h.step(skip=frozenset({6}))
    req = h.outbox[1]
    assert isinstance(req, ConsistencyRequest) and len(req.survivors) == 5
    with pytest.raises(UnsafeRequestError, match="fewer than the minimum cohort 6"):
        h.clients[1].consistency_check(req)
    with pytest.raises(LocalProtocolError):
        h.clients[1].unmask(
            UnmaskRequest(h.config.session_id, 0, 0, 1, signatures=(), alive=(2,), dead=())
        )


def test_rounds_with_policies() -> None:
    ids = range(1, 9)
    ident = SimulatedIdentities()
    cfg = simulation_config(
        ids,
        threshold=5,
        bits=16,
        dimension=3,
        threat_model="malicious",
        corrupt_fraction=0.15,
        model_digest=MODEL,
        identities=ident,
    )
    assert cfg.min_safe_threshold == 5  # A = 1: t > 4.5
    inputs = {u: np.full(3, u, dtype=np.uint32) for u in ids}
    policy = ClientPolicy(corrupt_fraction=0.15, min_cohort=7)
    one = DropoutPlan(masked_input=frozenset({8}))
    res = run_round(inputs, cfg, dropouts=one, policy=policy, identities=ident)
    assert res.survivors == frozenset(range(1, 8))
    assert res.total.tolist() == [28, 28, 28]
    # 6 survivors keep ≥ t live neighbours, so the server carries on, but every client's
    # policy refuses to sign a survivor set below 7: the round aborts, nothing is unmasked
    with pytest.raises(AbortError, match="consistency check"):
        two = DropoutPlan(masked_input=frozenset({7, 8}))
        run_round(inputs, cfg, dropouts=two, policy=policy, identities=ident)


def test_malicious_rounds_must_bind_a_model_digest() -> None:
    with pytest.raises(ConfigurationError) as info:
        _cfg(6, 4, threat_model="malicious", model_digest=bytes(32))
    assert info.value.parameter == "model_digest"
    ident = {u: keys.generate_ed25519() for u in range(1, 7)}
    cfg = simulation_config(
        range(1, 7), threshold=4, bits=16, dimension=4, identities=ident, threat_model="semi-honest"
    )
    weak = ClientPolicy(threat_model="semi-honest", min_cohort=0)
    ClientProtocol(cfg, 1, ident[1], policy=weak)  # semi-honest on both sides: explicit opt-in
    with pytest.raises(UnsafeRequestError, match="global-model hash"):
        ClientProtocol(cfg, 1, ident[1], policy=ClientPolicy())
    with pytest.raises(UnsafeRequestError, match="global-model hash"):
        ClientProtocol(cfg, 1, ident[1])  # the default policy


def test_required_threshold_small_cohorts() -> None:
    assert required_threshold(3, 2, "malicious", 0.0, 40.0) == 2  # t > 1.5
    assert required_threshold(4, 3, "malicious", 0.0, 40.0) == 3
    with pytest.raises(ConfigurationError):
        required_threshold(4, 3, "malicious", True, 40.0)  # type: ignore[arg-type]
