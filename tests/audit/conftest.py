"""Fixtures of the audit tests: keys, a populated ledger, and a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.keys import generate_signing_key
from securefl.audit.ledger import Ledger

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TS = "2026-01-31T12:00:00.000000Z"
#: Headless Chromium as the browser tests run it (no network, no profile reuse).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium with :data:`CHROMIUM_FLAGS` and a throwaway profile under ``tmp``."""
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


def round_event(q: float = 0.1, z: float = 1.0) -> dict[str, object]:
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent

    return PoissonSampledEvent(q, GaussianEvent(z)).to_dict()


def run_started_payload(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "privacy_unit": "client",
        "adjacency": "add-remove",
        "delta": 1e-5,
        "mechanism": "dp-fedavg",
        "clip": 1.0,
        "noise_multiplier": 1.0,
        "aggregation": {"protocol": "secagg+", "threshold": 6, "degree": 8, "modulus_bits": 32},
        "code_version": {"securefl": "test", "git_commit": None},
    }
    base.update(over)
    return base


@pytest.fixture
def make_ledger(tmp_path: Path, key: Ed25519PrivateKey) -> Callable[..., Ledger]:
    """A ledger with a run_started entry and ``rounds`` completed rounds."""

    def make(rounds: int = 5, *, name: str = "ledger.db", **round_over: object) -> Ledger:
        ledger = Ledger(tmp_path / name, key, run_id="run-1")
        ledger.append("run_started", run_started_payload(), timestamp=TS)
        for r in range(rounds):
            payload: dict[str, object] = {
                "dp_event": round_event(),
                "participants": 10,
                "dropouts": r % 2,
                "accuracy": 0.5 + r / 100,
                "loss": 1.0 - r / 100,
                "bytes_up": 1000.0 * (r + 1),
                "bytes_down": 500.0,
            }
            payload.update(round_over)
            ledger.append("round_completed", payload, round_id=r, timestamp=TS)
        return ledger

    return make


@pytest.fixture(scope="session")
def chromium() -> Iterator[str]:
    """Path of a headless Chromium, installed with apt-get if missing (we run as root in CI).

    If it cannot be installed: FAIL when the CI variable is set, skip otherwise.
    """
    if not os.path.exists(CHROMIUM):
        ok = False
        if shutil.which("apt-get") is not None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            try:
                subprocess.run(
                    ["apt-get", "update"], check=True, env=env, capture_output=True, timeout=900
                )
                subprocess.run(
                    ["apt-get", "install", "-y", "chromium"],
                    check=True,
                    env=env,
                    capture_output=True,
                    timeout=1800,
                )
                ok = os.path.exists(CHROMIUM)
            except (subprocess.SubprocessError, OSError):
                ok = False
        if not ok:
            msg = "chromium is not installed and apt-get could not install it"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    yield CHROMIUM
