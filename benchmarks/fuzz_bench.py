"""Fuzz every decoder that faces a peer or a file; fail on untyped escapes or hangs.

    python benchmarks/fuzz_bench.py --quick            # ≥ 10^5 mutations, ~1–2 min on 2 cores
    python benchmarks/fuzz_bench.py --full --seed 7    # 10× more
    python benchmarks/fuzz_bench.py --only checkpoint --count 20000

Prints one line per target, the findings (untyped escapes and hangs, with a short reproducer),
the known issues hit (listed in securefl.testing.fuzz_targets.KNOWN_ISSUES, routed to their
owners), and as its last line one JSON object: ``mutations``, ``untyped_escapes``,
``hangs_over_1s`` and per-target counts. Exit status 1 if an escape or hang outside the known
list was found.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from securefl.testing.fuzz import run_target, summary
from securefl.testing.fuzz_targets import BUILDERS, KNOWN_ISSUES

#: Mutations per target in --quick mode (measured: about 1–2 min in total on 2 shared cores).
QUICK: dict[str, int] = {
    "secagg_decode": 30000,
    "secagg_decode_config": 30000,
    "he_update_envelope": 8000,
    "he_server_add": 3000,
    "he_keyholder_decrypt": 2000,
    "tensor_layout": 5000,
    "engine_config": 4000,
    "engine_plan": 4000,
    "engine_unframe": 10000,
    "engine_node": 3000,
    "engine_registry": 2000,
    "engine_identity": 2000,
    "flower_config": 3000,
    "dp_event": 4000,
    "policy_toml": 2000,
    "ledger_file": 1000,
    "ledger_rows": 1000,
    "checkpoint": 3000,
    "run_config": 2000,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="≥ 10^5 mutations (default)")
    mode.add_argument("--full", action="store_true", help="10× the quick counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="targets to run")
    ap.add_argument("--count", type=int, help="mutations per target (overrides the mode)")
    ap.add_argument("--hang-s", type=float, default=1.0)
    args = ap.parse_args(argv)
    scale = 10 if args.full else 1
    names = args.only or list(BUILDERS)
    reports = []
    began = time.perf_counter()
    shm = Path("/dev/shm")  # ledger targets write a file per input: keep fsync off the disk
    tmp_root = str(shm) if shm.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="securefl-fuzz-", dir=tmp_root) as tmp:
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            start = time.perf_counter()
            target = BUILDERS[name](workdir)
            setup = time.perf_counter() - start
            count = args.count or QUICK[name] * scale
            report = run_target(
                target, count, seed=args.seed, hang_s=args.hang_s, known=KNOWN_ISSUES
            )
            reports.append(report)
            print(
                f"{name:22s} {report.mutations:7d} mutations {report.seconds:6.1f} s "
                f"(setup {setup:4.1f} s, slowest {1000 * report.max_seconds:6.1f} ms wall "
                f"{1000 * report.max_cpu_seconds:6.1f} ms CPU) "
                f"accepted {report.accepted:6d} typed {report.typed:7d} "
                f"escapes {report.escapes} hangs {report.hangs} known {report.known}",
                flush=True,
            )
    new = [f for r in reports for f in r.findings.values() if f.known is None]
    known = [f for r in reports for f in r.findings.values() if f.known is not None]
    if new:
        print("\nFINDINGS (untyped escapes / hangs):")
        for f in new:
            print(json.dumps(f.to_dict(), ensure_ascii=True))
    if known:
        print("\nknown issues hit (routed to their owners):")
        for f in known:
            print(json.dumps(f.to_dict(), ensure_ascii=True))
    out = summary(reports)
    out["seed"] = args.seed
    out["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(out, sort_keys=True))
    return 1 if out["untyped_escapes"] or out["hangs_over_1s"] else 0


if __name__ == "__main__":
    sys.exit(main())
