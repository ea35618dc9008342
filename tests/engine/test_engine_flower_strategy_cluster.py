"""The example app made private with SecureStrategy + securefl_mod, on the REAL Flower
deployment runtime on loopback: one SuperLink, three SuperNodes, two rounds, SecAgg+ with
distributed DP, tiny arrays. The run must finish with both rounds completed over all three
nodes, a ledger that verifies, ε recorded, and the report written. Every process is started in
its own session and killed on exit (:class:`LoopbackCluster`); only 127.0.0.1 is used. Run it
under ``flock /tmp/flower.lock`` on a shared machine.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from securefl.audit.ledger import Ledger
from securefl.engine.deploy import write_app_project
from securefl.engine.identity import generate_identity, save_registry
from securefl.testing.flower_cluster import LoopbackCluster, flower_available

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_existing_app.py"
N_NODES = 3
TIMEOUT_S = 600.0  # a loaded 2-core machine runs a process per Flower message


def test_example_app_runs_private_on_a_real_superlink(tmp_path: Path) -> None:
    if not flower_available():
        pytest.skip("Flower binaries not installed")
    registry = {}
    nodes = []
    for i in range(N_NODES):
        registry[i + 1] = generate_identity(tmp_path / f"node{i}.key", i + 1).public
    save_registry(tmp_path / "registry.json", registry)
    for i in range(N_NODES):
        nodes.append(
            {
                "identity-key": str(tmp_path / f"node{i}.key"),
                "registry": str(tmp_path / "registry.json"),
                "partition-id": i,
            }
        )
    out = tmp_path / "run"
    app = write_app_project(
        tmp_path / "app",
        {
            "registry": str(tmp_path / "registry.json"),
            "out": str(out),
            "key-dir": str(tmp_path / "keys"),
            "n-clients": N_NODES,
            "num-server-rounds": 2,
            "stage-timeout": 120.0,
        },
        apps=("flower_existing_app:server_app", "flower_existing_app:client_app"),
    )
    shutil.copy(EXAMPLE, app / "flower_existing_app.py")
    with LoopbackCluster(tmp_path / "cluster", N_NODES, nodes) as cluster:
        cluster.submit(app)
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "summary.json").exists():
            if time.monotonic() > deadline:
                pytest.fail("run did not finish:\n" + cluster.log(tail=4000))
            time.sleep(1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and not summary["refused"]
    assert 0 < summary["epsilon"] <= 8.0 + 1e-9
    with Ledger(out / "ledger.sqlite") as led:
        assert led.verify().ok
        done = [e.payload for e in led.entries() if e.kind == "round_completed"]
    assert [p["participant_ids"] for p in done] == [[0, 1, 2], [0, 1, 2]]
    assert all(p["aggregation"]["protocol"] == "secagg+" for p in done)
    assert (out / "report.html").exists()
