"""The Flower adapter's record handlers run the same client/server steps as the simulation."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.errors import ConfigurationError
from securefl.fl.backends import make_backend
from securefl.fl.client import TrainSpec, client_step
from securefl.fl.config import RunConfig
from securefl.fl.flower import CONFIG, _node_state, aggregate_replies, handle_train

CFG = RunConfig(
    model="tiny",
    aggregation="plain",
    dp="none",
    n_clients=4,
    synthetic_examples=64,
    max_length=16,
    local_epochs=1,
)


def test_flower_round_equals_simulation_steps() -> None:
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    model, clients = _node_state(CFG)
    g = model.get_flat()
    content = RecordDict({"adapters": ArrayRecord([g]), CONFIG: ConfigRecord({"round": 0})})
    replies = [handle_train(CFG, content, pid) for pid in range(4)]
    backend = make_backend(CFG, dimension=g.size)
    new = aggregate_replies(backend, g, replies, 0)
    spec = TrainSpec(CFG.local_epochs, CFG.batch_size, CFG.local_lr)
    ups = [
        client_step(model, g, clients[c], spec, client_id=c, round_index=0, seed=CFG.seed)
        for c in range(4)
    ]
    w = np.array([u.num_examples for u in ups], dtype=np.float64)
    expected = (
        g
        + CFG.effective_server_lr
        * sum(
            wi * u.delta.astype(np.float32).astype(np.float64) for wi, u in zip(w, ups, strict=True)
        )
        / w.sum()
    )
    np.testing.assert_allclose(new, expected, atol=1e-6)
    with pytest.raises(ConfigurationError, match="two replies"):
        aggregate_replies(backend, g, [replies[0], replies[0]], 0)


def test_flower_adapter_refuses_secure_backends() -> None:
    with pytest.raises(ConfigurationError, match="plaintext"):
        handle_train(CFG.replace(aggregation="secagg+"), None, 0)
