"""An honest client refuses a malicious server's requests (spec §7), and the server survives
malformed client messages. Each test forges one request inside an otherwise honest round."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from securefl.crypto.errors import SignatureError
from securefl.errors import (
    LocalProtocolError,
    ReplayError,
    UnsafeRequestError,
)
from securefl.secagg import (
    ClientState,
    ConsistencyRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    ShareKind,
    Stage,
    UnmaskRequest,
    simulation_config,
)

from .conftest import Harness

Make = Callable[..., Harness]


def _unmask_setup(make: Make) -> tuple[Harness, int, UnmaskRequest]:
    """n=6 complete graph, t=3; client 6 drops after sharing (dead), request for client 1."""
    h = make(n=6, t=3)
    h.advertise()
    h.step()  # share keys
    h.step(skip=frozenset({6}))  # masked input: 6 drops
    h.step()  # consistency
    req = h.outbox[1]
    assert isinstance(req, UnmaskRequest) and req.dead == (6,)
    return h, 1, req


def test_honest_unmask_reveals_one_share_per_peer(harness: Make) -> None:
    h, u, req = _unmask_setup(harness)
    resp = h.clients[u].unmask(req)
    kinds = {v: k for v, k, _ in resp.shares}
    assert kinds == {
        2: ShareKind.SELF_MASK_SEED,
        3: ShareKind.SELF_MASK_SEED,
        4: ShareKind.SELF_MASK_SEED,
        5: ShareKind.SELF_MASK_SEED,
        6: ShareKind.MASK_KEY,
    }


@pytest.mark.parametrize(
    ("alive", "dead", "match"),
    [
        ((2, 3, 4, 5), (5, 6), "both alive and dead"),
        ((2, 3, 3, 4), (6,), "duplicate"),
        ((2, 3, 4), (6, 6), "duplicate"),
        ((2, 3, 4, 5, 6), (), "outside the signed survivor set"),
        ((2, 3), (4, 6), "signed survivor set"),
    ],
)
def test_refuses_unsafe_alive_dead_lists(
    harness: Make, alive: tuple[int, ...], dead: tuple[int, ...], match: str
) -> None:
    h, u, req = _unmask_setup(harness)
    forged = dataclasses.replace(req, alive=alive, dead=dead)
    with pytest.raises(UnsafeRequestError, match=match):
        h.clients[u].unmask(forged)
    assert h.clients[u].state is ClientState.FAILED


def test_refuses_both_shares_across_requests(harness: Make) -> None:
    h, u, req = _unmask_setup(harness)
    h.clients[u].unmask(dataclasses.replace(req, alive=(2, 3), dead=()))
    again = h.clients[u].unmask(dataclasses.replace(req, alive=(2, 3), dead=()))  # same: fine
    assert len(again.shares) == 2
    with pytest.raises(UnsafeRequestError):
        h.clients[u].unmask(dataclasses.replace(req, alive=(4,), dead=(2,)))


def test_refuses_dead_peer_revealed_alive_later(harness: Make) -> None:
    h, u, req = _unmask_setup(harness)
    h.clients[u].unmask(dataclasses.replace(req, alive=(), dead=(6,)))
    with pytest.raises(UnsafeRequestError):
        h.clients[u].unmask(dataclasses.replace(req, alive=(6,), dead=()))


def test_refuses_signatures_over_another_survivor_set(harness: Make) -> None:
    h, u, req = _unmask_setup(harness)
    other = h.outbox[2]
    assert isinstance(other, UnmaskRequest)
    # the signatures are genuine but the client's own signature was over U3 = {1..5}: replace
    # one with a signature by 2 over a different message → must fail verification
    forged_sigs = tuple((v, sig if v != 3 else bytes(64)) for v, sig in req.signatures)
    with pytest.raises(SignatureError):
        h.clients[u].unmask(dataclasses.replace(req, signatures=forged_sigs))


def test_refuses_too_few_confirmations(harness: Make) -> None:
    h, u, req = _unmask_setup(harness)
    with pytest.raises(UnsafeRequestError, match="fewer than threshold"):
        h.clients[u].unmask(dataclasses.replace(req, signatures=req.signatures[:2]))


def test_refuses_survivor_list_omitting_self_or_too_small(harness: Make) -> None:
    h = harness(n=6, t=3, min_cohort=5)
    h.run_to(Stage.CONSISTENCY_CHECK)
    req = h.outbox[1]
    assert isinstance(req, ConsistencyRequest)
    with pytest.raises(UnsafeRequestError, match="omits us"):
        h.clients[1].consistency_check(dataclasses.replace(req, survivors=(2, 3, 4, 5, 6)))
    with pytest.raises(UnsafeRequestError, match="minimum cohort"):
        h.clients[2].consistency_check(
            dataclasses.replace(req, recipient=2, survivors=(1, 2, 3, 4))
        )
    with pytest.raises(UnsafeRequestError, match="duplicate"):
        h.clients[3].consistency_check(
            dataclasses.replace(req, recipient=3, survivors=(1, 2, 3, 3, 4, 5))
        )


def test_refuses_survivor_it_never_saw(harness: Make) -> None:
    h = harness(n=6, t=3)
    h.advertise()
    h.step(skip=frozenset({6}))  # 6 never shares keys
    h.step()
    req = h.outbox[1]
    assert isinstance(req, ConsistencyRequest) and 6 not in req.survivors
    with pytest.raises(UnsafeRequestError, match="never shared keys"):
        h.clients[1].consistency_check(dataclasses.replace(req, survivors=(1, 2, 3, 4, 5, 6)))


def test_refuses_low_threshold_and_small_neighbourhood(harness: Make) -> None:
    h = harness(n=6, t=3)
    h.advertise()
    req = h.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    with pytest.raises(UnsafeRequestError, match="below the configured minimum"):
        h.clients[1].share_keys(dataclasses.replace(req, threshold=2))
    with pytest.raises(UnsafeRequestError, match="fewer than threshold"):
        h.clients[2].share_keys(dataclasses.replace(h.outbox[2], peers=h.outbox[2].peers[:2]))  # type: ignore[attr-defined]


def test_refuses_forged_or_reused_keys(harness: Make) -> None:
    h = harness(n=6, t=3)
    h.advertise()
    req = h.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    p = req.peers[0]
    swapped = dataclasses.replace(p, mask_pk=req.peers[1].mask_pk)
    with pytest.raises(SignatureError):
        h.clients[1].share_keys(dataclasses.replace(req, peers=(swapped, *req.peers[1:])))


def test_refuses_fewer_ciphertexts_than_threshold(harness: Make) -> None:
    h = harness(n=6, t=3)
    h.advertise()
    h.step()
    req = h.outbox[1]
    assert isinstance(req, MaskedInputRequest)
    with pytest.raises(UnsafeRequestError, match="fewer than threshold"):
        h.clients[1].masked_input(
            dataclasses.replace(req, ciphertexts=req.ciphertexts[:2]), h.inputs[1]
        )


def test_replay_from_other_session_round_or_stage(harness: Make) -> None:
    h = harness(n=5, t=3)
    h.advertise()
    req = h.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    with pytest.raises(ReplayError, match="another session"):
        h.clients[1].share_keys(dataclasses.replace(req, session_id=bytes(32)))
    with pytest.raises(ReplayError, match="round"):
        h.clients[2].share_keys(dataclasses.replace(req, recipient=2, round_index=1))
    with pytest.raises(ReplayError, match="addressed"):
        h.clients[3].share_keys(req)  # meant for client 1
    # a message of the previous round, replayed into the next round's client
    nxt = harness(n=5, t=3, round_index=1)
    nxt.advertise()
    with pytest.raises(ReplayError):
        nxt.clients[4].handle(dataclasses.replace(h.outbox[4], recipient=4))
    # a message of a later stage while expecting share keys
    h2 = harness(n=5, t=3)
    h2.advertise()
    stale = ConsistencyRequest(h2.config.session_id, 0, 0, 1, survivors=(1, 2, 3, 4, 5))
    with pytest.raises(ReplayError, match="expecting stage SHARE_KEYS"):
        h2.clients[1].handle(stale)


def test_wire_replay_from_other_round_rejected(harness: Make) -> None:
    h = harness(n=5, t=3)
    h.advertise()
    data = h.outbox[1].encode()
    later = harness(n=5, t=3, round_index=7)
    later.advertise()
    with pytest.raises(ReplayError):
        later.clients[1].receive_bytes(data)


def test_out_of_order_calls_are_local_errors(harness: Make) -> None:
    h = harness(n=5, t=3)
    c = h.clients[1]
    with pytest.raises(LocalProtocolError):
        c.consistency_check(ConsistencyRequest(h.config.session_id, 0, 0, 1, survivors=()))
    c.advertise_keys()
    with pytest.raises(LocalProtocolError):
        c.advertise_keys()
    with pytest.raises(LocalProtocolError):
        c.unmask(UnmaskRequest(h.config.session_id, 0, 0, 1, signatures=(), alive=(), dead=()))


def test_server_drops_malformed_clients(harness: Make) -> None:
    h = harness(n=8, t=3)
    server = h.server
    for u, c in h.clients.items():
        data = c.advertise_keys().encode()
        if u == 2:
            data = data[:-1]  # truncated
        if u == 3:
            data = data[:10] + b"\x00" + data[11:]  # garbage in the session id is fine here ...
        if u == 4:
            data = b"garbage"
        assert server.receive_bytes(data, transport_sender=u) is (u not in (2, 3, 4))
    assert set(server.rejected) == {2, 4}
    assert "malformed" in server.rejected[2] and "malformed" in server.rejected[4]
    # a message of another session may be a replay: ignored, its sender not dropped (§6.1)
    assert "another session" in server.ignored[3]
    out = server.close_stage()
    assert set(out) == {1, 5, 6, 7, 8}
    # garbage from a live client's own channel drops it with a reason
    assert not server.receive_bytes(b"SFSA" + bytes(100), transport_sender=5)
    assert 5 in server.rejected


def test_session_id_binds_model_and_layout() -> None:
    ids = [1, 2, 3]
    weak = {"threat_model": "semi-honest"}  # explicit: an all-zero model digest is allowed
    a = simulation_config(ids, threshold=2, bits=8, dimension=4, **weak)  # type: ignore[arg-type]
    keys_ = {u: k for u, k in zip(a.client_ids, a.identity_keys, strict=True)}
    from securefl.secagg import SecAggConfig

    base = SecAggConfig.create(keys_, threshold=2, bits=8, dimension=4, **weak)
    assert base.session_id == a.session_id
    for change in (
        {"model_digest": b"\x01" * 32},
        {"layout_digest": b"\x02" * 32},
        {"round_index": 1},
        {"threshold": 2, "min_cohort": 3},
        {"dimension": 5},
        {"nonce": b"x"},
    ):
        kw = {"threshold": 2, "bits": 8, "dimension": 4, **weak, **change}
        assert SecAggConfig.create(keys_, **kw).session_id != a.session_id  # type: ignore[arg-type]


def test_model_inconsistency_breaks_the_sum() -> None:
    """Pasquini et al.: a client given another model digest cannot complete a round with the
    others (its signatures and keys are bound to another session)."""
    from securefl.secagg import ClientProtocol, SecAggConfig, ServerProtocol, SimulatedIdentities

    ids = [1, 2, 3, 4]
    ident = SimulatedIdentities()
    a = simulation_config(
        ids, threshold=3, bits=16, dimension=3, model_digest=b"\x06" * 32, identities=ident
    )
    keys_ = dict(zip(a.client_ids, a.identity_keys, strict=True))
    b = SecAggConfig.create(keys_, threshold=3, bits=16, dimension=3, model_digest=b"\x07" * 32)
    server = ServerProtocol(a)
    victim = ClientProtocol(b, 1, ident[1])
    assert not server.receive(victim.advertise_keys(), transport_sender=1)
    assert "another session" in server.ignored[1]
