"""Reading a run's ledger payloads by kind (the API tests look at what was recorded)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def payloads(run_dir: Path, kind: str) -> list[dict[str, object]]:
    con = sqlite3.connect(run_dir / "ledger.sqlite")
    try:
        rows = con.execute("SELECT payload FROM entries WHERE kind = ?", (kind,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]
