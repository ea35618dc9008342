"""Verification of a ledger copy on read-only media, as an unprivileged auditor (issue 14,
Trust 2): it verifies and reports, changes nothing, leaves no ``-wal``/``-shm`` behind, and a
ledger that cannot be read is an I/O error (exit 2), never "INVALID"."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.keys import public_key_raw
from securefl.audit.ledger import Ledger, LedgerOpenError, read_entries, verify_ledger

from .conftest import TS, round_event, run_started_payload

REPO = Path(__file__).resolve().parents[2]


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _unprivileged_prefix() -> list[str]:
    """How to run a command without privileges over the read-only directory.

    As root (tests run as root here): ``setpriv`` with an empty capability bounding set and
    ``no_new_privs`` — a root without CAP_DAC_OVERRIDE is bound by file modes like any user.
    (User ``nobody`` cannot run this interpreter: it lives under the 0700 /root.) Not root:
    ourselves, bound by the modes already.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv: cannot drop privileges for this test")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """``securefl audit ARGS`` without privileges (see :func:`_unprivileged_prefix`)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    code = "import sys; from securefl.cli import app; app(['audit', *sys.argv[1:]])"
    return subprocess.run(
        [*_unprivileged_prefix(), sys.executable, "-c", code, *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_unprivileged_runner_really_cannot_write(media: tuple[Path, Path]) -> None:
    """Guard: the tests below would prove nothing if the subprocess could write there."""
    ro, _ = media
    (ro / "f").write_text("x")
    os.chmod(ro / "f", 0o444)
    os.chmod(ro, 0o555)
    probe = (
        "import sys\n"
        "for p, m in ((sys.argv[1] + '/new', 'w'), (sys.argv[1] + '/f', 'a')):\n"
        "    try:\n"
        "        open(p, m)\n"
        "    except PermissionError:\n"
        "        continue\n"
        "    sys.exit('could write ' + p)\n"
    )
    res = subprocess.run(
        [*_unprivileged_prefix(), sys.executable, "-c", probe, str(ro)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr


@pytest.fixture
def media() -> Iterator[tuple[Path, Path]]:
    """(read-only directory, writable output directory) that user nobody can reach."""
    base = Path(tempfile.mkdtemp(prefix="securefl-ro-"))
    os.chmod(base, 0o755)
    ro, out = base / "ro", base / "out"
    ro.mkdir()
    out.mkdir()
    os.chmod(out, 0o777)
    try:
        yield ro, out
    finally:
        os.chmod(ro, 0o755)
        shutil.rmtree(base)


def _write_ledger(path: Path, key: Ed25519PrivateKey, rounds: int = 3) -> Ledger:
    ledger = Ledger(path, key, run_id="run-1")
    ledger.append("run_started", run_started_payload(planned_rounds=rounds), timestamp=TS)
    for r in range(rounds):
        ledger.append(
            "round_completed",
            {"dp_event": round_event(), "participants": 10},
            round_id=r,
            timestamp=TS,
        )
    return ledger


def _seal(ro: Path, key: Ed25519PrivateKey) -> None:
    (ro / "ledger.pub").write_text(public_key_raw(key.public_key()).hex())
    for p in ro.iterdir():
        os.chmod(p, 0o444)
    os.chmod(ro, 0o555)


@pytest.mark.parametrize("finalized", [False, True], ids=["closed-wal", "finalized"])
def test_read_only_copy_verifies_and_reports_leaving_nothing(
    media: tuple[Path, Path], tmp_path: Path, key: Ed25519PrivateKey, finalized: bool
) -> None:
    ro, out = media
    ledger = _write_ledger(tmp_path / "ledger.sqlite", key)
    if finalized:
        ledger.finalize()
    ledger.close()
    shutil.copy(tmp_path / "ledger.sqlite", ro / "ledger.sqlite")
    _seal(ro, key)
    before = _snapshot(ro)
    ledger_path, pub = str(ro / "ledger.sqlite"), str(ro / "ledger.pub")

    res = run_unprivileged("verify", ledger_path, "-k", pub)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("OK: 4 entries") and "INVALID" not in res.stdout
    res = run_unprivileged("report", ledger_path, "-k", pub, "-o", str(out), "--formats", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "privacy_report.json").is_file()
    assert _snapshot(ro) == before  # no -wal / -shm, no byte changed


def test_live_wal_copy_with_its_shm_verifies_every_committed_entry(
    media: tuple[Path, Path], tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    ro, _ = media
    ledger = _write_ledger(tmp_path / "ledger.sqlite", key, rounds=5)  # left open: live WAL
    try:
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(tmp_path / f"ledger.sqlite{suffix}", ro / f"ledger.sqlite{suffix}")
    finally:
        ledger.close()
    assert (ro / "ledger.sqlite-wal").stat().st_size > 0
    _seal(ro, key)
    before = _snapshot(ro)
    res = run_unprivileged("verify", str(ro / "ledger.sqlite"), "-k", str(ro / "ledger.pub"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("OK: 6 entries")  # the WAL's entries too, not an old prefix
    assert _snapshot(ro) == before


def test_wal_without_shm_on_read_only_media_is_an_io_error_not_invalid(
    media: tuple[Path, Path], tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    ro, _ = media
    ledger = _write_ledger(tmp_path / "ledger.sqlite", key)
    try:
        for suffix in ("", "-wal"):
            shutil.copy(tmp_path / f"ledger.sqlite{suffix}", ro / f"ledger.sqlite{suffix}")
    finally:
        ledger.close()
    _seal(ro, key)
    before = _snapshot(ro)
    res = run_unprivileged("verify", str(ro / "ledger.sqlite"), "-k", str(ro / "ledger.pub"))
    if res.returncode == 0:  # this SQLite could read the WAL without -shm: fine, and complete
        assert res.stdout.startswith("OK: 4 entries"), res.stdout
    else:
        assert res.returncode == 2, res.stdout + res.stderr
        assert "INVALID" not in res.stdout + res.stderr
        assert "error:" in res.stderr and "finalize" in res.stderr
    assert _snapshot(ro) == before


def test_unreadable_ledger_raises_open_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerOpenError, match="does not exist"):
        verify_ledger(tmp_path / "missing.sqlite")
    with pytest.raises(LedgerOpenError):
        read_entries(tmp_path / "missing.sqlite")
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all" * 100)
    res = verify_ledger(tmp_path / "garbage.sqlite")  # readable but not a ledger: INVALID
    assert not res.ok


def test_finalize_leaves_one_self_contained_file(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = _write_ledger(path, key)
    assert (tmp_path / "ledger.sqlite-wal").exists()
    ledger.finalize()
    ledger.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]
    with sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    res = verify_ledger(path, key.public_key())
    assert res.ok and res.entries == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]
    # A resumed run reopens it for writing (back in WAL mode) and appends.
    with Ledger(path, key, run_id="run-1") as again:
        again.append("run_resumed", {"from_round": 3, "reconciled": []}, timestamp=TS)
        again.finalize()
    assert verify_ledger(path, key.public_key()).entries == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]
