"""The implementation reproduces the known-answer round vector byte for byte."""

from __future__ import annotations

import json

from securefl.secagg.kat import VECTOR_PATH, compute_round_vector


def test_round_vector_matches() -> None:
    stored = json.loads(VECTOR_PATH.read_text())
    fresh = compute_round_vector()
    assert fresh["session_id"] == stored["session_id"]
    assert fresh["graph"] == stored["graph"]
    assert fresh["messages"] == stored["messages"]
    assert fresh["masked_inputs"] == stored["masked_inputs"]
    assert fresh == stored
    assert stored["total"] == stored["plain_sum_of_survivors"]
    assert len(stored["survivors"]) == len(stored["parameters"]["client_ids"]) - 1
