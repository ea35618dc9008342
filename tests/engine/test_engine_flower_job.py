"""The whole job on the REAL Flower deployment runtime on loopback: one SuperLink, eight
SuperNodes.

SecAgg+ with distributed DP over three rounds of the tiny model (n = 8: degree k = 6,
threshold t = 4, so two dropouts leave every survivor t live neighbours; with n = 6, k = 4,
t = 3 two dropouts abort the round cleanly, as the in-process tests show), every node with its
own policy and signed ledger; node 8's policy allows far less ε than the run spends, so it
refuses every round. In round 1 one SuperNode's process group is SIGKILLed right after the advertise
stage (mid-round): the round completes over the survivors. After round 1 is recorded the
ServerApp process is SIGKILLed and the run submitted again: it resumes from its checkpoint and
finishes with the ε and the events of an uninterrupted simulation of the same config. Every
process is started in its own session and killed in ``finally``; only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from securefl.audit.ledger import Ledger
from securefl.engine.deploy import (
    JOB_APPS,
    node_config_arg,
    write_app_project,
    write_superlink_connection,
)
from securefl.engine.identity import generate_identity, save_registry
from securefl.fl.config import RunConfig
from securefl.fl.config import load as load_config
from securefl.fl.run import run_simulation
from securefl.testing.flower_cluster import BIN, app_pids
from securefl.testing.flower_cluster import free_port as _free_port
from securefl.testing.flower_cluster import kill_group as _kill
from securefl.testing.flower_cluster import serverapp_pids as _serverapp_pids
from securefl.testing.flower_cluster import wait_port as _wait_port

pytestmark = pytest.mark.slow

N_NODES = 8
KILLED = 2  # SuperNode index killed mid-round 1 (client 3)
STRICT = 7  # SuperNode index whose own policy refuses the run (client 8)
TIMEOUT_S = 1500.0  # a loaded 2-core CI machine runs a process per Flower message
RUN_TOML = """[run]
name = "flower-job"
model = "tiny"
synthetic_examples = 120
n_clients = 8
rounds = 3
sampling = "poisson"
sampling_rate = 1.0
local_epochs = 1
max_length = 16
clip = 1.0
aggregation = "secagg+"
dp = "distributed"
target_epsilon = 8.0
policy = "{policy}"
"""
POLICY = Path(__file__).resolve().parents[2] / "audits" / "policies" / "client_level_secagg.toml"
NODE_POLICY = 'kind = "node"\nmax_epsilon_per_run = {eps}\nmax_epsilon_total = 100.0\n'


def _events(progress: Path) -> list[dict[str, Any]]:
    if not progress.exists():
        return []
    return [json.loads(x) for x in progress.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def job_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (BIN / "flower-superlink").exists() or not (BIN / "flwr").exists():
        pytest.skip("Flower binaries not installed")
    d = tmp_path_factory.mktemp("flowerjob")
    home = d / "home"
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    registry = {u: generate_identity(d / f"node{u}.key", u).public for u in range(1, N_NODES + 1)}
    save_registry(d / "registry.json", registry)
    (d / "run.toml").write_text(RUN_TOML.format(policy=POLICY))
    (d / "ledgers").mkdir()
    for i in range(N_NODES):
        (d / f"policy{i}.toml").write_text(NODE_POLICY.format(eps=1.0 if i == STRICT else 20.0))
    result, progress = d / "result.json", d / "progress.jsonl"
    app = write_app_project(
        d / "app",
        {
            "config": str(d / "run.toml"),
            "out": str(d / "server-run"),
            "key-dir": str(d / "server-keys"),
            "registry": str(d / "registry.json"),
            "min-nodes": N_NODES,
            "node-wait-timeout": 60.0,
            "stage-timeout": 60.0,
            "train-timeout": 400.0,
            "result-file": str(result),
            "progress-file": str(progress),
        },
        apps=JOB_APPS,
    )
    link_port = _free_port()
    write_superlink_connection(home, f"127.0.0.1:{link_port}", insecure=True)
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    killed = {"node": False, "server": False}

    def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(d / log, "wb") as fh:
            proc = subprocess.Popen(
                args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        return proc

    def killer(node: subprocess.Popen[bytes]) -> None:
        while not stop.is_set():
            events = _events(progress)
            if not killed["node"] and any(
                e.get("round") == 1 and e.get("stage") == "advertise_keys" for e in events
            ):
                _kill(node)
                killed["node"] = True
            if not killed["server"] and any(
                e["event"] == "round" and e.get("round") == 1 for e in events
            ):
                for pid in _serverapp_pids(home):
                    os.kill(pid, 9)
                    killed["server"] = True
                if killed["server"]:
                    return
            time.sleep(0.05)

    def submit() -> None:
        done = subprocess.run(
            [str(BIN / "flwr"), "run", str(app)], env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    t0 = time.monotonic()
    try:
        start(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
                "--disable-runtime-dependency-installation",
            ],
            "superlink.log",
        )
        _wait_port(link_port, t0 + 30)
        nodes = []
        for i in range(N_NODES):
            node_config = {
                "identity-key": str(d / f"node{i + 1}.key"),
                "registry": str(d / "registry.json"),
                "node-policy": str(d / f"policy{i}.toml"),
                "node-ledger": str(d / "ledgers" / f"node{i}.sqlite"),
                "node-key-dir": str(d / f"node{i}-keys"),
            }
            args = [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{link_port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(_free_port()),
                "--node-config",
                node_config_arg(node_config),
            ]
            nodes.append(start(args, f"supernode{i}.log"))
        watcher = threading.Thread(target=killer, args=(nodes[KILLED],), daemon=True)
        watcher.start()
        submit()
        while not killed["server"]:
            if result.exists():
                break  # the run outpaced the killer: reported by the test below
            if time.monotonic() - t0 > TIMEOUT_S:
                raise TimeoutError("the ServerApp never reached round 1")
            time.sleep(0.2)
        if killed["server"]:
            submit()  # the same app and run config: the ServerApp resumes the run
        while not result.exists():
            if time.monotonic() - t0 > TIMEOUT_S:
                logs = (d / "superlink.log").read_text()[-3000:]
                raise TimeoutError(f"no result within {TIMEOUT_S} s; SuperLink log:\n{logs}")
            time.sleep(0.2)
        yield {
            "dir": d,
            "summary": json.loads(result.read_text()),
            "killed": dict(killed),
            "events": _events(progress),
        }
    finally:
        stop.set()
        for proc in procs:
            _kill(proc)
        for pid in app_pids(home, ""):  # SuperExec and apps run in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_job_finishes_after_node_and_server_kills(job_run: dict[str, Any]) -> None:
    assert job_run["killed"] == {"node": True, "server": True}
    summary = job_run["summary"]
    assert summary["rounds_completed"] == 3
    metrics = [json.loads(x) for x in (job_run["dir"] / "server-run" / "metrics.jsonl").open()]
    by_round = {m["round"]: m for m in metrics}
    assert by_round[0]["participants"] == list(range(STRICT))  # the strict node refused
    assert by_round[1]["participants"] == [c for c in range(STRICT) if c != KILLED]
    assert KILLED not in by_round[2]["participants"]


def test_job_events_equal_an_uninterrupted_simulation(job_run: dict[str, Any]) -> None:
    d: Path = job_run["dir"]
    cfg: RunConfig = load_config(
        d / "run.toml", out=str(d / "sim-run"), key_dir=str(d / "sim-keys")
    ).replace(dropout_rate=0.0)
    sim = run_simulation(cfg)
    assert job_run["summary"]["epsilon"] == pytest.approx(sim.epsilon, rel=1e-12)
    events = {}
    for name in ("server-run", "sim-run"):
        with Ledger(d / name / "ledger.sqlite") as led:
            assert led.verify().ok
            done = [e for e in led.entries() if e.kind == "round_completed"]
            events[name] = [(e.round_id, e.payload["dp_event"]) for e in done]
    assert [r for r, _ in events["server-run"]] == [0, 1, 2]  # no round charged twice
    assert events["server-run"] == events["sim-run"]


def test_strict_node_refuses_and_both_ledgers_say_so(job_run: dict[str, Any]) -> None:
    d: Path = job_run["dir"]
    with Ledger(d / "server-run" / "ledger.sqlite") as led:
        refusals = [e.payload for e in led.entries() if e.kind == "node_refusal"]
    assert refusals and all("NodePolicyRefusal" in r["reason"] for r in refusals)
    with Ledger(d / "ledgers" / f"node{STRICT}.sqlite") as led:
        assert led.verify().ok
        kinds = [e.kind for e in led.entries()]
    assert "node_round_refused" in kinds


def _audit(*args: str) -> None:
    done = subprocess.run([str(BIN / "securefl"), "audit", *args], capture_output=True, timeout=180)
    assert done.returncode == 0, (args, done.stdout[-1500:], done.stderr[-1500:])


def test_server_and_node_ledgers_verify_and_check(job_run: dict[str, Any]) -> None:
    d: Path = job_run["dir"]
    server_key = job_run["summary"]["ledger_public_key"]
    server_ledger = str(d / "server-run" / "ledger.sqlite")
    _audit("verify", server_ledger, "--public-key", server_key)
    _audit("check", server_ledger, "--policy", str(POLICY), "--public-key", server_key)
    for i in range(N_NODES):
        ledger = str(d / "ledgers" / f"node{i}.sqlite")
        key = str(d / f"node{i}-keys" / "node-ledger.pem.pub")
        _audit("verify", ledger, "--public-key", key)
        _audit("check", ledger, "--policy", str(d / f"policy{i}.toml"), "--public-key", key)
