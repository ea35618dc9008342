"""CKKS on the REAL Flower deployment runtime on loopback: one SuperLink, one key-holder
SuperNode and three client SuperNodes (securefl.engine.he_job).

The key holder is its own SuperNode (``role = "keyholder"``), its secret key in a directory of
its own; the clients pin its public-context fingerprint. Two rounds of the tiny model with
central DP (the key holder adds the noise); the report is written and ``securefl audit
verify`` passes on the server's ledger. Every process runs in its own session and is killed
on exit (LoopbackCluster); only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from securefl.audit.ledger import Ledger
from securefl.engine.deploy import JOB_APPS, write_app_project
from securefl.engine.he_job import init_key_holder
from securefl.engine.identity import generate_identity, save_registry
from securefl.testing.flower_cluster import BIN, LoopbackCluster, flower_available

pytestmark = pytest.mark.slow

N_CLIENTS = 3
TIMEOUT_S = 900.0  # a loaded 2-core CI machine runs a process per Flower message
RUN_TOML = """[run]
name = "flower-he-job"
model = "tiny"
synthetic_examples = 48
n_clients = 3
rounds = 2
sampling = "fixed"
clients_per_round = 3
local_epochs = 1
max_length = 16
clip = 1.0
aggregation = "he"
noise_multiplier = 1.1
"""


def test_he_job_on_flower_with_the_key_holder_as_its_own_supernode(tmp_path: Path) -> None:
    if not flower_available():
        pytest.skip("Flower binaries not installed")
    d = tmp_path
    (d / "sites").mkdir()
    registry = {
        u: generate_identity(d / "sites" / f"node{u}.key", u).public
        for u in range(1, N_CLIENTS + 1)
    }
    save_registry(d / "registry.json", registry)
    (d / "keyholder").mkdir()
    fingerprint = init_key_holder(d / "keyholder" / "ckks.secret")
    (d / "run.toml").write_text(RUN_TOML)
    result = d / "result.json"
    app = write_app_project(
        d / "app",
        {
            "config": str(d / "run.toml"),
            "out": str(d / "server-run"),
            "key-dir": str(d / "server-keys"),
            "registry": str(d / "registry.json"),
            "min-nodes": N_CLIENTS + 1,
            "node-wait-timeout": 60.0,
            "stage-timeout": 120.0,
            "train-timeout": 300.0,
            "evaluate": False,
            "result-file": str(result),
        },
        apps=JOB_APPS,
    )
    keyholder = {
        "role": "keyholder",
        "he-secret-key": str(d / "keyholder" / "ckks.secret"),
        "registry": str(d / "registry.json"),
    }
    clients = [
        {
            "identity-key": str(d / "sites" / f"node{u}.key"),
            "registry": str(d / "registry.json"),
            "key-holder-fingerprint": fingerprint.hex(),
        }
        for u in range(1, N_CLIENTS + 1)
    ]
    t0 = time.monotonic()
    with LoopbackCluster(d / "cluster", N_CLIENTS + 1, [keyholder, *clients]) as cluster:
        cluster.submit(app)
        while not result.exists():
            if time.monotonic() - t0 > TIMEOUT_S:
                raise TimeoutError(f"no result in {TIMEOUT_S} s:\n{cluster.log()}")
            time.sleep(0.2)
    summary = json.loads(result.read_text())
    assert summary["rounds_completed"] == 2 and not summary["node_errors"]
    run = d / "server-run"
    assert (run / "report.html").exists()
    with Ledger(run / "ledger.sqlite") as led:
        done = [e.payload for e in led.entries() if e.kind == "round_completed"]
        run_id = next(e.run_id for e in led.entries() if e.kind == "run_started")
    assert [r["participants"] for r in done] == [N_CLIENTS, N_CLIENTS]
    for r in done:
        assert r["aggregation"]["key_holder"] == "own node"
        assert "key_holder" in r["aggregation"]["release"]["central_noise"]
    # the key holder released each round once, and nothing the server wrote is a context
    state = json.loads((d / "keyholder" / "ckks.secret.rounds.json").read_text())
    assert state[run_id]["released"] == [0, 1]
    for folder in (run, d / "server-keys"):
        for f in folder.rglob("*"):
            assert not (f.is_file() and f.read_bytes()[:4] == b"SFHC"), f
    done_audit = subprocess.run(
        [
            str(BIN / "securefl"),
            "audit",
            "verify",
            str(run / "ledger.sqlite"),
            "--public-key",
            summary["ledger_public_key"],
        ],
        capture_output=True,
        timeout=180,
    )
    assert done_audit.returncode == 0, done_audit.stdout[-1500:] + done_audit.stderr[-1500:]
