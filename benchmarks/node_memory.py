"""Peak memory of one node's SecAgg+ round with distributed DP, in process (issue 11, item 4).

``python benchmarks/node_memory.py --d 1000000`` runs the synthetic engine job (5 nodes, one
round, SecAgg+ with DDGauss, :mod:`securefl.testing.engine_synthetic`) over the in-process
transport and prints one JSON line: for node 1, per stage, the peak bytes its ``handle`` call
allocated on top of what was live when the call began (``tracemalloc``: numpy reports its
buffers to it), in MB, and that peak per model parameter. On Flower every stage runs in a fresh
``flwr-clientapp`` process, so a node's peak is the largest stage plus the interpreter and the
request it decoded; this isolates the part that scales with d.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Mapping, MutableMapping
from typing import Any

from securefl.engine.job import JobNode
from securefl.testing import engine_synthetic as es

N_NODES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10**6)
    args = parser.parse_args()
    peaks: dict[int, float] = {}
    seconds: dict[int, float] = {}
    original = JobNode.handle
    watched: list[JobNode] = []

    def handle(
        self: JobNode, request: Mapping[str, Any], store: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        if self.identity.client_id != 1:
            return original(self, request, store)
        watched.append(self)
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        try:
            return original(self, request, store)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            stage = int(request["stage"])
            peaks[stage] = max(peaks.get(stage, 0.0), (peak - start) / 2**20)
            seconds[stage] = time.perf_counter() - t0

    JobNode.handle = handle  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = es.run_in_process(tmp, es.run_fields(N_NODES, args.d, 1), N_NODES)
    finally:
        tracemalloc.stop()
        JobNode.handle = original  # type: ignore[method-assign]
    figures = es.round_figures(res.metrics, args.d)
    worst = max(peaks.values())
    print(
        json.dumps(
            {
                "d": args.d,
                "node_stage_peak_mb": {str(k): round(v, 1) for k, v in sorted(peaks.items())},
                "node_stage_s": {str(k): round(v, 2) for k, v in sorted(seconds.items())},
                "node_peak_mb": round(worst, 1),
                "node_peak_bytes_per_param": round(worst * 2**20 / args.d, 1),
                "wire_bytes_per_param": round(figures[0]["wire_bytes_per_param"], 4)
                if figures
                else None,
                "round_s": round(figures[0]["round_s"], 2) if figures else None,
            }
        )
    )


if __name__ == "__main__":
    main()
