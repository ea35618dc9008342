"""The engine's server loop and stateless node handler, in process (no Flower, fast).

Same request/reply records as over Flower; every node keeps its state only in its store, so
these tests exercise the replay that the Flower runtime (one process per message) relies on.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import keys
from securefl.encoding import encode, plan_ring
from securefl.engine import (
    DEFAULT_TASK,
    InProcessTransport,
    NodeIdentity,
    RoundSettings,
    SecAggNode,
    SyntheticTask,
    discover_identities,
    generate_identity,
    load_identity,
    load_registry,
    run_secure_round,
    save_registry,
)
from securefl.engine.server import EngineRoundResult, make_config
from securefl.engine.wire import decode_config, encode_config, encode_plan, model_digest
from securefl.errors import (
    AbortError,
    ConfigurationError,
    MalformedMessageError,
    UnsafeRequestError,
)
from securefl.secagg import Stage

RUN = {"synthetic-rows": 3}
TASK = SyntheticTask()
IDS = (5, 9, 14, 20, 31)
#: Fixed Ed25519 seeds: the identities (not the round secrets) are reproducible across runs.
IDENTITIES = {
    100 + i: NodeIdentity(u, keys.ed25519_private_from_bytes(bytes([i + 1]) * 32))
    for i, u in enumerate(IDS)
}
REGISTRY = {idn.client_id: idn.public for idn in IDENTITIES.values()}


def make_nodes(registry: dict[int, bytes] | None = REGISTRY) -> dict[int, SecAggNode]:
    return {
        node: SecAggNode(
            idn,
            TASK,
            task_name=DEFAULT_TASK,
            node_config={"partition-id": i},
            run_config=RUN,
            registry=registry,
        )
        for i, (node, idn) in enumerate(IDENTITIES.items())
    }


def expected_total(result: EngineRoundResult, state: bytes) -> np.ndarray:
    layout = TASK.layout(RUN)
    total = np.zeros(layout.size, dtype=result.plan.dtype)
    for i, idn in enumerate(IDENTITIES.values()):
        if idn.client_id in result.survivors:
            named = TASK.update(state, {"partition-id": i}, RUN)
            total += encode(layout.flatten(named), result.plan).values
    return total & result.plan.dtype(result.plan.mask)


def run(
    transport: InProcessTransport, state: bytes | None = None, **settings: Any
) -> EngineRoundResult:
    return run_secure_round(
        transport,
        TASK,
        task_name=DEFAULT_TASK,
        registry=REGISTRY,
        global_state=TASK.initial_state(RUN) if state is None else state,
        round_index=0,
        run_config=RUN,
        settings=RoundSettings(threshold=3, **settings),
    )


def test_full_round_sum_is_exact_and_stores_are_erased() -> None:
    transport = InProcessTransport(make_nodes())
    result = run(transport)
    assert result.survivors == frozenset(IDS)
    assert {result.node_of[idn.client_id] for idn in IDENTITIES.values()} == set(IDENTITIES)
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))
    layout = TASK.layout(RUN)
    mean = layout.flatten(result.sums) / len(IDS)
    state1 = TASK.apply(TASK.initial_state(RUN), result.sums, len(IDS), RUN)
    np.testing.assert_array_equal(np.frombuffer(state1, dtype="<f8"), mean)
    assert all(store == {} for store in transport.stores.values())  # secrets gone
    assert result.bytes_up > 0 and result.bytes_down > 0


@given(
    victim=st.sampled_from(sorted(IDENTITIES)),
    stage=st.sampled_from([int(s) for s in Stage]),
    how=st.sampled_from(["silent", "error"]),
)
def test_one_dropout_at_any_stage_keeps_the_sum_exact(victim: int, stage: int, how: str) -> None:
    plan = {victim: stage}
    transport = InProcessTransport(
        make_nodes(),
        drop_at=plan if how == "silent" else None,
        fail_at=plan if how == "error" else None,
    )
    result = run(transport)
    u = IDENTITIES[victim].client_id
    if stage <= Stage.MASKED_INPUT:
        assert u not in result.survivors and len(result.survivors) == len(IDS) - 1
    else:  # its masked input is already in the sum; the others unmask it
        assert u in result.survivors
    assert u in set().union(*result.dropped.values())
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


def test_too_many_dropouts_abort() -> None:
    nodes = sorted(IDENTITIES)
    transport = InProcessTransport(make_nodes(), drop_at={nodes[0]: 2, nodes[1]: 2, nodes[2]: 2})
    with pytest.raises(AbortError):
        run(transport)


def test_replay_regenerates_identical_replies() -> None:
    """Answering the same request twice from the same stored state gives the same bytes."""
    nodes = make_nodes()
    seen: dict[tuple[int, int], bytes] = {}

    class Twice(InProcessTransport):
        def exchange(self, requests: Any, *, timeout: float, round_index: int) -> Any:
            for node, request in requests.items():
                if request["stage"] > 0:
                    store = copy.deepcopy(self.stores[node])
                    seen[(node, request["stage"])] = nodes[node].handle(request, store)["payload"]
            out = super().exchange(requests, timeout=timeout, round_index=round_index)
            stage = next(iter(requests.values()))["stage"]
            for node in out:  # the encoded input is kept only until it has been masked
                assert ("values" in self.stores[node]) == (stage < Stage.MASKED_INPUT)
            return out

    transport = Twice(nodes)
    result = run(transport)
    assert len(seen) == 4 * len(IDS)
    replies = {(n, s): size for _, s, n, size in transport.log}
    assert all(len(seen[key]) == replies[key] for key in seen)
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


def test_node_refuses_out_of_order_stages_and_a_tampered_model() -> None:
    node = make_nodes()[100]
    store: dict[str, Any] = {}
    state = TASK.initial_state(RUN)
    plan = plan_ring(len(IDS), 1.0, 16)
    text = encode_plan(plan)
    layout = TASK.layout(RUN)
    config = make_config(
        REGISTRY,
        settings=RoundSettings(threshold=3),
        plan=plan,
        dimension=layout.size,
        layout_digest=layout.digest(),
        digest=model_digest(state, text, 0, DEFAULT_TASK),
        round_index=0,
    )
    request = {
        "v": 1,
        "stage": 0,
        "session": config.session_id,
        "config": encode_config(config),
        "plan": text,
        "global": state,
    }
    reply = node.handle(request, store)
    assert reply["client"] == IDS[0] and "values" in store and "seed" in store
    with pytest.raises(UnsafeRequestError, match="out of order"):
        node.handle({"v": 1, "stage": 2, "session": config.session_id, "payload": b"x"}, store)
    assert store == {}  # a refusal erases the round
    tampered = dict(request, **{"global": state[:-1] + b"\x01"})
    with pytest.raises(UnsafeRequestError, match="model digest"):
        node.handle(tampered, {})


def test_registry_pins_identity_keys() -> None:
    rogue = dict(REGISTRY)
    rogue[IDS[1]] = keys.ed25519_public_bytes(keys.generate_ed25519())  # server swaps a key
    transport = InProcessTransport(make_nodes())
    with pytest.raises(AbortError):  # every honest node refuses the round
        run_secure_round(
            transport,
            TASK,
            task_name=DEFAULT_TASK,
            registry=rogue,
            global_state=TASK.initial_state(RUN),
            round_index=0,
            run_config=RUN,
            settings=RoundSettings(threshold=3),
        )
    assert all("not the registered one" in why for why in transport.errors.values())


def test_a_node_cannot_claim_another_clients_id() -> None:
    nodes = make_nodes()
    victim = IDENTITIES[101]
    impostor = NodeIdentity(victim.client_id, keys.generate_ed25519())  # right id, wrong key
    nodes[999] = SecAggNode(
        impostor, TASK, task_name=DEFAULT_TASK, node_config={"partition-id": 1}, run_config=RUN
    )
    result = run(InProcessTransport(nodes))
    assert result.node_of[victim.client_id] == 101
    assert result.survivors == frozenset(IDS)
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


class _ImpostorFirst(InProcessTransport):
    """Adds node 1, which answers the round's first request before everyone (nodes are tried
    in id order) by claiming ``victim``'s client id with an advertisement it cannot sign."""

    def __init__(self, nodes: dict[int, SecAggNode], victim: int) -> None:
        super().__init__(nodes)
        self.victim = victim

    def node_ids(self) -> list[int]:
        return [1, *super().node_ids()]

    def exchange(
        self, requests: Mapping[int, Any], *, timeout: float, round_index: int
    ) -> dict[int, Any]:
        honest = {n: r for n, r in requests.items() if n != 1}
        replies = super().exchange(honest, timeout=timeout, round_index=round_index)
        if 1 in requests and "config" in requests[1]:
            replies[1] = {"v": 1, "client": self.victim, "payload": b"\x00" * 120}
        return dict(sorted(replies.items()))


def test_an_impostor_answering_first_cannot_evict_the_client_it_claims() -> None:
    """Issue 12 hole 7 on the engine: a node's claim is not yet the client's authenticated
    channel, so an unsigned advertisement is refused before the server attributes it to the
    claimed client (which used to drop the real client from the round)."""
    victim = IDENTITIES[101].client_id
    result = run(_ImpostorFirst(make_nodes(), victim))
    assert result.node_of[victim] == 101
    assert "not signed" in result.rejected[1]
    assert result.survivors == frozenset(IDS)
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


def test_trust_on_first_use_discovery() -> None:
    transport = InProcessTransport(make_nodes(registry=None))
    assert discover_identities(transport, timeout=1.0) == REGISTRY


def test_config_codec_round_trip_and_rejects_garbage() -> None:
    result = run(InProcessTransport(make_nodes()))
    again = decode_config(encode_config(result.config))
    assert again == result.config and again.session_id == result.config.session_id
    for bad in (
        b"",
        b"{}",
        b"[1]",
        encode_config(result.config).replace(b'"threshold":3', b'"threshold":1'),
    ):
        with pytest.raises(MalformedMessageError):
            decode_config(bad)


def test_identity_files(tmp_path: Path) -> None:
    idn = generate_identity(tmp_path / "a.key", 7)
    assert stat.S_IMODE(os.stat(tmp_path / "a.key").st_mode) == 0o600
    assert load_identity(tmp_path / "a.key").public == idn.public
    with pytest.raises(FileExistsError):
        generate_identity(tmp_path / "a.key", 7)  # never overwrite a key
    save_registry(tmp_path / "r.json", REGISTRY)
    assert load_registry(tmp_path / "r.json") == REGISTRY
    (tmp_path / "bad.json").write_text('{"format": "securefl-registry-v1", "keys": {"0": "00"}}')
    with pytest.raises(ConfigurationError):
        load_registry(tmp_path / "bad.json")
    with pytest.raises(ConfigurationError):
        NodeIdentity(0, keys.generate_ed25519())


def test_cli_keygen_and_app(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from securefl.engine.cli import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    reg = tmp_path / "registry.json"
    for u in ("3", "4"):  # one id at a time: the registry grows
        out = runner.invoke(
            app, ["engine-keygen", u, "--out", str(tmp_path), "--registry", str(reg)]
        )
        assert out.exit_code == 0, out.output
    assert sorted(load_registry(reg)) == [3, 4]
    assert load_identity(tmp_path / "node4.key").public == load_registry(reg)[4]
    out = runner.invoke(app, ["engine-app", str(tmp_path / "app"), "--registry", str(reg)])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "app" / "pyproject.toml").read_text()
    assert 'serverapp = "securefl.engine.flower:server_app"' in text
    assert f'registry = "{reg.resolve()}"' in text


def test_node_policy_refuses_a_threshold_below_its_threat_model() -> None:
    from securefl.secagg import ClientPolicy

    nodes = make_nodes()
    for node in nodes.values():
        node.policy = ClientPolicy(threat_model="malicious")  # needs t ≥ 3 for n = 5
    transport = InProcessTransport(nodes)
    with pytest.raises(AbortError):
        run_secure_round(
            transport,
            TASK,
            task_name=DEFAULT_TASK,
            registry=REGISTRY,
            global_state=TASK.initial_state(RUN),
            round_index=0,
            run_config=RUN,
            settings=RoundSettings(threshold=2, threat_model="semi-honest"),
        )
    assert len(transport.errors) == len(IDS)
    assert all("UnsafeRequestError" in why for why in transport.errors.values())
