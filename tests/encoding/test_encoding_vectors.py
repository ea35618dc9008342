"""Encoding, ring plans and the SecAgg+ solver reproduce secagg_primitives.json exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.encoding import decode_sum, encode, plan_ring
from securefl.secagg.params import solve_parameters

V: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "protocols/vectors/secagg_primitives.json").read_text()
)


@pytest.mark.parametrize("case", V["ring_plans"])
def test_ring_plan_vectors(case: dict[str, Any]) -> None:
    plan = plan_ring(case["n_clients"], case["clip"], case["frac_bits"], case["max_weight"])
    assert plan.to_dict() == case["plan"]


@pytest.mark.parametrize("case", V["encodings"])
def test_encoding_vectors(case: dict[str, Any]) -> None:
    p = case["plan"]
    plan = plan_ring(p["n_clients"], p["clip"], p["frac_bits"], p["max_weight"])
    enc = encode(
        np.array(case["x"]), plan, weight=case["weight"], rng_key=bytes.fromhex(case["rng_key"])
    )
    assert [str(int(v)) for v in enc.values] == case["values"]
    assert enc.clipped == case["clipped"]
    assert decode_sum(enc.values, plan).tolist() == case["decoded"]


@pytest.mark.parametrize("case", V["secagg_params"])
def test_solver_vectors(case: dict[str, Any]) -> None:
    p = solve_parameters(case["n"], case["gamma"], case["delta"], model=case["model"])
    assert (p.k, p.t, p.complete_graph) == (case["k"], case["t"], case["complete_graph"])
