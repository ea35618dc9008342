"""Optional: the LoRA task (securefl.fl's client step) under the engine's secure sum.

Skipped when ``securefl.fl`` is unavailable. The securely aggregated sum of the nodes'
adapter deltas equals their plaintext sum up to the fixed-point error bound (< n·2^−f per
coordinate), and ``apply`` moves the global adapters by the mean delta.
"""

from __future__ import annotations

import numpy as np
import pytest

from securefl.crypto import keys
from securefl.encoding import error_bound
from securefl.engine import InProcessTransport, NodeIdentity, SecAggNode, run_secure_round

pytestmark = pytest.mark.slow
pytest.importorskip("peft")

TASK_NAME = "securefl.engine.lora:LoraTask"
RUN = {"epochs": 1, "synthetic-examples": 48, "batch-size": 8, "lr": 5e-3}


def test_lora_task_secure_sum_matches_plaintext() -> None:
    from securefl.engine.lora import LoraTask

    task = LoraTask()
    identities = {200 + i: NodeIdentity(i + 1, keys.generate_ed25519()) for i in range(3)}
    registry = {idn.client_id: idn.public for idn in identities.values()}
    node_configs = {n: {"partition-id": i, "num-partitions": 3} for i, n in enumerate(identities)}
    nodes = {
        n: SecAggNode(idn, task, task_name=TASK_NAME, node_config=node_configs[n], run_config=RUN)
        for n, idn in identities.items()
    }
    state = task.initial_state(RUN)
    result = run_secure_round(
        InProcessTransport(nodes),
        task,
        task_name=TASK_NAME,
        registry=registry,
        global_state=state,
        round_index=0,
        run_config=RUN,
    )
    assert result.survivors == frozenset(registry)
    layout = task.layout(RUN)
    plain = sum(layout.flatten(task.update(state, node_configs[n], RUN)) for n in identities)
    secure = layout.flatten(result.sums)
    assert np.max(np.abs(secure - plain)) < error_bound(result.plan, 3)
    assert np.any(plain != 0)
    after = np.frombuffer(task.apply(state, result.sums, 3, RUN), dtype="<f8")
    np.testing.assert_allclose(after - np.frombuffer(state, dtype="<f8"), secure / 3)
