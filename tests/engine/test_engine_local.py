"""The engine's server loop and stateless node handler, in process (no Flower, fast).

Same request/reply records as over Flower; every node keeps its state only in its store, so
these tests exercise the replay that the Flower runtime (one process per message) relies on.
"""

from __future__ import annotations

import copy
import os
import secrets
import stat
from collections.abc import Callable, Mapping
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
from securefl.engine.wire import (
    ENGINE_WIRE_VERSION,
    decode_config,
    encode_config,
    encode_plan,
    model_digest,
)
from securefl.errors import (
    AbortError,
    ConfigurationError,
    LocalProtocolError,
    MalformedMessageError,
    UnsafeRequestError,
)
from securefl.secagg import Stage
from securefl.secagg.derive import NODE_BINDING_LABEL, node_binding_transcript

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
    request = _first_request()
    reply = node.handle(request, store)
    assert reply["client"] == IDS[0] and "values" in store and "seed" in store
    with pytest.raises(UnsafeRequestError, match="out of order"):
        node.handle(
            {"v": ENGINE_WIRE_VERSION, "stage": 2, "session": request["session"], "payload": b"x"},
            store,
        )
    assert store == {}  # a refusal erases the round
    tampered = dict(request, **{"global": request["global"][:-1] + b"\x01"})
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
            replies[1] = {
                "v": ENGINE_WIRE_VERSION,
                "client": self.victim,
                "payload": b"\x00" * 120,
                "binding": b"\x00" * 64,
            }
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


class _Relay(InProcessTransport):
    """Adds node ``relayer``, which answers the round's first request with a copy of the
    ``victim`` node's reply — its valid AdvertiseKeys, signed under the victim's identity key,
    with the victim's client id — taken before the server reads the victim's own reply.
    ``keep`` says which of the victim's reply fields the relayer forwards."""

    def __init__(
        self, nodes: dict[int, SecAggNode], victim: int, relayer: int, keep: tuple[str, ...]
    ) -> None:
        super().__init__(nodes)
        self.victim, self.relayer, self.keep = victim, relayer, keep

    def node_ids(self) -> list[int]:
        return sorted([self.relayer, *super().node_ids()])

    def exchange(
        self, requests: Mapping[int, Any], *, timeout: float, round_index: int
    ) -> dict[int, Any]:
        honest = {n: r for n, r in requests.items() if n != self.relayer}
        replies = super().exchange(honest, timeout=timeout, round_index=round_index)
        if self.relayer in requests and "config" in requests[self.relayer]:
            stolen = replies[self.victim]
            replies[self.relayer] = {k: v for k, v in stolen.items() if k in self.keep}
        return dict(sorted(replies.items()))


@pytest.mark.parametrize("relayer", [1, 999])  # read before and after the victim's reply
@pytest.mark.parametrize(
    "keep", [("v", "client", "payload"), ("v", "client", "payload", "binding")]
)
def test_a_node_relaying_another_clients_advertisement_is_not_bound(
    relayer: int, keep: tuple[str, ...]
) -> None:
    """The relay hole of issue 11: a valid advertisement signs session, round and client id
    but not the engine node it came from, so a node forwarding client A's reply used to be
    bound to A first and take over A's channel (A was dropped from the round). The server
    now binds A to a node only with A's signature over that node's own fresh challenge."""
    victim = 101
    u = IDENTITIES[victim].client_id
    result = run(_Relay(make_nodes(), victim, relayer, keep))
    assert result.node_of[u] == victim
    why = result.rejected[relayer]
    assert "binding" in why or (relayer > victim and "already claimed" in why)
    assert victim not in result.rejected
    assert result.survivors == frozenset(IDS)
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


class _Tamper(InProcessTransport):
    """Rewrites the ``victim`` node's stage-0 reply with ``tamper(request, reply)``."""

    def __init__(
        self,
        nodes: dict[int, SecAggNode],
        victim: int,
        tamper: Callable[[Mapping[str, Any], dict[str, Any]], dict[str, Any]],
    ) -> None:
        super().__init__(nodes)
        self.victim, self.tamper = victim, tamper
        self.first: dict[int, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}

    def exchange(
        self, requests: Mapping[int, Any], *, timeout: float, round_index: int
    ) -> dict[int, Any]:
        replies = super().exchange(requests, timeout=timeout, round_index=round_index)
        if "config" in next(iter(requests.values())):
            self.first = {n: (requests[n], rep) for n, rep in replies.items()}
            if self.victim in replies:
                replies[self.victim] = self.tamper(
                    requests[self.victim], dict(replies[self.victim])
                )
        return replies


def _resign(request: Mapping[str, Any], reply: dict[str, Any], challenge: bytes) -> dict[str, Any]:
    """The victim's own key signs its own advertisement, but over ``challenge``."""
    config = decode_config(request["config"])
    sig = keys.sign(
        IDENTITIES[101].key, node_binding_transcript(config, challenge, reply["payload"])
    )
    return {**reply, "binding": sig}


def _drop_binding(request: Mapping[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "binding"}


BAD_BINDINGS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "other challenge": (lambda q, r: _resign(q, r, secrets.token_bytes(32)), "challenge"),
    "no binding": (_drop_binding, "'binding' is missing"),
    "short binding": (lambda q, r: {**r, "binding": r["binding"][:63]}, "must be 64 bytes"),
    "text binding": (lambda q, r: {**r, "binding": r["binding"].hex()}, "not bytes"),
    "flipped bit": (
        lambda q, r: {**r, "binding": bytes([r["binding"][0] ^ 1]) + r["binding"][1:]},
        "challenge",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BINDINGS))
def test_a_bad_binding_is_rejected_and_the_round_goes_on_without_that_node(case: str) -> None:
    tamper, why = BAD_BINDINGS[case]
    u = IDENTITIES[101].client_id
    result = run(_Tamper(make_nodes(), 101, tamper))
    assert u not in result.node_of and u not in result.survivors
    assert why in result.rejected[101] and result.rejected[101].startswith("advertise: ")
    assert result.survivors == frozenset(IDS) - {u}
    np.testing.assert_array_equal(result.total, expected_total(result, TASK.initial_state(RUN)))


def test_a_previous_rounds_binding_is_rejected() -> None:
    """A binding signs session id, round and the node's fresh challenge: last round's
    signature does not bind this round's advertisement, even from the client's own node."""
    record = _Tamper(make_nodes(), 101, lambda q, r: r)
    state = TASK.initial_state(RUN)
    run(record, state)
    old_binding = record.first[101][1]["binding"]
    u = IDENTITIES[101].client_id
    replay = _Tamper(make_nodes(), 101, lambda q, r: {**r, "binding": old_binding})
    result = run_secure_round(
        replay,
        TASK,
        task_name=DEFAULT_TASK,
        registry=REGISTRY,
        global_state=state,
        round_index=1,
        run_config=RUN,
        settings=RoundSettings(threshold=3),
    )
    assert "challenge" in result.rejected[101]
    assert u not in result.node_of and result.survivors == frozenset(IDS) - {u}
    np.testing.assert_array_equal(result.total, expected_total(result, state))


def test_every_node_gets_its_own_fresh_challenge_and_signs_it() -> None:
    seen = _Tamper(make_nodes(), 101, lambda q, r: r)
    run(seen)
    challenges = [request["challenge"] for request, _ in seen.first.values()]
    assert len(set(challenges)) == len(IDS) and all(len(c) == 32 for c in challenges)
    for node, (request, reply) in seen.first.items():
        config = decode_config(request["config"])
        transcript = node_binding_transcript(config, request["challenge"], reply["payload"])
        keys.verify(IDENTITIES[node].public, reply["binding"], transcript)


@given(
    round_index=st.integers(0, 5),
    challenge=st.binary(min_size=32, max_size=32),
    payload=st.binary(max_size=64),
)
def test_binding_transcript_binds_session_round_challenge_and_payload(
    round_index: int, challenge: bytes, payload: bytes
) -> None:
    layout = TASK.layout(RUN)
    plan = plan_ring(len(IDS), 1.0, 16)

    def config(r: int) -> Any:
        return make_config(
            REGISTRY,
            settings=RoundSettings(threshold=3),
            plan=plan,
            dimension=layout.size,
            layout_digest=layout.digest(),
            digest=b"\x01" * 32,
            round_index=r,
        )

    a, b = config(round_index), config(round_index)  # same round, fresh nonce: other session
    base = node_binding_transcript(a, challenge, payload)
    assert base.startswith(NODE_BINDING_LABEL + a.session_id)
    assert len(base) == len(NODE_BINDING_LABEL) + 32 + 4 + 32 + 32  # fixed fields only
    others = {
        node_binding_transcript(b, challenge, payload),
        node_binding_transcript(config(round_index + 1), challenge, payload),
        node_binding_transcript(a, bytes([challenge[0] ^ 1]) + challenge[1:], payload),
        node_binding_transcript(a, challenge, payload + b"\x00"),
    }
    assert base not in others and len(others) == 4
    with pytest.raises(LocalProtocolError):
        node_binding_transcript(a, challenge[:31], payload)


@pytest.mark.parametrize(
    "challenge", [None, b"\x07" * 31, b"\x07" * 33, "07" * 32], ids=["none", "31", "33", "str"]
)
def test_node_refuses_a_first_request_without_a_32_byte_challenge(challenge: object) -> None:
    node = make_nodes()[100]
    request = _first_request()
    if challenge is None:
        del request["challenge"]
    else:
        request["challenge"] = challenge
    store: dict[str, Any] = {"stale": b"x"}
    with pytest.raises(MalformedMessageError, match="'challenge'"):
        node.handle(request, store)
    assert store == {}


def test_engine_wire_version_is_2_and_a_version_1_request_is_refused() -> None:
    """Version 2 added the stage-0 challenge and binding; a node never answers version 1
    (whose server would bind a relayed advertisement)."""
    assert ENGINE_WIRE_VERSION == 2
    node = make_nodes()[100]
    with pytest.raises(MalformedMessageError, match="wire version"):
        node.handle({**_first_request(), "v": 1}, {})
    assert node.handle(_first_request(), {})["binding"]


def _first_request() -> dict[str, Any]:
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
    return {
        "v": ENGINE_WIRE_VERSION,
        "stage": 0,
        "session": config.session_id,
        "config": encode_config(config),
        "plan": text,
        "global": state,
        "challenge": secrets.token_bytes(32),
    }
