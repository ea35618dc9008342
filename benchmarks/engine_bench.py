"""The whole securefl job on Flower's deployment runtime vs in process (issue 11 figures).

``python benchmarks/engine_bench.py --quick`` prints, as its last line, one JSON object with

* ``engine_overhead_ratio`` — median wall time of a SecAgg+ round with distributed DP (5 nodes,
  every node in every round, d = 10^5) on a real Flower loopback cluster (one SuperLink, five
  SuperNodes, ``flwr run``; :class:`securefl.testing.flower_cluster.LoopbackCluster`) minus
  ``flower_poll_s_per_round``, divided by the median wall time of the same round over
  :class:`~securefl.engine.local.InProcessTransport` (same nodes, config, seed). A round's
  wall time is the engine round, first request to decoded sum (``timings.local_training`` of
  ``metrics.jsonl``), measured identically on both sides; the orchestrator's own work is the
  same code in both and left out.
* ``flower_poll_s_per_round`` — Flower's fixed per-round cost, measured, not assumed: the
  median Flower round at d = 10^3 minus the median in-process round at d = 10^3. It is what
  a round pays for each of its ``stages_per_round`` exchanges whatever d is: the ServerApp's
  pull interval (``POLL_S``), the SuperNode/SuperExec polls, and a fresh ``flwr-clientapp``
  process per message (Flower starts one per message; it installs the app bundle and imports
  flwr + securefl: ``clientapp_import_s`` measures the import alone). The figure subtracted
  is exactly this difference; ``flower_round_s`` and ``inprocess_round_s`` are the raw medians.
* ``wire_bytes_per_param`` — bytes a surviving client sends, all stages (advertise, shares,
  masked input, unmask), per parameter: ``bytes_up / survivors / d`` of the d = 10^5 round.
  ``bytes_up`` is counted by the engine server (:mod:`securefl.engine.server`) as the
  ``payload`` (+ ``binding``) bytes of each reply it accepts, after the transport has decoded
  them, so it is the same figure over Flower and in process (``wire_bytes_per_param_flower``
  checks it); Flower's own record framing is not in it. ``ring_bits`` is the width of the
  masked-input ring (DDGauss under distributed DP: 24), sent **bit-packed** at that width
  (SecAgg wire version 2, ``protocols/secagg.md`` §5: ``⌈d'·b/8⌉`` bytes; version 1 sent a
  32-bit word per coordinate); ``encoded_dimension`` d' is the coordinates masked (DDGauss pads
  d only to a multiple of its Hadamard block, ``protocols/dp.md`` §4.3; it used to pad to the
  next power of two, 10^5 → 131,072) and ``wire_bytes_per_encoded_coordinate`` the bytes per
  masked coordinate (b/8 plus the other stages' few hundred bytes).
* ``large_d_round_s`` / ``large_d_peak_mb_per_node`` (with ``large_d``) — one SecAgg+ round
  on the Flower cluster at d = 10^7 (``--quick``: 10^6); the peak is the largest VmHWM of a
  node's ``flwr-clientapp`` processes (polled from ``/proc`` every 0.1 s; the process that
  does the node's work), ``large_d_supernode_peak_mb`` the largest SuperNode process's VmHWM
  (it relays the messages). A failing size is reported in ``large_d_error`` with the largest
  d that worked.

Each Flower run is one ``flwr run`` (its ServerApp start is not in a round). Use one cluster at a
time on a shared machine; every process group is killed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from securefl.engine.deploy import JOB_APPS, write_app_project
from securefl.engine.flower import POLL_S
from securefl.testing import engine_synthetic as es
from securefl.testing.flower_cluster import LoopbackCluster

N_NODES = 5
SMALL_D = 1_000
MAIN_D = 100_000


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class PeakSampler:
    """Largest VmHWM of each node's ClientApp processes while a run goes on."""

    def __init__(self, cluster: LoopbackCluster) -> None:
        self.cluster = cluster
        self.node_of_group = {p.pid: i for i, p in enumerate(cluster.nodes)}
        self.peak: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for pid in self.cluster.clientapp_pids():
                try:
                    node = self.node_of_group.get(os.getpgid(pid))
                except OSError:
                    continue
                if node is not None:
                    self.peak[node] = max(self.peak.get(node, 0.0), _vm_hwm_mb(pid))
            time.sleep(0.1)

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def flower_run(
    cluster: LoopbackCluster, root: Path, name: str, d: int, rounds: int, timeout: float
) -> dict[str, Any]:
    """One ``flwr run`` of the synthetic job; its per-round figures (or the error)."""
    run = root / name
    run.mkdir()
    (run / "run.toml").write_text(es.run_toml(es.run_fields(N_NODES, d, rounds)))
    result, progress = run / "result.json", run / "progress.jsonl"
    app = write_app_project(
        run / "app",
        {
            "config": str(run / "run.toml"),
            "out": str(run / "out"),
            "key-dir": str(run / "keys"),
            "registry": str(root / "ids" / "registry.json"),
            "model": es.MODEL_REF,
            "evaluate": False,
            "min-nodes": N_NODES,
            "node-wait-timeout": 120.0,
            "stage-timeout": timeout,
            "train-timeout": timeout,
            "result-file": str(result),
            "progress-file": str(progress),
        },
        apps=JOB_APPS,
    )
    t0 = time.monotonic()
    with PeakSampler(cluster) as sampler:
        cluster.submit(app)
        seen_server = False
        gone_since: float | None = None
        while not result.exists():
            now = time.monotonic()
            alive = bool(cluster.serverapp_pids())
            seen_server |= alive
            gone_since = None if alive else (gone_since or now)
            if now - t0 > 10 * timeout or (seen_server and gone_since and now - gone_since > 15):
                return {"error": "the ServerApp ended without a result", "log": cluster.log()}
            time.sleep(0.2)
    summary = json.loads(result.read_text())
    metrics = [json.loads(x) for x in (run / "out" / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in progress.read_text().splitlines() if x.strip()]
    stages = [e for e in events if e.get("event") == "stage" and e.get("round") == 0]
    figures = es.round_figures(metrics, d)
    out: dict[str, Any] = {
        "rounds": figures,
        "stages_per_round": len(stages),
        "node_errors": summary.get("node_errors", {}),
        "peak_mb": sampler.peak,
        "supernode_mb": max(_vm_hwm_mb(p.pid) for p in cluster.nodes),
    }
    if len(figures) < rounds:
        out["error"] = f"{rounds - len(figures)} of {rounds} rounds aborted: {summary}"
    return out


def inprocess_rounds(d: int, rounds: int) -> tuple[list[dict[str, float]], int]:
    """Per-round figures of the in-process job and its ring width."""
    with tempfile.TemporaryDirectory() as tmp:
        res = es.run_in_process(tmp, es.run_fields(N_NODES, d, rounds), N_NODES)
        return es.round_figures(res.metrics, d), ring_bits(Path(tmp) / "run")


def ring_bits(run_dir: Path) -> int:
    """Width of the masked-input ring as the server's ledger recorded it (first round)."""
    from securefl.audit.ledger import Ledger

    with Ledger(run_dir / "ledger.sqlite") as led:
        done = [e for e in led.entries() if e.kind == "round_completed"]
    return int(done[0].payload["aggregation"]["bits"])


def encoded_length(d: int) -> int:
    """Coordinates the nodes actually mask at dimension d (DDGauss pads to a multiple of its
    Hadamard block, ``securefl.dp.distributed.rotation_block``; fixed point does not pad)."""
    from securefl.engine.job import job_backend, ring_encoder, secagg_of
    from securefl.fl.config import from_mapping

    cfg = from_mapping(es.run_fields(N_NODES, d, 1))
    agg = secagg_of(job_backend(cfg, cfg.noise_multiplier, d))
    ring = ring_encoder(agg)({}, {}, N_NODES, bytes(64), 0)
    return int(ring.dimension)


def clientapp_import_s(reps: int = 3) -> float:
    """Wall time of the imports a fresh ``flwr-clientapp`` process pays (median)."""
    code = (
        "import flwr.supernode.runtime.run_clientapp, securefl.engine.flower_job, "
        "securefl.testing.engine_synthetic"
    )
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_s(rounds: list[dict[str, float]]) -> float:
    return statistics.median(r["round_s"] for r in rounds) if rounds else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds per size, large d = 10^6")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    # SIGTERM (a timeout) unwinds like Ctrl-C, so the cluster's processes are killed on exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rounds = args.rounds or (2 if args.quick else 5)
    large_d = 10**6 if args.quick else 10**7
    timeout = 600.0
    out: dict[str, Any] = {"n_nodes": N_NODES, "d": MAIN_D, "rounds_per_size": rounds}
    out["load_avg_1m_start"] = os.getloadavg()[0]
    t_start = time.monotonic()

    inproc_small, _ = inprocess_rounds(SMALL_D, rounds)
    inproc_main, bits = inprocess_rounds(MAIN_D, rounds)
    out["clientapp_import_s"] = round(clientapp_import_s(), 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        es.identities(root / "ids", N_NODES)
        configs = [
            {
                "identity-key": str(root / "ids" / f"node{u}.key"),
                "registry": str(root / "ids" / "registry.json"),
                "training": es.TRAINING_REF,
            }
            for u in range(1, N_NODES + 1)
        ]
        with LoopbackCluster(root / "cluster", N_NODES, configs) as cluster:
            fl_small = flower_run(cluster, root, "small", SMALL_D, rounds, timeout)
            fl_main = flower_run(cluster, root, "main", MAIN_D, rounds, timeout)
            large: dict[str, Any] = {}
            for d in (large_d, large_d // 2, large_d // 10):
                large = flower_run(cluster, root, f"large{d}", d, 1, timeout)
                large["d"] = d
                if "error" not in large:
                    break
                out.setdefault("large_d_error", {})[str(d)] = str(large["error"])[-800:]
    for name, run in (("small", fl_small), ("main", fl_main)):
        if "error" in run:
            out[f"flower_{name}_error"] = str(run["error"])[-800:]

    fixed = median_s(fl_small.get("rounds", [])) - median_s(inproc_small)
    flower_main = median_s(fl_main.get("rounds", []))
    inproc = median_s(inproc_main)
    out.update(
        engine_overhead_ratio=round((flower_main - fixed) / inproc, 3),
        flower_poll_s_per_round=round(fixed, 3),
        flower_round_s=round(flower_main, 3),
        inprocess_round_s=round(inproc, 3),
        flower_round_s_d1000=round(median_s(fl_small.get("rounds", [])), 3),
        inprocess_round_s_d1000=round(median_s(inproc_small), 3),
        stages_per_round=fl_main.get("stages_per_round"),
        server_poll_s=POLL_S,
        wire_bytes_per_param=round(inproc_main[0]["wire_bytes_per_param"], 4),
        wire_bytes_per_param_flower=round(fl_main["rounds"][0]["wire_bytes_per_param"], 4)
        if fl_main.get("rounds")
        else None,
        ring_bits=bits,
        encoded_dimension=encoded_length(MAIN_D),
        wire_bytes_per_encoded_coordinate=round(
            inproc_main[0]["bytes_up_per_client"] / encoded_length(MAIN_D), 4
        ),
        large_d=large.get("d"),
        large_d_round_s=round(large["rounds"][0]["round_s"], 3) if large.get("rounds") else None,
        large_d_peak_mb_per_node=round(max(large.get("peak_mb", {0: 0.0}).values()), 1),
        large_d_supernode_peak_mb=round(large.get("supernode_mb", 0.0), 1),
        node_errors={k: v for k, v in fl_main.get("node_errors", {}).items()},
        load_avg_1m_end=os.getloadavg()[0],
        wall_s=round(time.monotonic() - t_start, 1),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
