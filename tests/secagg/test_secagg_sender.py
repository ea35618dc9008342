"""Issue 12 hole 7: sender identity. The server attributes a message to the client its
transport authenticated, never to the header, and a message that may be a replay or a
re-delivery never evicts anyone (spec §6.1)."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from securefl.errors import ConfigurationError
from securefl.secagg import ServerProtocol, Stage

from .conftest import Harness, make_harness


def _finish(h: Harness) -> None:
    while h.stage is not None:
        h.step()


def _plain(h: Harness) -> np.ndarray:
    total = sum(h.inputs[u].astype(np.uint64) for u in h.server.survivors)
    return np.asarray(total) % (1 << h.config.bits)


def test_transport_sender_is_mandatory() -> None:
    for name in ("receive", "receive_bytes"):
        param = inspect.signature(getattr(ServerProtocol, name)).parameters["transport_sender"]
        assert param.default is inspect.Parameter.empty, name
    h = make_harness(n=5, t=3)
    msg = h.clients[1].advertise_keys()
    with pytest.raises(TypeError):
        h.server.receive(msg)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="transport_sender"):
        h.server.receive(msg, transport_sender=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", list(Stage))
def test_replayed_duplicate_keeps_the_genuine_message_and_the_client(stage: Stage) -> None:
    """A copy of client 2's genuine message delivered again (a network replay on its channel)
    at each stage: ignored; 2 stays in the round and its input is in the exact sum. The old
    server dropped 2 for the duplicate."""
    h = make_harness(n=6, t=4, threat_model="malicious")
    if stage is Stage.ADVERTISE_KEYS:
        for u, c in h.clients.items():
            m = c.advertise_keys()
            assert h.server.receive(m, transport_sender=u)
            if u == 2:
                assert not h.server.receive_bytes(m.encode(), transport_sender=2)
        h.outbox = h.server.close_stage()
        h.stage = Stage.SHARE_KEYS
    else:
        h.run_to(stage)
        for u, request in h.outbox.items():
            values = h.inputs[u] if stage is Stage.MASKED_INPUT else None
            reply = h.clients[u].handle(request, values)
            assert h.server.receive_bytes(reply.encode(), transport_sender=u)
            if u == 2:
                assert not h.server.receive_bytes(reply.encode(), transport_sender=2)
        h.outbox = h.server.close_stage()
        h.stage = Stage(stage + 1) if stage < Stage.UNMASK else None
    _finish(h)
    assert 2 not in h.server.rejected and 2 in h.server.ignored
    assert 2 in h.server.survivors
    np.testing.assert_array_equal(h.server.result, _plain(h))


@pytest.mark.parametrize("stage", list(Stage))
def test_rehead_message_naming_a_victim_drops_only_the_forger(stage: Stage) -> None:
    """Client 5 sends, from its own authenticated channel, client 2's message (or its own
    re-headed as 2's), before 2's genuine one: 5 is dropped, 2 is untouched."""
    h = make_harness(n=7, t=5, threat_model="malicious")
    if stage is Stage.ADVERTISE_KEYS:
        msgs = {u: c.advertise_keys() for u, c in h.clients.items()}
    else:
        h.run_to(stage)
        msgs = {
            u: h.clients[u].handle(r, h.inputs[u] if stage is Stage.MASKED_INPUT else None)
            for u, r in h.outbox.items()
        }
    assert not h.server.receive(msgs[2], transport_sender=5)  # 2's own message, replayed by 5
    forged = dataclasses.replace(msgs[5], sender=2)  # type: ignore[call-arg]
    assert not h.server.receive(forged, transport_sender=5)
    for u, m in msgs.items():
        assert h.server.receive(m, transport_sender=u) is (u != 5)
    h.outbox = h.server.close_stage()
    h.stage = Stage(stage + 1) if stage < Stage.UNMASK else None
    _finish(h)
    assert set(h.server.rejected) == {5} and "names sender 2" in h.server.rejected[5]
    assert 2 in h.server.survivors
    np.testing.assert_array_equal(h.server.result, _plain(h))


def test_replay_from_another_round_or_session_evicts_nobody() -> None:
    """Client 2's genuine messages from round 7 and from another session (a different model),
    delivered on 2's channel before its current one: ignored, 2 completes the round."""
    h = make_harness(n=6, t=4, threat_model="malicious")
    other_round = dataclasses.replace(h.clients[2].advertise_keys(), round_index=7)
    other_session = dataclasses.replace(other_round, session_id=bytes(32), round_index=0)
    h.clients[2] = type(h.clients[2])(h.config, 2, h.identities[2])
    for u, c in h.clients.items():
        if u == 2:
            assert not h.server.receive(other_round, transport_sender=2)
            assert not h.server.receive(other_session, transport_sender=2)
        assert h.server.receive(c.advertise_keys(), transport_sender=u)
    h.outbox = h.server.close_stage()
    h.stage = Stage.SHARE_KEYS
    # a stale stage-0 message during stage 1 is ignored too
    assert not h.server.receive(other_round, transport_sender=2)
    _finish(h)
    assert h.server.rejected == {} and "another session or round" in h.server.ignored[2]
    assert 2 in h.server.survivors


def test_malformed_bytes_from_own_channel_drop_the_sender_only_before_acceptance() -> None:
    """Garbage from a client's own channel is its fault (dropped) — unless its valid message
    of the stage is already in, which garbage can then neither remove nor double."""
    h = make_harness(n=6, t=4, threat_model="malicious")
    for u, c in h.clients.items():
        m = c.advertise_keys()
        if u == 3:
            assert not h.server.receive_bytes(b"garbage", transport_sender=3)
        assert h.server.receive(m, transport_sender=u) is (u != 3)
        if u == 4:
            assert not h.server.receive_bytes(m.encode()[:-1], transport_sender=4)
    assert set(h.server.rejected) == {3} and "malformed" in h.server.rejected[3]
    assert "malformed" in h.server.ignored[4]
    assert set(h.server.close_stage()) == {1, 2, 4, 5, 6}


def test_messages_from_unknown_or_finished_senders_are_ignored() -> None:
    h = make_harness(n=5, t=3)
    m = h.clients[1].advertise_keys()
    assert not h.server.receive(m, transport_sender=99)  # not in the cohort
    assert not h.server.receive(m, transport_sender=0)
    assert h.server.rejected == {} and h.server.ignored == {}
    assert h.server.ignored_count == 2
