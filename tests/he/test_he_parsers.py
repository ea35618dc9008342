"""Decoders facing a peer (issue 12 #8): every malformed layout or envelope is refused with a
typed error at the first party that parses it, and only ``SecureFLError`` ever escapes.

The hypothesis mutation tests here are local to the HE layer; the project-wide fuzz harness
(``benchmarks/fuzz_bench.py``) is built elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securefl.errors import SecureFLError
from securefl.he import HEClient, HEServer, KeyHolder, MalformedCiphertextError, wire
from securefl.tensors import TensorLayout, TensorSpec

from .conftest import honest_parties, parse_envelope


@pytest.fixture(scope="module")
def parties(holders: dict[str, KeyHolder]) -> tuple[KeyHolder, HEServer, bytes, bytes]:
    kh = holders["fast"]
    _, server, update = honest_parties(kh, {"a": np.linspace(-1, 1, 10), "b": np.ones((2, 3))})
    return kh, server, update, server.aggregate([update, update])


def _with_layout(env: wire.Envelope, specs: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """Re-label an envelope with a layout that no honest client makes (digest consistent)."""
    layout = TensorLayout(tuple(TensorSpec(n, s, "float64", "numpy") for n, s in specs))
    return dataclasses.replace(
        env, layout_json=layout.to_json(), layout_digest=layout.digest()
    ).pack()


BAD_LAYOUTS = {
    "negative shape": [("a", (-2, -8))],  # np.prod = 16: accepted by the server before
    "int64-wrapping shape": [("a", (2**32, 2**32)), ("b", (16,))],  # np.prod wrapped to 0
    "duplicate names": [("a", (8,)), ("a", (8,))],  # the key holder dropped half the values
    "zero-size tensor": [("a", (0,)), ("b", (16,))],
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_bad_layout_refused_by_server_and_key_holder(parties: tuple, case: str) -> None:
    kh, server, update, aggregate = parties
    bad_update = _with_layout(parse_envelope(kh, update, wire.KIND_UPDATE), BAD_LAYOUTS[case])
    with pytest.raises(MalformedCiphertextError, match="layout"):
        server.session().add(bad_update)
    bad_agg = _with_layout(parse_envelope(kh, aggregate, wire.KIND_AGGREGATE), BAD_LAYOUTS[case])
    with pytest.raises(MalformedCiphertextError, match="layout"):
        kh.decrypt_result(bad_agg)


@pytest.mark.parametrize(
    "text",
    ['[["a",[1e400],"float64","numpy"]]', "[" * 200_000 + "]" * 200_000],
    ids=["1e400", "deeply-nested"],
)
def test_layout_json_overflow_and_nesting_typed(parties: tuple, text: str) -> None:
    """OverflowError / RecursionError escaped the server's parser before."""
    kh, server, update, aggregate = parties
    env = parse_envelope(kh, update, wire.KIND_UPDATE)
    with pytest.raises(MalformedCiphertextError, match="layout"):
        server.session().add(dataclasses.replace(env, layout_json=text).pack())
    agg_env = parse_envelope(kh, aggregate, wire.KIND_AGGREGATE)
    with pytest.raises(MalformedCiphertextError, match="layout"):
        kh.decrypt_result(dataclasses.replace(agg_env, layout_json=text).pack())


@pytest.mark.parametrize(
    "field", ["client_weight_sum", "server_weight_sum", "server_weight_sq_sum"]
)
@pytest.mark.parametrize("value", [float("inf"), -1.0, 1e308])
def test_weight_sums_in_aggregate_typed(parties: tuple, field: str, value: float) -> None:
    """Infinite or absurd weight sums: a typed error, never OverflowError in release_grid."""
    kh, _, _, aggregate = parties
    env = parse_envelope(kh, aggregate, wire.KIND_AGGREGATE)
    flags = env.flags | (wire.FLAG_SERVER_WEIGHTS if field != "client_weight_sum" else 0)
    bad = dataclasses.replace(env, flags=flags, **{field: value}).pack()
    try:
        kh.decrypt_result(bad)
    except MalformedCiphertextError:
        return
    assert field == "client_weight_sum" and value == 1e308  # recorded, not used for rounding


# ----- mutation fuzzing of the envelope decoders ------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """1–4 byte-level edits, half of them in the header where the parser's branches are."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        limit = min(len(out), 400) if draw(st.booleans()) else len(out)
        pos = draw(st.integers(0, limit - 1))
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x5B, 0x5D, 0x22]))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del out[pos:]
    return bytes(out)


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.data())
def test_update_mutations_only_typed_errors(parties: tuple, data: st.DataObject) -> None:
    _kh, server, update, _ = parties
    mutated = data.draw(mutations(update))
    with contextlib.suppress(SecureFLError):
        server.session().add(mutated)


@FUZZ
@given(st.data())
def test_aggregate_mutations_only_typed_errors(parties: tuple, data: st.DataObject) -> None:
    kh, _, _, aggregate = parties
    mutated = data.draw(mutations(aggregate))
    with contextlib.suppress(SecureFLError):
        kh.decrypt_result(mutated)


@FUZZ
@given(st.data())
def test_context_mutations_only_typed_errors(parties: tuple, data: st.DataObject) -> None:
    kh = parties[0]
    mutated = data.draw(mutations(kh.public_context_bytes()))
    with contextlib.suppress(SecureFLError):
        HEServer(mutated)


layout_text = st.text(alphabet='[]{}",:0123456789-.eE abtrunlfs', max_size=80)


@FUZZ
@given(layout_text)
def test_layout_text_in_envelope_only_typed_errors(parties: tuple, text: str) -> None:
    kh, server, update, _ = parties
    env = parse_envelope(kh, update, wire.KIND_UPDATE)
    with contextlib.suppress(SecureFLError):
        server.session().add(dataclasses.replace(env, layout_json=text).pack())


def test_context_with_tampered_scale_typed(holders: dict[str, KeyHolder]) -> None:
    """Found by the context mutation test: a context whose global scale was changed made
    TenSEAL raise ValueError("scale out of bounds") while the role probed it."""
    import tenseal as ts

    from securefl.he import ContextMismatchError
    from securefl.he.context import ROLE_PUBLIC, pack_context, unpack_context

    kh = holders["fast"]
    preset, _, ts_bytes = unpack_context(kh.public_context_bytes(), allow_insecure=False)
    ctx = ts.context_from(ts_bytes)
    ctx.global_scale = 2.0**200
    bad = pack_context(preset, ROLE_PUBLIC, ctx.serialize(save_public_key=True))
    with pytest.raises(ContextMismatchError, match="scale"):
        HEServer(bad)
    with pytest.raises(ContextMismatchError, match="scale"):
        HEClient(bad)
