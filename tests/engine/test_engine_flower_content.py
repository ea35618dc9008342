"""Large bytes fields travel as Flower ArrayRecord arrays and come back unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.engine.flower import from_content, to_content
from securefl.engine.wire import BLOB_STYPE, BLOBS_RECORD, INLINE_MAX, RECORD
from securefl.errors import MalformedMessageError

fields = st.dictionaries(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=8),
    st.one_of(
        st.integers(-(2**40), 2**40),
        st.text(max_size=20),
        st.binary(max_size=64),
        st.integers(0, 3).map(lambda k: bytes(range(256)) * (INLINE_MAX // 256 + k)),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(fields)
def test_round_trip(record: dict[str, Any]) -> None:
    content = to_content(record)
    assert from_content(content) == record
    big = {k for k, v in record.items() if isinstance(v, bytes) and len(v) >= INLINE_MAX}
    blobs = content.array_records.get(BLOBS_RECORD)
    assert set(blobs or {}) == big
    assert not big & set(content.config_records[RECORD])


def test_large_payload_is_not_copied() -> None:
    payload = bytes(INLINE_MAX * 4)
    content = to_content({"v": 2, "payload": payload})
    assert content.array_records[BLOBS_RECORD]["payload"].data is payload


def _with_blob(**array: Any) -> RecordDict:
    data = array.pop("data", bytes(INLINE_MAX))
    kw = {"dtype": "uint8", "shape": (len(data),), "stype": BLOB_STYPE, "data": data, **array}
    return RecordDict(
        {
            RECORD: ConfigRecord({"v": 2, "dup": 1}),
            BLOBS_RECORD: ArrayRecord(array_dict={kw.pop("name", "payload"): Array(**kw)}),
        }
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"dtype": "float32"},
        {"stype": "numpy.ndarray"},
        {"shape": (3,)},
        {"name": "dup"},
    ],
)
def test_malformed_blobs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessageError):
        from_content(_with_blob(**bad))


def test_no_securefl_record() -> None:
    assert from_content(RecordDict({})) is None
