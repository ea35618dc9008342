"""Audit layer speed: durable ledger appends, verifying 10k entries, a report over 10k rounds.

    python benchmarks/audit_bench.py --quick

The last line is one JSON object. ``append_vs_raw_sqlite`` compares our append (canonical JSON,
SHA-256 chain, Ed25519 head signature, BEGIN IMMEDIATE) with a bare SQLite INSERT committed
with the same durability (WAL, synchronous=FULL) in the same run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from securefl.audit.keys import generate_signing_key
from securefl.audit.ledger import Ledger, PendingEntry, verify_ledger
from securefl.audit.report import build_report, write_html, write_json, write_markdown
from securefl.dp.events import GaussianEvent, PoissonSampledEvent

TS = "2026-01-01T00:00:00.000000Z"


def round_payload(i: int) -> dict[str, object]:
    return {
        "dp_event": PoissonSampledEvent(0.01, GaussianEvent(1.0)).to_dict(),
        "participants": 100 - i % 7,
        "dropouts": i % 7,
        "accuracy": 0.5 + 0.4 * i / (i + 100),
        "loss": 1.0 / (1 + i / 100),
        "bytes_up": 1.2e6,
        "bytes_down": 2.4e6,
        "aggregation": {"protocol": "secagg+", "threshold": 20, "degree": 34, "modulus_bits": 32},
    }


def bench_appends(d: Path, n: int) -> tuple[float, float]:
    key = generate_signing_key()
    ledger = Ledger(d / "appends.db", key, run_id="bench")
    t = time.perf_counter()
    for i in range(n):
        ledger.append("round_completed", round_payload(i), round_id=i)
    ours = n / (time.perf_counter() - t)
    ledger.close()
    conn = sqlite3.connect(d / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, payload TEXT)")
    payload = json.dumps(round_payload(0))
    t = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i + 1, payload))
        conn.execute("COMMIT")
    raw = n / (time.perf_counter() - t)
    conn.close()
    return ours, raw


def big_ledger(d: Path, n: int) -> Path:
    key = generate_signing_key()
    with Ledger(d / "big.db", key, run_id="bench") as ledger:
        ledger.append(
            "run_started",
            {
                "privacy_unit": "client",
                "adjacency": "add-remove",
                "delta": 1e-5,
                "clip": 1.0,
                "noise_multiplier": 1.0,
                "aggregation": round_payload(0)["aggregation"],
            },
            timestamp=TS,
        )
        for start in range(0, n, 1000):
            ledger.append_many(
                PendingEntry("round_completed", round_payload(i), round_id=i, timestamp=TS)
                for i in range(start, min(n, start + 1000))
            )
    return d / "big.db"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="about a minute on 2 cores")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the ledger files")
    args = ap.parse_args()
    n_appends = 300 if args.quick else 3000
    n_big = 10_000
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="audit-bench-") as tmp:
        d = Path(tmp)
        ours, raw = bench_appends(d, n_appends)
        path = big_ledger(d, n_big)
        t = time.perf_counter()
        res = verify_ledger(path)
        verify_s = time.perf_counter() - t
        assert res.ok and res.entries == n_big + 1
        t = time.perf_counter()
        rep = build_report(path)
        write_json(rep, d / "r.json")
        write_markdown(rep, d / "r.md")
        write_html(rep, d / "r.html")
        report_s = time.perf_counter() - t
        t = time.perf_counter()
        build_report(path, accountants=("rdp", "pld"))
        report_no_prv_s = time.perf_counter() - t
        html_kib = (d / "r.html").stat().st_size / 1024
    out = {
        "ledger_appends_per_s": round(ours, 1),
        "raw_sqlite_durable_inserts_per_s": round(raw, 1),
        "append_vs_raw_sqlite": round(raw / ours, 2),
        "verify_10k_entries_s": round(verify_s, 3),
        "report_10k_rounds_s": round(report_s, 2),
        "report_10k_rounds_without_prv_s": round(report_no_prv_s, 2),
        "report_html_kib": round(html_kib, 1),
        "appends_measured": n_appends,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
