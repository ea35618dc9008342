"""Correctness of whole rounds: the unmasked sum is exact for any inputs and dropout pattern
that leaves every client ≥ t live neighbours, and too few survivors abort cleanly."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from securefl.errors import AbortError
from securefl.secagg import (
    DropoutPlan,
    SecAggConfig,
    SimulatedIdentities,
    Stage,
    neighbours,
    run_round,
    simulation_config,
)
from securefl.vocabulary import ThreatModel

from .conftest import SEMI_HONEST_POLICY

MODEL = hashlib.sha256(b"protocol test model").digest()
#: Explicit semi-honest opt-in for the property test, whose thresholds go down to 2.
WEAK = {"threat_model": ThreatModel.SEMI_HONEST}

STAGES = list(Stage)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(3, 25))
    sparse = n >= 6 and draw(st.booleans())
    degree = draw(st.sampled_from([d for d in (2, 4, 6, 8) if d < n - 1])) if sparse else None
    k = n - 1 if degree is None else degree
    t = draw(st.integers(2, max(2, k)))
    bits = draw(st.sampled_from([1, 8, 16, 31, 32, 40, 64]))
    d = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    drop_rate = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5]))
    rng = np.random.default_rng(seed)
    stage_of = {}
    for u in range(1, n + 1):
        if rng.random() < drop_rate:
            stage_of[u] = STAGES[int(rng.integers(0, len(STAGES)))]
    return {
        "n": n,
        "degree": degree,
        "t": t,
        "bits": bits,
        "d": d,
        "seed": seed,
        "stage_of": stage_of,
    }


@given(scenarios())
def test_sum_exact_or_clean_abort(sc: dict[str, object]) -> None:
    n, t, bits, d = int(sc["n"]), int(sc["t"]), int(sc["bits"]), int(sc["d"])  # type: ignore[call-overload]
    degree = sc["degree"]
    stage_of: dict[int, Stage] = sc["stage_of"]  # type: ignore[assignment]
    ids = list(range(1, n + 1))
    ident = SimulatedIdentities()
    cfg = simulation_config(
        ids, threshold=t, bits=bits, dimension=d, degree=degree, identities=ident, **WEAK
    )  # type: ignore[arg-type]
    rng = np.random.default_rng(int(sc["seed"]))  # type: ignore[call-overload]
    dtype = np.uint32 if bits <= 32 else np.uint64
    inputs = {u: rng.integers(0, 2**bits, size=d, dtype=np.uint64).astype(dtype) for u in ids}
    plan = DropoutPlan.from_mapping(
        {s: {u for u, su in stage_of.items() if su is s} for s in Stage}
    )
    final_live = set(ids) - set(stage_of)
    graph = neighbours(cfg)
    sufficient = len(final_live) >= cfg.effective_min_cohort and all(
        len(set(graph[u]) & final_live) >= t for u in ids
    )
    expected_survivors = {
        u
        for u in ids
        if stage_of.get(u) not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT)
    }
    try:
        result = run_round(inputs, cfg, dropouts=plan, identities=ident, policy=SEMI_HONEST_POLICY)
    except AbortError:
        event("aborted")
        assert not sufficient, "a round with enough live neighbours everywhere aborted"
        return
    event(
        f"completed ({'all' if sufficient else 'some'} neighbourhoods ≥ t, {len(stage_of)} drops)"
    )
    assert len(final_live) >= t, "completed with fewer than t responders"
    if sufficient:
        assert result.survivors == expected_survivors
    assert result.survivors <= expected_survivors
    want = np.zeros(d, dtype=object)
    for u in result.survivors:
        want = want + inputs[u].astype(object)
    want = np.array([int(x) % (1 << bits) for x in want], dtype=np.uint64)
    assert np.array_equal(result.total.astype(np.uint64), want)


@pytest.mark.parametrize("stage", list(Stage))
def test_too_few_survivors_abort(stage: Stage) -> None:
    ids = list(range(1, 8))
    ident = SimulatedIdentities()
    cfg = simulation_config(
        ids, threshold=4, bits=16, dimension=5, model_digest=MODEL, identities=ident
    )
    inputs = {u: np.full(5, u, dtype=np.uint32) for u in ids}
    plan = DropoutPlan.from_mapping({stage: {1, 2, 3, 4}})
    with pytest.raises(AbortError):
        run_round(inputs, cfg, dropouts=plan, identities=ident)


def test_min_cohort_enforced() -> None:
    ids = list(range(1, 9))
    ident = SimulatedIdentities()
    cfg = simulation_config(
        ids, threshold=5, bits=16, dimension=4, min_cohort=7, model_digest=MODEL, identities=ident
    )
    inputs = {u: np.full(4, u, dtype=np.uint32) for u in ids}
    one = DropoutPlan(masked_input=frozenset({8}))
    assert run_round(inputs, cfg, dropouts=one, identities=ident).survivors
    with pytest.raises(AbortError):
        run_round(
            inputs, cfg, dropouts=DropoutPlan(masked_input=frozenset({7, 8})), identities=ident
        )


def test_upload_is_packed_at_the_ring_width() -> None:
    """Wire version 2 (spec §5): b/8 bytes per parameter, not a 32/64-bit word."""
    ids = list(range(1, 6))
    d = 20000
    for bits, word in ((20, 2.5), (24, 3), (32, 4), (33, 4.125)):
        ident = SimulatedIdentities()
        cfg = simulation_config(
            ids, threshold=3, bits=bits, dimension=d, model_digest=MODEL, identities=ident
        )
        inputs = {u: np.zeros(d, dtype=np.uint32 if bits <= 32 else np.uint64) for u in ids}
        result = run_round(inputs, cfg, identities=ident)
        # the masked-input message dominates; everything else is a few hundred bytes
        per_param = min(result.bytes_up.values()) / d
        assert word <= per_param < word + 0.1


def _named_config(
    updates: Mapping[int, Mapping[str, Any]], plan: Any, **options: Any
) -> tuple[SecAggConfig, SimulatedIdentities]:
    """A t = 3 round over ``updates``' tensor layout and ring ``plan``, with its identities."""
    from securefl.tensors import TensorLayout

    layout = TensorLayout.from_tensors(next(iter(updates.values())))
    ident = SimulatedIdentities()
    cfg = simulation_config(
        updates,
        threshold=3,
        bits=plan.bits,
        dimension=layout.size,
        layout_digest=layout.digest(),
        identities=ident,
        model_digest=MODEL,
        **options,
    )
    return cfg, ident


def test_secure_sum_named_decodes_floats() -> None:
    from securefl.encoding import error_bound, plan_ring
    from securefl.secagg import secure_sum_named

    rng = np.random.default_rng(3)
    updates = {u: {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)} for u in range(1, 9)}
    plan = plan_ring(8, 10.0, 16)
    cfg, ident = _named_config(updates, plan, degree=4)
    drop = DropoutPlan(unmask=frozenset({2}))
    out = secure_sum_named(updates, cfg, plan, dropouts=drop, identities=ident)
    assert out.round.survivors == frozenset(range(1, 9))
    for name in ("w", "b"):
        exact = sum(updates[u][name] for u in out.round.survivors)
        assert np.max(np.abs(out.sums[name] - exact)) <= error_bound(plan, 8)
    assert out.clipped == dict.fromkeys(range(1, 9), 0)


def test_server_survives_byzantine_client_at_each_stage() -> None:
    """A client sending garbage (or a duplicate) is dropped with a reason; the round still
    gives the exact sum over the others."""
    from securefl.secagg import ServerProtocol

    from .conftest import make_harness

    for bad_stage in Stage:
        h = make_harness(n=7, t=3)
        bad = 4
        h.server = ServerProtocol(h.config)
        for u, c in h.clients.items():
            m = c.advertise_keys()
            data = m.encode()
            if bad_stage is Stage.ADVERTISE_KEYS and u == bad:
                data = data[:-3]
            h.server.receive_bytes(data, transport_sender=u)
        h.outbox = h.server.close_stage()
        stage = Stage.SHARE_KEYS
        while True:
            for u, m in h.outbox.items():
                values = h.inputs[u] if stage is Stage.MASKED_INPUT else None
                data = h.clients[u].handle(m, values).encode()
                if stage is bad_stage and u == bad:
                    data = data[:60] + bytes([data[60] ^ 0xFF]) + data[61:-1]
                h.server.receive_bytes(data, transport_sender=u)
                if stage is bad_stage and u == 1:
                    # a duplicate from an honest client is ignored, never double counted
                    assert not h.server.receive_bytes(data, transport_sender=u)
            h.outbox = h.server.close_stage()
            if stage is Stage.UNMASK:
                break
            stage = Stage(stage + 1)
        assert bad in h.server.rejected, bad_stage
        assert "malformed" in h.server.rejected[bad]
        survivors = h.server.survivors
        assert (bad in survivors) == (bad_stage > Stage.MASKED_INPUT)
        expect = sum(h.inputs[u].astype(np.uint64) for u in survivors) % (1 << 16)
        assert np.array_equal(h.server.result, expect)


def test_secure_sum_named_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    from securefl.encoding import plan_ring
    from securefl.secagg import secure_sum_named

    updates = {
        u: {"lora_A": torch.full((2, 3), 0.25 * u), "lora_B": torch.arange(4.0) * u}
        for u in range(1, 6)
    }
    plan = plan_ring(5, 4.0, 12)
    cfg, ident = _named_config(updates, plan)
    out = secure_sum_named(updates, cfg, plan, identities=ident)
    assert np.allclose(out.sums["lora_A"], np.full((2, 3), 0.25 * 15), atol=5 * 2**-12)
    # lora_B: 3·u clipped to 4.0 for u ≥ 2 in the last coordinates → counted, not silent
    assert sum(out.clipped.values()) > 0
    with pytest.raises(Exception, match="layout"):
        other = simulation_config(
            updates, threshold=3, bits=plan.bits, dimension=cfg.dimension, model_digest=MODEL
        )
        secure_sum_named(updates, other, plan)
