"""The one stage driver (securefl.secagg.driver): any transport, replies fed on arrival, the
authenticated sender enforced, real byte counts, every wire byte in the transcript."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.secagg import (
    ClientProtocol,
    DropoutPlan,
    ServerProtocol,
    SimulatedIdentities,
    Stage,
    run_round,
    simulation_config,
)
from securefl.secagg.driver import Deliver, drive_round
from securefl.secagg.messages import SERVER_ID, STAGE_LABELS
from securefl.secagg.simulate import SimulatedTransport
from securefl.vocabulary import ThreatModel

from .conftest import SEMI_HONEST_POLICY

IDS = list(range(1, 11))
D = 5


def _cohort(degree: int | None = None) -> tuple[Any, SimulatedIdentities]:
    ident = SimulatedIdentities()
    cfg = simulation_config(  # driver tests, not threat-model tests: explicit semi-honest opt-in
        IDS,
        threshold=4,
        bits=16,
        dimension=D,
        degree=degree,
        identities=ident,
        threat_model=ThreatModel.SEMI_HONEST,
    )
    return cfg, ident


def _inputs() -> dict[int, np.ndarray[Any, Any]]:
    return {u: np.arange(D, dtype=np.uint32) * u for u in IDS}


class _Shuffled:
    """Delivers each stage's replies in a seeded random order (a network reorders)."""

    def __init__(self, inner: SimulatedTransport, seed: int) -> None:
        self.inner = inner
        self.rng = random.Random(seed)

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> Mapping[int, str]:
        held: list[tuple[int, bytes]] = []
        failed = self.inner.exchange(stage, requests, lambda u, b: held.append((u, b)) or True)
        self.rng.shuffle(held)
        for u, data in held:
            deliver(u, data)
        return failed


@given(st.integers(0, 2**32 - 1), st.sampled_from([None, 6]))
def test_delivery_order_does_not_change_the_sum(seed: int, degree: int | None) -> None:
    cfg, ident = _cohort(degree)
    clients = {u: ClientProtocol(cfg, u, ident[u], policy=SEMI_HONEST_POLICY) for u in IDS}
    plan = DropoutPlan(masked_input=frozenset({2}), unmask=frozenset({5}))
    transport = _Shuffled(SimulatedTransport(clients, _inputs(), dropouts=plan), seed)
    result = drive_round(ServerProtocol(cfg), transport)
    assert result.survivors == frozenset(IDS) - {2}
    want = sum(v.astype(np.uint64) for u, v in _inputs().items() if u != 2) % (1 << 16)
    assert np.array_equal(result.total.astype(np.uint64), want)


class _Spoofing:
    """Client 3's replies are handed over as if client 4 had sent them."""

    def __init__(self, inner: SimulatedTransport) -> None:
        self.inner = inner

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> Mapping[int, str]:
        return self.inner.exchange(stage, requests, lambda u, b: deliver(4 if u == 3 else u, b))


def test_the_server_refuses_a_reply_from_another_authenticated_sender() -> None:
    cfg, ident = _cohort()
    clients = {u: ClientProtocol(cfg, u, ident[u], policy=SEMI_HONEST_POLICY) for u in IDS}
    result = drive_round(ServerProtocol(cfg), _Spoofing(SimulatedTransport(clients, _inputs())))
    assert 3 not in result.survivors
    assert 3 in result.dropped["advertise_keys"]
    assert "channel of 4 names sender 3" in result.refused[4]  # blamed on its own channel


class _CountingInputs(Mapping[int, np.ndarray[Any, Any]]):
    """Builds each vector on demand and records when it was read (lazy inputs)."""

    def __init__(self) -> None:
        self.reads: list[int] = []

    def __getitem__(self, u: int) -> np.ndarray[Any, Any]:
        self.reads.append(u)
        return np.full(D, u, dtype=np.uint32)

    def __iter__(self) -> Iterator[int]:
        return iter(IDS)

    def __len__(self) -> int:
        return len(IDS)


def test_inputs_are_read_once_each_and_only_by_live_clients() -> None:
    cfg, ident = _cohort()
    inputs = _CountingInputs()
    plan = DropoutPlan(masked_input=frozenset({6}))
    result = run_round(inputs, cfg, dropouts=plan, identities=ident, policy=SEMI_HONEST_POLICY)
    assert sorted(inputs.reads) == [u for u in IDS if u != 6]
    assert result.total.tolist() == [sum(IDS) - 6] * D


def test_transcript_holds_every_wire_byte_and_matches_the_counts() -> None:
    cfg, ident = _cohort(degree=6)
    transcript: list[tuple[str, int, int, bytes]] = []
    plan = DropoutPlan(share_keys=frozenset({7}), consistency_check=frozenset({1}))
    result = run_round(
        _inputs(),
        cfg,
        dropouts=plan,
        identities=ident,
        transcript=transcript,
        policy=SEMI_HONEST_POLICY,
    )
    for u in IDS:
        assert result.bytes_up[u] == sum(len(b) for _, s, _, b in transcript if s == u)
        assert result.bytes_down[u] == sum(len(b) for _, _, r, b in transcript if r == u)
    assert {stage for stage, *_ in transcript} == set(STAGE_LABELS)
    assert all(SERVER_ID in (s, r) for _, s, r, _ in transcript)
    assert result.bytes_up[7] < result.bytes_up[2]  # 7 sent only its AdvertiseKeys
    assert set(result.timings) >= set(STAGE_LABELS) | {"server_unmask", "total"}


class _Refusing:
    """A transport that reports one client's failure at the masked-input stage."""

    def __init__(self, inner: SimulatedTransport) -> None:
        self.inner = inner

    def exchange(
        self, stage: Stage, requests: Mapping[int, bytes], deliver: Deliver
    ) -> Mapping[int, str]:
        if stage is Stage.MASKED_INPUT:
            rest = {u: b for u, b in requests.items() if u != 2}
            return {**self.inner.exchange(stage, rest, deliver), 2: "link lost"}
        return self.inner.exchange(stage, requests, deliver)


def test_transport_reports_land_in_refused_and_the_client_drops() -> None:
    cfg, ident = _cohort()
    clients = {u: ClientProtocol(cfg, u, ident[u], policy=SEMI_HONEST_POLICY) for u in IDS}
    result = drive_round(ServerProtocol(cfg), _Refusing(SimulatedTransport(clients, _inputs())))
    assert result.refused[2] == "link lost"
    assert 2 not in result.survivors
    assert 2 in result.dropped["masked_input"]


def test_too_many_dropouts_abort() -> None:
    from securefl.errors import AbortError

    cfg, ident = _cohort()
    with pytest.raises(AbortError):
        run_round(
            _inputs(),
            cfg,
            dropouts=DropoutPlan(share_keys=frozenset(range(1, 8))),
            identities=ident,
            policy=SEMI_HONEST_POLICY,
        )
