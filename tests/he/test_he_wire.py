"""Untrusted bytes: every malformed payload gets a typed error, never a crash."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.errors import (
    ConfigurationError,
    LocalProtocolError,
    MalformedMessageError,
    SecureFLError,
)
from securefl.he import (
    ContextMismatchError,
    HEClient,
    HEPreset,
    HEServer,
    InsecureParametersError,
    KeyHolder,
    MalformedCiphertextError,
    wire,
)
from securefl.he.context import pack_context, unpack_context

from .conftest import honest_parties, parse_envelope


@pytest.fixture(scope="module")
def setup(holders: dict[str, KeyHolder]) -> tuple[KeyHolder, HEClient, HEServer, bytes]:
    kh = holders["weighted"]
    tensors = {"a": np.linspace(-1, 1, 5000), "b": np.ones((2, 3))}
    client, server, update = honest_parties(kh, tensors, workers=1)
    return kh, client, server, update


def _header_len(update: bytes) -> int:
    name_len = update[6]
    pos = 7 + name_len + wire._FIXED.size
    lj_len = struct.unpack_from(">I", update, pos - 4)[0]
    pos += lj_len
    (count,) = struct.unpack_from(">I", update, pos)
    return pos + 4 + 4 * count


def test_valid_update_accepted(setup: tuple) -> None:
    kh, _, server, update = setup
    out = kh.decrypt(server.aggregate([update]))
    np.testing.assert_allclose(out["b"], np.ones((2, 3)), atol=1e-5)


@settings(max_examples=25)
@given(st.data())
def test_truncations_rejected(setup: tuple, data: st.DataObject) -> None:
    _, _, server, update = setup
    cut = data.draw(st.integers(0, len(update) - 1))
    with pytest.raises(MalformedCiphertextError):
        server.aggregate([update[:cut]])


def test_every_header_bit_flip_rejected(setup: tuple) -> None:
    """A flip anywhere in an update's header (incl. the layout JSON) is rejected: weight fields
    must be consistent with the flags (unit weight ⇔ no client-weight flag)."""
    _, _, server, update = setup
    for pos in range(_header_len(update)):
        for bit in (0, 3, 7):
            bad = bytearray(update)
            bad[pos] ^= 1 << bit
            with pytest.raises(MalformedCiphertextError):
                server.aggregate([bytes(bad)])


@settings(max_examples=20)
@given(st.data())
def test_payload_bit_flips_never_crash(setup: tuple, data: st.DataObject) -> None:
    """Flips inside ciphertext bytes: a typed error, or (no MAC in CKKS) a garbled sum."""
    _, _, server, update = setup
    start = _header_len(update)
    pos = data.draw(st.integers(start, len(update) - 1))
    bad = bytearray(update)
    bad[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        out = server.aggregate([bytes(bad)])
    except SecureFLError as exc:
        assert isinstance(exc, MalformedMessageError)
    else:
        assert isinstance(out, bytes)


def test_framing_and_seal_header_checked_before_tenseal(setup: tuple) -> None:
    _, _, server, update = setup
    start = _header_len(update)
    # first chunk: 0a 02 80 20 (sizes = [4096]) 12 <varint length> <SEAL header>
    assert update[start : start + 5] == bytes.fromhex("0a02802012")
    for offset, what in ((0, "sizes"), (3, "values"), (4, "ciphertext")):
        bad = bytearray(update)
        bad[start + offset] ^= 0x40
        with pytest.raises(MalformedCiphertextError, match=what):
            server.aggregate([bytes(bad)])
    _, pos = wire.read_varint(update, start + 5)
    bad = bytearray(update)
    bad[pos] ^= 0xFF  # SEAL magic
    with pytest.raises(MalformedCiphertextError, match="SEAL header"):
        server.aggregate([bytes(bad)])


def test_wrong_context_layout_kind_and_size(setup: tuple, holders: dict[str, KeyHolder]) -> None:
    kh, client, server, update = setup
    other = KeyHolder("weighted", workers=1)
    foreign = HEClient(other.public_context_bytes(), workers=1).encrypt({"a": np.zeros(5000)})
    with pytest.raises(ContextMismatchError, match="fingerprint"):
        server.aggregate([foreign])
    fast = HEClient(holders["fast"].public_context_bytes(), workers=1).encrypt({"a": np.zeros(3)})
    with pytest.raises(ContextMismatchError, match="preset"):
        server.aggregate([fast])
    other_layout = client.encrypt({"a": np.zeros(5001)})
    with pytest.raises(ContextMismatchError, match="layout"):
        server.aggregate([update, other_layout])
    agg = server.aggregate([update])
    with pytest.raises(MalformedCiphertextError, match="kind"):
        server.aggregate([agg])
    with pytest.raises(MalformedCiphertextError, match="kind"):
        kh.decrypt(update)
    big = client.encrypt({"a": np.zeros(2**16 + 1)})
    with pytest.raises(MalformedCiphertextError, match=r"exceeds|dimension"):
        server.aggregate([big])
    with pytest.raises(MalformedCiphertextError, match="exceeds"):
        server.aggregate([update + b"\x00" * (2**16 * 200)])
    with pytest.raises(MalformedCiphertextError):
        server.aggregate(["not bytes"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        server.aggregate([])


def test_wrong_level_chunk_caught_after_parsing(setup: tuple) -> None:
    """A valid one-prime aggregate chunk spliced into a two-prime update: SEAL accepts it (it
    is valid for the context), our post-parse level check does not."""
    kh, _, server, update = setup
    env = parse_envelope(kh, update, wire.KIND_UPDATE)
    agg = parse_envelope(kh, server.aggregate([update]), wire.KIND_AGGREGATE)
    spliced = wire.Envelope(**{**env.__dict__, "chunks": (agg.chunks[0], *env.chunks[1:])})
    with pytest.raises(MalformedCiphertextError, match="client 0, chunk 0: 1 primes, expected 2"):
        server.aggregate([spliced.pack()])


def test_lower_level_chunk_caught_by_level_check(holders: dict[str, KeyHolder]) -> None:
    """precise keeps 2 primes: a valid 1-prime ciphertext (made with TenSEAL directly and
    rescaled) passes SEAL's loader but not the level check on the sum."""
    kh = holders["precise"]
    client = HEClient(kh.public_context_bytes(), workers=1)
    update = client.encrypt({"a": np.zeros(4096)})
    vec = ts.ckks_vector(kh._ctx, [0.0] * 4096)
    vec.mul_(1.0)  # rescale: 2 primes → 1
    env = parse_envelope(kh, update, wire.KIND_UPDATE)
    spliced = wire.Envelope(**{**env.__dict__, "chunks": (vec.serialize(),)})
    server = HEServer(kh.server_context_bytes())
    with pytest.raises(MalformedCiphertextError, match="1 primes, expected 2"):
        server.aggregate([spliced.pack()])
    with pytest.raises(MalformedCiphertextError, match="1 primes, expected 2"):
        server.aggregate([update, spliced.pack()])


def test_session_rejects_bad_update_and_continues(setup: tuple) -> None:
    """Streaming aggregation: an update whose *last* chunk is bad (after earlier chunks parsed)
    is rejected whole; the running sum is intact and the round goes on without it."""
    kh, _, server, update = setup
    env = parse_envelope(kh, update, wire.KIND_UPDATE)
    one_prime = parse_envelope(kh, server.aggregate([update]), wire.KIND_AGGREGATE).chunks[-1]
    bad = wire.Envelope(**{**env.__dict__, "chunks": (*env.chunks[:-1], one_prime)}).pack()
    session = server.session()
    session.add(update)
    with pytest.raises(MalformedCiphertextError, match="chunk 1: 1 primes"):
        session.add(bad)
    with pytest.raises(MalformedCiphertextError):
        session.add(update[:-1000])
    session.add(update)
    assert session.count == 2
    out = kh.decrypt(session.finish())
    np.testing.assert_allclose(out["b"], 2 * np.ones((2, 3)), atol=1e-5)
    with pytest.raises(LocalProtocolError):
        session.add(update)


def test_insecure_parameters_refused_unless_overridden(holders: dict[str, KeyHolder]) -> None:
    kwargs = dict(
        name="custom",
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 60, 60, 60),
        scale_bits=40,
        max_abs_sum_bits=18,
        max_clients=10,
    )
    with pytest.raises(InsecureParametersError):
        HEPreset(**kwargs)  # type: ignore[arg-type]
    preset = HEPreset(**kwargs, allow_insecure=True)  # type: ignore[arg-type]
    assert preset.metadata()["insecure_override"] is True
    assert preset.metadata()["security_level"].startswith("BELOW")
    with pytest.raises(InsecureParametersError):
        KeyHolder(preset)  # SEAL itself enforces the HE Standard table
    ok = HEPreset(**{**kwargs, "coeff_mod_bit_sizes": (60, 40, 60)})  # type: ignore[arg-type]
    assert ok.metadata()["insecure_override"] is False
    # a received context claiming insecure parameters is refused by our side
    _, _, ts_bytes = unpack_context(holders["fast"].public_context_bytes(), allow_insecure=False)
    with pytest.raises(InsecureParametersError):
        HEClient(pack_context(preset, 1, ts_bytes))
    # ... and with the override it is still caught: the real parameters differ from the claim
    with pytest.raises(ContextMismatchError):
        HEClient(pack_context(preset, 1, ts_bytes), allow_insecure=True)


def test_context_envelope_malformed(holders: dict[str, KeyHolder]) -> None:
    good = holders["fast"].public_context_bytes()
    for bad in (b"", good[:3], b"XXXX" + good[4:], good[:-1], good[:4] + b"\x09" + good[5:]):
        with pytest.raises(MalformedCiphertextError):
            HEServer(bad)


def test_corrupted_aggregate_not_released(setup: tuple) -> None:
    """A payload flip that still parses decrypts to garbage (≈ uniform mod q): the key holder
    refuses to release it rather than returning nonsense. Scans flips until one parses."""
    kh, _, server, update = setup
    agg = server.aggregate([update])
    start = len(agg) - 40_000
    for pos in range(start, start + 400, 8):
        bad = bytearray(agg)
        bad[pos] ^= 0x10
        try:
            kh.decrypt(bytes(bad))
        except MalformedCiphertextError as exc:
            if "max |sum|" in str(exc):
                return
        else:
            raise AssertionError("a corrupted aggregate was released")
    raise AssertionError("no flip parsed; the test did not exercise the magnitude check")
