"""A node's round state through ``answer`` with real Flower ``Context`` objects: the context
stays small (large fields go to an encrypted node-local file, issue 11), the files are erased
with the round, and a missing or tampered file is refused."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.common.serde import context_from_proto, context_to_proto

from securefl.crypto import keys
from securefl.encoding import encode
from securefl.engine import DEFAULT_TASK, NodeIdentity, RoundSettings, SecAggNode, SyntheticTask
from securefl.engine.flower import answer, from_content, to_content
from securefl.engine.node_state import SPILL_PREFIX, NodeStateError, NodeStore, state_directory
from securefl.engine.server import EngineRoundResult, run_secure_round
from securefl.engine.wire import MESSAGE_TYPE, STATE_RECORD, field
from securefl.errors import ConfigurationError
from securefl.secagg import Stage

#: d = 8 · 40000 + 8: the ring vector alone (≥ 4 bytes a word) is over 1 MB.
RUN = {"synthetic-rows": 40000}
TASK = SyntheticTask()
IDS = (3, 7, 11, 19, 23)
IDENTITIES = {
    200 + i: NodeIdentity(u, keys.ed25519_private_from_bytes(bytes([i + 40]) * 32))
    for i, u in enumerate(IDS)
}
REGISTRY = {idn.client_id: idn.public for idn in IDENTITIES.values()}
CONTEXT_MAX = 1 << 20


def request_metadata(node: int) -> Metadata:
    """What the SuperLink would stamp on a server request to ``node``."""
    return Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=0,
        dst_node_id=node,
        reply_to_message_id="",
        group_id="0",
        created_at=time.time(),
        ttl=600.0,
        message_type=MESSAGE_TYPE,
    )


class ContextTransport:
    """Each node answers through :func:`answer` with its own Flower ``Context``, which goes
    through Flower's protobuf form between messages as the SuperNode keeps it."""

    def __init__(self, tmp: Path, after: Callable[[int, ContextTransport], None] | None = None):
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": i, "state-dir": str(tmp / str(node))},
                state=RecordDict(),
                run_config=dict(RUN),
            )
            for i, node in enumerate(IDENTITIES)
        }
        self.after = after
        self.errors: dict[int, str] = {}
        self.context_bytes: list[int] = []

    def node_ids(self) -> list[int]:
        return sorted(self.contexts)

    def make_node(self, context: Context) -> SecAggNode:
        return SecAggNode(
            IDENTITIES[context.node_id],
            TASK,
            task_name=DEFAULT_TASK,
            node_config=context.node_config,
            run_config=context.run_config,
            registry=REGISTRY,
        )

    def exchange(
        self, requests: Mapping[int, Mapping[str, Any]], *, timeout: float, round_index: int
    ) -> dict[int, Mapping[str, Any]]:
        out: dict[int, Mapping[str, Any]] = {}
        for node, request in requests.items():
            msg = Message(to_content(request), metadata=request_metadata(node))
            context = self.contexts[node]
            reply = answer(msg, context, self.make_node)
            proto = context_to_proto(context)
            self.context_bytes.append(proto.ByteSize())
            self.contexts[node] = context_from_proto(proto)
            if reply.has_error():
                self.errors[node] = reply.error.reason
                continue
            record = from_content(reply.content)
            assert record is not None
            out[node] = record
        if self.after is not None:
            self.after(field(next(iter(requests.values())), "stage", int), self)
        return out


def run(transport: ContextTransport) -> EngineRoundResult:
    return run_secure_round(
        transport,
        TASK,
        task_name=DEFAULT_TASK,
        registry=REGISTRY,
        global_state=TASK.initial_state(RUN),
        round_index=0,
        run_config=RUN,
        settings=RoundSettings(threshold=3),
    )


def expected_total(result: EngineRoundResult) -> np.ndarray:
    layout = TASK.layout(RUN)
    total = np.zeros(layout.size, dtype=result.plan.dtype)
    for i, idn in enumerate(IDENTITIES.values()):
        if idn.client_id in result.survivors:
            named = TASK.update(TASK.initial_state(RUN), {"partition-id": i}, RUN)
            total += encode(layout.flatten(named), result.plan).values
    return total & result.plan.dtype(result.plan.mask)


def spill_files(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("*/*.state"))


def test_context_state_stays_small_and_spill_files_go_with_the_round(tmp_path: Path) -> None:
    seen: list[int] = []

    def after(stage: int, transport: ContextTransport) -> None:
        files = spill_files(tmp_path)
        if stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS):  # the ring vector waits on disk
            assert len(files) == len(IDENTITIES)
            for path in files:
                assert path.stat().st_mode & 0o777 == 0o600
                assert path.parent.stat().st_mode & 0o777 == 0o700
                assert path.stat().st_size > CONTEXT_MAX
        if stage >= Stage.MASKED_INPUT:  # used, then erased
            assert files == []
        seen.append(stage)

    transport = ContextTransport(tmp_path, after)
    result = run(transport)
    assert result.survivors == frozenset(IDS)
    np.testing.assert_array_equal(result.total, expected_total(result))
    assert 4 * TASK.layout(RUN).size > CONTEXT_MAX
    assert max(transport.context_bytes) < CONTEXT_MAX
    assert Stage.UNMASK in seen
    assert all(STATE_RECORD not in c.state for c in transport.contexts.values())
    assert spill_files(tmp_path) == []


@pytest.mark.parametrize("how", ["missing", "flipped", "truncated", "swapped"])
def test_missing_or_tampered_spill_file_is_refused(tmp_path: Path, how: str) -> None:
    victim = min(IDENTITIES)

    def after(stage: int, transport: ContextTransport) -> None:
        if stage != Stage.SHARE_KEYS:
            return
        (mine,) = (tmp_path / str(victim)).glob("*.state")
        (other,) = (tmp_path / str(victim + 1)).glob("*.state")
        data = mine.read_bytes()
        if how == "missing":
            mine.unlink()
        elif how == "flipped":
            mine.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        elif how == "truncated":
            mine.write_bytes(data[:-1])
        else:  # another node's file (another key) in its place
            mine.write_bytes(other.read_bytes())

    transport = ContextTransport(tmp_path, after)
    result = run(transport)
    victim_id = IDENTITIES[victim].client_id
    assert victim_id not in result.survivors and len(result.survivors) == len(IDS) - 1
    assert transport.errors[victim].startswith("NodeStateError")
    np.testing.assert_array_equal(result.total, expected_total(result))
    assert STATE_RECORD not in transport.contexts[victim].state  # refusal erased the rest
    assert spill_files(tmp_path) == []


def test_spill_is_bound_to_session_and_field(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    store.update({"session": b"s" * 16, "values": bytes(range(256)) * 1024, "small": b"x"})
    record = store.persist()
    assert set(record) == {"session", "small", SPILL_PREFIX + "values"}
    assert "values" in store and len(store) == 3
    assert bytes(NodeStore(tmp_path, record)["values"]) == bytes(range(256)) * 1024
    with pytest.raises(NodeStateError, match="authentication"):
        NodeStore(tmp_path, {**record, "session": b"t" * 16})["values"]
    moved = {"session": record["session"], SPILL_PREFIX + "other": record[SPILL_PREFIX + "values"]}
    with pytest.raises(NodeStateError, match="authentication"):
        NodeStore(tmp_path, moved)["other"]
    with pytest.raises(NodeStateError, match="malformed"):
        NodeStore(tmp_path, {SPILL_PREFIX + "values": b"short"})
    reopened = NodeStore(tmp_path, record)
    reopened["values"] = b"new"  # overwriting a spilled field deletes its file
    assert list(tmp_path.iterdir()) == []


def test_state_directory_must_be_private(tmp_path: Path) -> None:
    assert state_directory(tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(ConfigurationError, match="0700"):
        state_directory(shared)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    with pytest.raises(ConfigurationError, match="not a directory"):
        state_directory(link)
