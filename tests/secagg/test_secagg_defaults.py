"""Issue 12 hole 5: safe defaults. The library's defaults are the malicious-server threat model
and a real client policy; semi-honest is an explicit opt-in, bound into the session id and
recorded in ``to_dict``.

The attack of the issue, reproduced end to end: n = 7 and t = 2 (the semi-honest bound). A
split-view server shows survivor set U3 ∋ 7 to clients {1, 2, 3} and U3 ∖ {7} to {4, 5, 6}:
each group signs its own view (≥ t = 2 confirming neighbours each), so the first group reveals
its shares of b_7 and the second its shares of s_7^SK — and the server unmasks client 7's input
exactly. The malicious bound (t > n/2, Bonawitz et al. 2017 §6.2) makes the two groups overlap,
so no honest client reveals both shares of 7.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from securefl.crypto import keys, prg, shamir
from securefl.errors import ConfigurationError, UnsafeRequestError
from securefl.secagg import (
    ClientPolicy,
    ClientProtocol,
    ConsistencyCheck,
    ConsistencyRequest,
    InsecureThresholdError,
    MaskedInput,
    SecAggConfig,
    ServerProtocol,
    ShareKind,
    UnmaskRequest,
    UnmaskResponse,
)
from securefl.secagg.client import mask_sign
from securefl.secagg.derive import pairwise_mask_key, self_mask_key
from securefl.vocabulary import ThreatModel

N, VICTIM, GROUP_A, GROUP_B = 7, 7, (1, 2, 3), (4, 5, 6)
MODEL = hashlib.sha256(b"defaults test model").digest()


def _identities() -> dict[int, keys.Ed25519PrivateKey]:
    return {u: keys.generate_ed25519() for u in range(1, N + 1)}


def _public(ids: dict[int, keys.Ed25519PrivateKey]) -> dict[int, bytes]:
    return {u: keys.ed25519_public_bytes(k) for u, k in ids.items()}


def split_view_attack(
    config: SecAggConfig,
    identities: dict[int, keys.Ed25519PrivateKey],
    policy: ClientPolicy | None,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Run the split-view server against honest clients; (victim's input, what it recovered)."""
    server = ServerProtocol(config)
    clients = {u: ClientProtocol(config, u, k, policy=policy) for u, k in identities.items()}
    inputs = {u: np.full(config.dimension, 1000 + u, dtype=np.uint32) for u in clients}
    for u, c in clients.items():
        server.receive(c.advertise_keys(), transport_sender=u)
    out = server.close_stage()
    for u, m in out.items():
        server.receive(clients[u].handle(m), transport_sender=u)
    out = server.close_stage()
    victim_masked = None
    for u, m in out.items():
        reply = clients[u].handle(m, inputs[u])
        assert isinstance(reply, MaskedInput)
        if u == VICTIM:
            victim_masked = reply.values.copy()
        server.receive(reply, transport_sender=u)
    server.close_stage()
    assert victim_masked is not None
    sid, rnd = config.session_id, config.round_index
    views = {u: tuple(range(1, N + 1)) for u in GROUP_A}
    views |= {u: tuple(v for v in range(1, N + 1) if v != VICTIM) for u in GROUP_B}
    sigs: dict[int, bytes] = {}
    for u, view in views.items():
        reply = clients[u].handle(ConsistencyRequest(sid, rnd, 0, u, survivors=view))
        assert isinstance(reply, ConsistencyCheck)
        sigs[u] = reply.signature
    shares: dict[ShareKind, dict[int, bytes]] = {k: {} for k in ShareKind}
    for group, alive, dead in ((GROUP_A, (VICTIM,), ()), (GROUP_B, (), (VICTIM,))):
        for u in group:
            others = tuple((v, sigs[v]) for v in group if v != u)
            req = UnmaskRequest(sid, rnd, 0, u, signatures=others, alive=alive, dead=dead)
            reply = clients[u].handle(req)
            assert isinstance(reply, UnmaskResponse)
            for v, kind, share in reply.shares:
                shares[kind][u] = share
                assert v == VICTIM
    seed = shamir.reconstruct(shares[ShareKind.SELF_MASK_SEED], config.threshold)
    mask_sk = keys.x25519_private_from_bytes(
        shamir.reconstruct(shares[ShareKind.MASK_KEY], config.threshold)
    )
    pairs = [(self_mask_key(config, seed, VICTIM), -1)]
    for v in range(1, N):
        pk = server._adverts[v].mask_pk
        key = pairwise_mask_key(config, keys.exchange(mask_sk, pk), VICTIM, v)
        pairs.append((key, -mask_sign(VICTIM, v)))
    prg.add_masks(victim_masked, pairs, bits=config.bits)
    return inputs[VICTIM], victim_masked


def _semi_honest_config(ids: dict[int, keys.Ed25519PrivateKey]) -> SecAggConfig:
    """t = 2 over the cohort: accepted only under the explicit semi-honest opt-in."""
    return SecAggConfig.create(
        _public(ids),
        threshold=2,
        bits=16,
        dimension=4,
        model_digest=MODEL,
        threat_model=ThreatModel.SEMI_HONEST,
    )


def test_defaults_refuse_the_split_view_attack_of_the_issue() -> None:
    """Old code: SecAggConfig defaulted to semi-honest (t = 2 accepted) and clients to no
    policy, so the attack below recovered the victim's input. Now both refuse."""
    ids = _identities()
    with pytest.raises(InsecureThresholdError):  # default threat model: malicious
        SecAggConfig.create(_public(ids), threshold=2, bits=16, dimension=4, model_digest=MODEL)
    # a server that hands out a semi-honest config is refused by the clients' default policy
    weak = _semi_honest_config(ids)
    with pytest.raises(UnsafeRequestError, match="threshold"):
        ClientProtocol(weak, 1, ids[1])
    with pytest.raises(UnsafeRequestError):
        split_view_attack(weak, ids, policy=None)


def test_the_attack_is_real_under_the_explicit_semi_honest_opt_in() -> None:
    """The same attack succeeds when both sides opt in to semi-honest — so the test above is
    not vacuous, and the opt-in is exactly as weak as the spec says (§1)."""
    ids = _identities()
    weak = _semi_honest_config(ids)
    opt_in = ClientPolicy(threat_model=ThreatModel.SEMI_HONEST, min_cohort=3)
    truth, recovered = split_view_attack(weak, ids, policy=opt_in)
    np.testing.assert_array_equal(recovered, truth)


def test_malicious_default_with_its_threshold_defeats_the_split_view() -> None:
    """Default config with the smallest admissible t (4 for n = 7): one of the two groups
    has too few confirming neighbours, and the client refuses to unmask."""
    ids = _identities()
    cfg = SecAggConfig.create(_public(ids), threshold=4, bits=16, dimension=4, model_digest=MODEL)
    assert cfg.threat_model is ThreatModel.MALICIOUS
    with pytest.raises(UnsafeRequestError, match="fewer than threshold"):
        split_view_attack(cfg, ids, policy=None)


def test_defaults_are_the_strong_ones_and_recorded() -> None:
    ids = _identities()
    cfg = SecAggConfig.create(_public(ids), threshold=4, bits=16, dimension=4, model_digest=MODEL)
    weak = SecAggConfig.create(
        _public(ids), threshold=4, bits=16, dimension=4, model_digest=MODEL,
        threat_model="semi-honest",
    )  # fmt: skip
    assert cfg.to_dict()["threat_model"] == "malicious"
    assert weak.to_dict()["threat_model"] == "semi-honest"
    assert weak.session_id != cfg.session_id  # the opt-in is bound into the session
    policy = ClientPolicy()
    assert policy.threat_model is ThreatModel.MALICIOUS
    assert policy.min_cohort >= 3
    assert policy.to_dict()["threat_model"] == "malicious"
    # the old spellings still parse
    assert SecAggConfig.create(
        _public(ids), threshold=4, bits=16, dimension=4, model_digest=MODEL,
        threat_model="semi-malicious",
    ).session_id == cfg.session_id  # fmt: skip
    # a malicious default without a model hash is refused (Pasquini et al. 2022)
    with pytest.raises(ConfigurationError) as info:
        SecAggConfig.create(_public(ids), threshold=4, bits=16, dimension=4)
    assert info.value.parameter == "model_digest"
