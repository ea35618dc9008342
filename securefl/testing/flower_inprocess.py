"""A Flower ``Grid`` whose nodes are ``ClientApp`` calls in this process (fast tests).

Each node has its own ``Context`` (node config, ``context.state``) as a SuperNode would; a
pushed message gets a fresh id, is deep-copied (nodes never share objects with the server or
with each other) and answered at once. ``drop_from[node] = stage`` makes a node stop answering
from that securefl stage on (it sends nothing, like a crashed SuperNode). Not a deployment
runtime: :class:`securefl.testing.flower_cluster.LoopbackCluster` is the real one.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from securefl.engine.task import Scalar
from securefl.engine.wire import RECORD

SERVER_NODE = 0
_IDENTITY = ("_task_id", "_run_id", "_node_id")


class InProcessGrid(Grid):  # type: ignore[misc]
    """``nodes``: Flower node id → that node's node config. Use as a context manager: Flower
    stamps every new ``Message`` with the process's ``TaskIdentity`` (a ServerApp process has
    one), which is set on enter and restored on exit."""

    def __init__(
        self,
        app: ClientApp,
        nodes: Mapping[int, Mapping[str, Scalar]],
        *,
        run_config: Mapping[str, Scalar] | None = None,
        drop_from: Mapping[int, int] | None = None,
    ) -> None:
        self.app = app
        self.contexts = {
            n: Context(
                run_id=1,
                node_id=n,
                node_config=dict(cfg),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for n, cfg in nodes.items()
        }
        self.drop_from = dict(drop_from or {})
        self.replies: dict[str, Message] = {}
        self.sent: list[Message] = []  # every message as the server sent it
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> InProcessGrid:
        self._saved = {k: getattr(TaskIdentity, k) for k in _IDENTITY}
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, SERVER_NODE
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            setattr(TaskIdentity, key, value)

    def set_run(self, run: Any) -> None:
        return None

    @property
    def run(self) -> Any:
        return None

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = secrets.token_hex(16)
            msg.metadata.__dict__.update(_message_id=mid, _src_node_id=SERVER_NODE)
            self.sent.append(msg)
            ids.append(mid)
            node = msg.metadata.dst_node_id
            if node not in self.contexts or self._dropped(node, msg):
                continue
            delivered = copy.deepcopy(msg)
            try:
                reply = self.app(delivered, self.contexts[node])
            except Exception as exc:  # a crashed ClientApp: Flower answers with an error
                reply = Message(Error(1, type(exc).__name__), reply_to=delivered)
            self.replies[mid] = copy.deepcopy(reply)
        return ids

    def _dropped(self, node: int, msg: Message) -> bool:
        stage = self.drop_from.get(node)
        if stage is None or RECORD not in msg.content.config_records:
            return False
        return int(msg.content.config_records[RECORD].get("stage", -1)) >= stage  # type: ignore[arg-type]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
