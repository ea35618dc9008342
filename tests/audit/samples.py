"""The three sample reports reviewers look at: the committed default-style DP run, a run
without DP, and a tampered copy of the DP run's ledger."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.ledger import Ledger
from securefl.audit.policy import BudgetPolicy
from securefl.audit.report import build_report

from .conftest import TS, run_started_payload

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "audits" / "examples"
POLICY = REPO / "audits" / "policies" / "client_level_secagg.toml"
SAMPLES = ("dp", "no_dp", "tampered")


def dp_report() -> dict[str, Any]:
    return build_report(
        EXAMPLES / "ledger.sqlite",
        BudgetPolicy.load(POLICY),
        public_key=EXAMPLES / "ledger.pub",
        expected_head=(EXAMPLES / "ledger.anchor").read_text().strip(),
        generated_at=TS,
        title="Privacy report — sample DP-FedAvg run",
        source_label="audits/examples/ledger.sqlite",
    )


def no_dp_report(tmp: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A run with ``dp = "none"`` over SecAgg+: every round records a non-private event."""
    ledger = Ledger(tmp / "no_dp.sqlite", key, run_id="no-dp-run")
    ledger.append(
        "run_started",
        run_started_payload(
            dp={"mode": "none", "delta": 1e-5},
            mechanism=None,
            clip=None,
            noise_multiplier=None,
            planned_rounds=8,
        ),
        timestamp=TS,
    )
    for r in range(8):
        ledger.append(
            "round_completed",
            {
                "dp_event": {"type": "non_private"},
                "participants": 10,
                "dropouts": r % 2,
                "accuracy": 0.6 + r / 40,
                "bytes_up": 180_000.0 * 10,
                "bytes_down": 90_000.0 * 10,
            },
            round_id=r,
            timestamp=TS,
        )
    ledger.append("run_finished", {"rounds_completed": 8}, timestamp=TS)
    return build_report(
        ledger,
        public_key=key.public_key(),
        generated_at=TS,
        title="Privacy report — sample run without DP",
        source_label="no_dp/ledger.sqlite",
    )


def tampered_report(tmp: Path) -> dict[str, Any]:
    """The sample DP ledger with one round's payload edited after the fact."""
    copy = tmp / "tampered.sqlite"
    shutil.copy(EXAMPLES / "ledger.sqlite", copy)
    conn = sqlite3.connect(copy)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute(
        "UPDATE entries SET payload = replace(payload, '\"participants\":', '\"participants\": ')"
        " WHERE seq = (SELECT min(seq) FROM entries WHERE kind = 'round_completed')"
    )
    conn.commit()
    conn.close()
    return build_report(
        copy,
        BudgetPolicy.load(POLICY),
        public_key=EXAMPLES / "ledger.pub",
        generated_at=TS,
        title="Privacy report — tampered copy of the sample ledger",
        source_label="tampered copy of audits/examples/ledger.sqlite",
    )


def sample_report(name: str, tmp: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    if name == "dp":
        return dp_report()
    if name == "no_dp":
        return no_dp_report(tmp, key)
    return tampered_report(tmp)


# Words that must never reach a page: Python reprs, internal markers, local paths, arg names.
ARTEFACTS = (
    "{'",
    "None",
    "charts:",
    "render-check",
    "not rendered by a browser",
    "file://",
    "/tmp/",
    "/work/",
    "expected_head",
    "public_key=",
)


def flat(text: str) -> str:
    """Whitespace-normalised text (PDF text breaks lines inside sentences)."""
    return " ".join(text.split())
