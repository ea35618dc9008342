"""REFERENCE.md "Known attacks" and spec §5/§7, beyond test_secagg_refusals.py: model
inconsistency (Pasquini et al. 2022), refusal C15, hostile keys, and fuzzing of every entry
point that takes bytes from the network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import keys, prg
from securefl.crypto.errors import SignatureError
from securefl.errors import (
    MalformedMessageError,
    RemoteProtocolError,
    SecureFLError,
    UnsafeRequestError,
)
from securefl.secagg import (
    AdvertiseKeys,
    ClientProtocol,
    ClientState,
    Message,
    SecAggConfig,
    ServerProtocol,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
    decode,
    simulation_config,
)
from securefl.secagg.derive import pairwise_mask_key, self_mask_key
from securefl.secagg.messages import HEADER, HEADER_BYTES, WIRE_VERSION, max_message_bytes

from .conftest import Harness, make_harness

# ------------------------------------------------------------------ model inconsistency


def _split_view(h: Harness) -> tuple[SecAggConfig, ClientProtocol]:
    """Client 1 is given another global-model digest than everyone else (same cohort/keys)."""
    other = dataclasses.replace(h.config, model_digest=b"\x07" * 32)
    assert other.session_id != h.config.session_id
    return other, ClientProtocol(other, 1, h.identities[1])


def test_model_inconsistency_relay_is_refused() -> None:
    """A malicious server relays the honest round to a victim holding another model, rewriting
    every header so session checks pass: the peers' key signatures bind the session id, so the
    victim refuses before it shares or masks anything (the round cannot isolate its input)."""
    h = make_harness(n=5, t=3)
    _other, victim = _split_view(h)
    h.clients[1] = victim
    for c in h.clients.values():
        advert = c.advertise_keys()
        if c is victim:  # the server rewrites the victim's header into the main session
            advert = dataclasses.replace(advert, session_id=h.config.session_id)
        h.server.receive(advert, transport_sender=advert.sender)
    # the victim's own key signature is over the other session: an honest server drops it
    assert 1 in h.server.rejected and "SignatureError" in h.server.rejected[1]
    # a malicious server instead forwards the others' keys with the victim's session id
    h2 = make_harness(n=5, t=3)
    h2.advertise()
    other2, victim2 = _split_view(h2)
    victim2.advertise_keys()
    req = h2.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    with pytest.raises(SignatureError):
        victim2.share_keys(dataclasses.replace(req, session_id=other2.session_id))
    assert victim2.state is ClientState.FAILED


def test_model_inconsistency_masks_do_not_cancel() -> None:
    """Even with the signatures out of the way, two views derive unrelated mask keys: the sum of
    a pair's masks (which cancels within one view) is uniform garbage across views."""
    ids = [1, 2, 3]
    a = simulation_config(ids, threshold=2, bits=32, dimension=4096, model_digest=b"\x08" * 32)
    b = dataclasses.replace(a, model_digest=b"\x09" * 32)
    sk1, sk2 = keys.generate_x25519(), keys.generate_x25519()
    shared = keys.exchange(sk1, keys.x25519_public_bytes(sk2))
    for view_1, view_2, cancels in ((a, a, True), (a, b, False)):
        acc = np.zeros(4096, dtype=np.uint32)
        prg.add_masks(
            acc,
            [
                (pairwise_mask_key(view_1, shared, 1, 2), +1),
                (pairwise_mask_key(view_2, shared, 2, 1), -1),
            ],
        )
        assert (not acc.any()) is cancels
    assert self_mask_key(a, bytes(32), 1) != self_mask_key(b, bytes(32), 1)


# ------------------------------------------------------------------ refusal C15


def test_refuses_dead_peer_it_holds_no_share_of() -> None:
    """6 never shares keys, 5 drops after sharing: asking client 1 for the mask-key share of 6
    (which it never received) is refused, not answered with garbage."""
    h = make_harness(n=6, t=3)
    h.advertise()
    h.step(skip=frozenset({6}))
    h.step(skip=frozenset({5}))
    h.step()
    req = h.outbox[1]
    assert isinstance(req, UnmaskRequest) and req.dead == (5,)
    with pytest.raises(RemoteProtocolError, match="no shares"):
        h.clients[1].unmask(dataclasses.replace(req, dead=(5, 6)))
    assert h.clients[1].state is ClientState.FAILED


def test_unmask_refused_for_non_neighbour_signers() -> None:
    h = make_harness(n=10, t=3, degree=4)
    h.run_to(Stage.UNMASK)
    u = min(h.outbox)
    req = h.outbox[u]
    assert isinstance(req, UnmaskRequest)
    stranger = next(v for v in h.config.client_ids if v != u and v not in h.clients[u].neighbours)
    forged = tuple(sorted((*req.signatures, (stranger, bytes(64)))))
    with pytest.raises(UnsafeRequestError, match="not a surviving neighbour"):
        h.clients[u].unmask(dataclasses.replace(req, signatures=forged))


# ------------------------------------------------------------------ hostile keys


LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.mark.parametrize("bad", ["low-order", "zero", "reused", "same"])
def test_server_drops_hostile_key_advertisements(bad: str) -> None:
    """A client advertising a low-order or someone else's key would make its honest neighbours
    refuse the round; the server drops it at stage 0 instead (signature still valid)."""
    h = make_harness(n=5, t=3)
    adverts = {u: c.advertise_keys() for u, c in h.clients.items()}
    sk = h.identities[5]
    a = adverts[5]
    c_pk = {
        "low-order": LOW_ORDER,
        "zero": bytes(32),
        "reused": adverts[1].cipher_pk,
        "same": a.mask_pk,
    }[bad]
    from securefl.secagg.derive import advertise_transcript

    sig = keys.sign(sk, advertise_transcript(h.config, 5, c_pk, a.mask_pk))
    adverts[5] = dataclasses.replace(a, cipher_pk=c_pk, signature=sig)
    for m in adverts.values():
        h.server.receive(m, transport_sender=m.sender)
    assert set(h.server.rejected) == {5}
    out = h.server.close_stage()
    assert set(out) == {1, 2, 3, 4}


def test_client_refuses_low_order_peer_key() -> None:
    h = make_harness(n=5, t=3)
    h.advertise()
    req = h.outbox[1]
    assert isinstance(req, ShareKeysRequest)
    p = req.peers[0]
    # re-signing needs the peer's identity key: a server cannot do it, a corrupt peer can
    from securefl.secagg.derive import advertise_transcript

    sig = keys.sign(
        h.identities[p.client_id], advertise_transcript(h.config, p.client_id, LOW_ORDER, p.mask_pk)
    )
    bad = dataclasses.replace(p, cipher_pk=LOW_ORDER, signature=sig)
    with pytest.raises(RemoteProtocolError):
        h.clients[1].share_keys(dataclasses.replace(req, peers=(bad, *req.peers[1:])))


# ------------------------------------------------------------------ fuzzing


@pytest.fixture(scope="module")
def staged() -> dict[Stage, tuple[Harness, list[bytes]]]:
    """For each stage: a harness whose server collects that stage, and the honest client
    messages of that stage (delivered to a copy only, so the server is still collecting)."""
    out: dict[Stage, tuple[Harness, list[bytes]]] = {}
    for stage in Stage:
        h = make_harness(n=5, t=3, bits=12, dimension=6)
        if stage is Stage.ADVERTISE_KEYS:
            msgs = [c.advertise_keys().encode() for c in h.clients.values()]
        else:
            h.run_to(stage)
            values = {u: h.inputs[u] if stage is Stage.MASKED_INPUT else None for u in h.outbox}
            msgs = [h.clients[u].handle(m, values[u]).encode() for u, m in h.outbox.items()]
        out[stage] = (h, msgs)
    return out


@given(data=st.data())
def test_server_receive_bytes_never_raises(
    staged: dict[Stage, tuple[Harness, list[bytes]]], data: st.DataObject
) -> None:
    """Arbitrary bytes, or a mutated/truncated/extended honest message of the stage, from any
    transport sender: ``receive_bytes`` returns a bool and never raises."""
    stage = data.draw(st.sampled_from(list(Stage)))
    h, msgs = staged[stage]
    kind = data.draw(st.sampled_from(["random", "mutate", "cut", "extend", "header"]))
    original = data.draw(st.sampled_from(msgs))
    if kind == "random":
        blob = data.draw(st.binary(max_size=400))
    elif kind == "mutate":
        pos = data.draw(st.integers(0, len(original) - 1))
        blob = original[:pos] + bytes([original[pos] ^ data.draw(st.integers(1, 255))])
        blob += original[pos + 1 :]
    elif kind == "cut":
        blob = original[: data.draw(st.integers(0, len(original) - 1))]
    elif kind == "extend":
        blob = original + data.draw(st.binary(min_size=1, max_size=50))
    else:  # a valid header of any type followed by random body bytes
        body = data.draw(st.binary(max_size=300))
        mtype = data.draw(st.integers(1, 9))
        blob = HEADER.pack(
            b"SFSA", WIRE_VERSION, mtype, data.draw(st.integers(0, 4)), 0, h.config.session_id, 0,
            data.draw(st.sampled_from([0, 1, 2])), data.draw(st.sampled_from([0, 1])), len(body)
        ) + body  # fmt: skip
    sender = data.draw(st.sampled_from([1, 2, 3, 4, 5, 6, 0]))
    server = ServerProtocol(h.config)  # fresh stage-0 server: must survive anything too
    assert isinstance(server.receive_bytes(blob, transport_sender=sender), bool)
    accepted = h.server.receive_bytes(blob, transport_sender=sender)
    assert isinstance(accepted, bool)
    if accepted:  # only ever an honest-looking message of this stage from its own sender
        assert decode(blob, config=h.config).STAGE is stage


@given(data=st.data())
def test_client_receive_bytes_raises_only_typed_errors(data: st.DataObject) -> None:
    """A mutated server message reaching a client: a typed SecureFLError or a valid reply."""
    h = make_harness(n=4, t=2, bits=8, dimension=3)
    stage = data.draw(st.sampled_from([s for s in Stage if s is not Stage.ADVERTISE_KEYS]))
    h.run_to(stage)
    original = h.outbox[1].encode()
    pos = data.draw(st.integers(0, len(original) - 1))
    blob = original[:pos] + bytes([original[pos] ^ data.draw(st.integers(1, 255))])
    blob += original[pos + 1 :]
    values = h.inputs[1] if stage is Stage.MASKED_INPUT else None
    try:
        reply = h.clients[1].receive_bytes(blob, values)
    except SecureFLError:
        assert h.clients[1].state is ClientState.FAILED
        return
    assert isinstance(decode(reply, config=h.config), Message)


@pytest.mark.parametrize("junk", [None, 12, "SFSA", 10**12, [1, 2], 3.5])
def test_decode_rejects_non_bytes(junk: object) -> None:
    with pytest.raises(MalformedMessageError, match="must be bytes"):
        decode(junk)  # type: ignore[arg-type]


def test_size_limit_checked_before_parsing() -> None:
    cfg = simulation_config(
        [1, 2, 3], threshold=2, bits=16, dimension=10, model_digest=b"\x08" * 32
    )
    limit = max_message_bytes(cfg)
    assert limit < 2000
    advert = AdvertiseKeys(cfg.session_id, 0, 1, 0, bytes(32), bytes(32), bytes(64)).encode()
    with pytest.raises(MalformedMessageError, match="exceeds"):
        decode(advert + bytes(limit), config=cfg)
    with pytest.raises(MalformedMessageError, match="exceeds"):
        decode(memoryview(bytearray(limit + 1)), config=cfg)
    assert len(advert) == HEADER_BYTES + 128


def test_confirmations_cannot_be_replayed_into_a_rerun_of_the_same_session() -> None:
    """A server re-runs a round with the same config (same session id, same U3). Last run's
    consistency signatures over that U3 must not verify now: they bind the signer's ephemeral
    keys of that run (spec §7 stage 3)."""
    first = make_harness(n=5, t=3)
    first.run_to(Stage.UNMASK)
    old = first.outbox[1]
    assert isinstance(old, UnmaskRequest)
    rerun = Harness(first.config, first.identities)
    rerun.run_to(Stage.UNMASK)
    new = rerun.outbox[1]
    assert isinstance(new, UnmaskRequest) and new.session_id == old.session_id
    with pytest.raises(SignatureError):
        rerun.clients[1].unmask(dataclasses.replace(new, signatures=old.signatures))
    assert len(rerun.clients[2].unmask(rerun.outbox[2]).shares) == 4  # type: ignore[arg-type]
