"""Several writer processes append concurrently and are killed with SIGKILL mid-stream:
the ledger still verifies and every entry whose commit was acknowledged is present."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from securefl.audit.keys import load_public_key, write_keypair
from securefl.audit.ledger import Ledger, read_entries, verify_ledger

WRITER = r"""
import sys
from securefl.audit.ledger import Ledger
path, key, wid = sys.argv[1], sys.argv[2], int(sys.argv[3])
ledger = Ledger(path, key, run_id=f"writer-{wid}")
i = 0
while True:
    e = ledger.append("note", {"writer": wid, "i": i, "pad": "x" * (i % 50)}, round_id=i)
    sys.stdout.write(f"{e.seq} {wid} {i} {e.entry_hash}\n")
    sys.stdout.flush()
    i += 1
"""

N_WRITERS = 3
MIN_COMMITS_EACH = 25


def _reader(proc: subprocess.Popen[str], out: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)


def test_sigkill_during_concurrent_appends(tmp_path: Path) -> None:
    db, key = tmp_path / "ledger.db", tmp_path / "signing.pem"
    pub = write_keypair(key)
    Ledger(db, key, run_id="setup").close()  # schema + signed genesis head
    procs, outputs, threads = [], [], []
    for wid in range(N_WRITERS):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(key), str(wid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        t = threading.Thread(target=_reader, args=(p, lines), daemon=True)
        t.start()
        procs.append(p)
        outputs.append(lines)
        threads.append(t)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and min(len(o) for o in outputs) < MIN_COMMITS_EACH:
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.stderr]
        time.sleep(0.05)
    for _ in range(5):  # verification reads one snapshot while writers keep committing
        live = verify_ledger(db, load_public_key(pub))
        assert live.ok, live.errors
    for p in procs:  # kill -9, mid-stream, one after another
        os.kill(p.pid, signal.SIGKILL)
    for p, t in zip(procs, threads, strict=True):
        p.wait(timeout=30)
        t.join(timeout=30)
        assert p.returncode == -signal.SIGKILL
    assert min(len(o) for o in outputs) >= MIN_COMMITS_EACH

    result = verify_ledger(db, load_public_key(pub))
    assert result.ok, result.errors
    entries = {e.seq: e for e in read_entries(db)}
    acknowledged = [line.split() for o in outputs for line in o if line.endswith("\n")]
    for seq, wid, i, h in acknowledged:  # every acknowledged commit survived, unchanged
        e = entries[int(seq)]
        assert e.entry_hash == h
        assert e.payload["writer"] == int(wid) and e.payload["i"] == int(i)
    for wid in range(N_WRITERS):  # each writer's entries are gap-free and in order
        mine = [e.payload["i"] for e in entries.values() if e.run_id == f"writer-{wid}"]
        assert mine == list(range(len(mine)))
    # Every writer committed while the others were alive and contending for the write lock.
    # SQLite's busy handler is not fair, so one writer may hold it for a long burst: the
    # entries are at least N_WRITERS runs of writers (more when the lock changed hands often).
    runs = [e.run_id for e in sorted(entries.values(), key=lambda e: e.seq)]
    assert sum(a != b for a, b in itertools.pairwise(runs)) >= N_WRITERS - 1

    with Ledger(db, key, run_id="after") as ledger:  # the locks died with the writers
        ledger.append("note", {"after": True})
        assert ledger.verify().ok
