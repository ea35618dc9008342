"""HKDF context binding: every field separates domains; the info encoding is injective."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import kdf
from securefl.errors import ConfigurationError

BASE: dict[str, Any] = {
    "label": kdf.LABEL_PAIRWISE_MASK,
    "session_id": b"session-1",
    "round_index": 3,
    "party_a": 5,
    "party_b": 9,
    "extra": b"layout",
    "length": 32,
}
IKM = bytes(range(32))

contexts = st.fixed_dictionaries(
    {
        "label": st.sampled_from(sorted(kdf.LABELS)) | st.text("abc-", min_size=1, max_size=5),
        "session_id": st.binary(min_size=1, max_size=12),
        "round_index": st.integers(0, 2**32 - 1),
        "party_a": st.integers(0, 2**32 - 1),
        "party_b": st.integers(0, 2**32 - 1),
        "extra": st.binary(max_size=12),
        "length": st.integers(1, 64),
    }
)


@given(a=contexts, b=contexts)
def test_info_encoding_is_injective(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (kdf.encode_info(**a) == kdf.encode_info(**b)) == (a == b)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("label", kdf.LABEL_SELF_MASK),
        ("session_id", b"session-2"),
        ("round_index", 4),
        ("party_a", 6),
        ("party_b", 8),
        ("extra", b"layouT"),
    ],
)
def test_changing_any_field_changes_the_key(field: str, value: object) -> None:
    ref = kdf.derive_key(IKM, **BASE)
    assert kdf.derive_key(IKM, **{**BASE, field: value}) != ref


def test_changing_ikm_or_length_changes_the_key() -> None:
    ref = kdf.derive_key(IKM, **BASE)
    assert kdf.derive_key(bytes(32), **BASE) != ref
    shorter = kdf.derive_key(IKM, **{**BASE, "length": 16})
    assert len(shorter) == 16 and shorter != ref[:16]  # no prefix relation between lengths


def test_label_and_session_boundaries_cannot_be_shifted() -> None:
    # Moving bytes between adjacent variable-length fields must change the key.
    a = kdf.derive_key(IKM, **{**BASE, "session_id": b"ab", "extra": b"c"})
    b = kdf.derive_key(IKM, **{**BASE, "session_id": b"a", "extra": b"bc"})
    assert a != b


@given(me=st.integers(0, 1000), peer=st.integers(0, 1000))
def test_pairwise_key_is_the_same_from_both_ends(me: int, peer: int) -> None:
    if me == peer:
        with pytest.raises(ConfigurationError):
            kdf.derive_pairwise_key(
                IKM, label="pairwise-mask", session_id=b"s", round_index=0, me=me, peer=peer
            )
        return
    kw: dict[str, Any] = {"label": "pairwise-mask", "session_id": b"s", "round_index": 0}
    assert kdf.derive_pairwise_key(IKM, me=me, peer=peer, **kw) == kdf.derive_pairwise_key(
        IKM, me=peer, peer=me, **kw
    )
    lo, hi = min(me, peer), max(me, peer)
    assert kdf.derive_pairwise_key(IKM, me=me, peer=peer, **kw) == kdf.derive_key(
        IKM, party_a=lo, party_b=hi, **kw
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("label", ""),
        ("label", "é"),
        ("session_id", b""),
        ("round_index", -1),
        ("round_index", 2**32),
        ("party_a", True),
        ("party_b", 2**32),
        ("length", 0),
        ("length", 255 * 32 + 1),
    ],
)
def test_invalid_context_is_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError):
        kdf.derive_key(IKM, **{**BASE, field: value})


def test_short_ikm_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ikm"):
        kdf.derive_key(bytes(15), **BASE)
