"""``securefl audit …`` exit codes: 0 ok, 1 invalid ledger / violated policy, 2 usage error."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from securefl.audit.keys import write_keypair
from securefl.audit.ledger import Ledger
from securefl.cli import app

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "audits" / "policies" / "client_level_secagg.toml"
runner = CliRunner()


@pytest.fixture
def signed(tmp_path: Path, make_ledger: Callable[..., Ledger]) -> tuple[Path, Path]:
    """(ledger path, public key path) of a valid 5-round ledger."""
    key = tmp_path / "k.pem"
    pub = write_keypair(key)
    ledger = Ledger(tmp_path / "cli.db", key, run_id="run-1")
    src = make_ledger(5)
    for e in src.entries():
        ledger.append(
            e.kind, e.payload, run_id=e.run_id, round_id=e.round_id, timestamp=e.timestamp
        )
    ledger.close()
    return ledger.path, pub


def run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["audit", *args])
    return res.exit_code, res.output


def test_keygen(tmp_path: Path) -> None:
    code, out = run("keygen", str(tmp_path / "key.pem"))
    assert code == 0 and "fingerprint" in out
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    assert run("keygen", str(tmp_path / "key.pem"))[0] == 2  # refuses to overwrite
    assert run("keygen", str(tmp_path / "key.pem"), "--force")[0] == 0
    assert run("keygen", str(tmp_path / "no" / "such" / "dir" / "k.pem"))[0] == 2


def test_verify_exit_codes(signed: tuple[Path, Path], tmp_path: Path) -> None:
    db, pub = signed
    code, out = run("verify", str(db), "--public-key", str(pub))
    assert code == 0 and "OK: 6 entries" in out
    anchor = out.split("head anchor: ")[1].split()[0]
    assert run("verify", str(db), "-k", str(pub), "--expect-head", anchor)[0] == 0
    assert run("verify", str(db), "-k", str(pub), "--expect-head", "9:" + "0" * 64)[0] == 1
    code, out = run("verify", str(db), "--trust-stored-key", "--json")
    assert code == 0 and json.loads(out)["key_pinned"] is False
    assert run("verify", str(db))[0] == 2  # neither a key nor an explicit trust
    assert run("verify", str(tmp_path / "missing.db"), "-k", str(pub))[0] == 2
    assert run("verify", str(db), "-k", str(tmp_path / "missing.pub"))[0] == 2
    other = write_keypair(tmp_path / "other.pem")
    assert run("verify", str(db), "-k", str(other))[0] == 1  # wrong signer
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries WHERE seq = 3")
    conn.commit()
    conn.close()
    code, out = run("verify", str(db), "-k", str(pub))
    assert code == 1 and "INVALID" in out


def test_check_exit_codes(signed: tuple[Path, Path], tmp_path: Path) -> None:
    db, pub = signed
    code, out = run("check", str(db), "-p", str(POLICY), "-k", str(pub))
    assert code == 0, out
    strict = tmp_path / "strict.toml"
    strict.write_text(POLICY.read_text().replace("max_epsilon = 8.0", "max_epsilon = 0.5"))
    code, out = run("check", str(db), "-p", str(strict), "-k", str(pub))
    assert code == 1 and "exceeds the budget" in out
    broken = tmp_path / "broken.toml"
    broken.write_text("privacy_unit = 'client'\n")
    assert run("check", str(db), "-p", str(broken), "-k", str(pub))[0] == 2
    assert run("check", str(db), "-p", str(tmp_path / "none.toml"), "-k", str(pub))[0] == 2
    assert run("check", str(db), "-k", str(pub))[0] == 2  # --policy is required


def test_report_and_account(signed: tuple[Path, Path], tmp_path: Path) -> None:
    db, pub = signed
    out_dir = tmp_path / "out"
    code, out = run("report", str(db), "-o", str(out_dir), "-k", str(pub), "-p", str(POLICY))
    assert code == 0, out
    assert {p.name for p in out_dir.iterdir()} == {
        "privacy_report.json",
        "privacy_report.md",
        "privacy_report.html",
    }
    assert run("report", str(db), "-o", str(out_dir), "-k", str(pub), "--formats", "pdf")[0] == 2
    code, out = run("account", str(db), "-k", str(pub), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["rounds_charged"] == 5 and data["epsilon"]["pld"] > 0
    assert run("account", str(db), "-k", str(pub), "--delta", "2")[0] == 2
    assert run("account", str(db), "-k", str(pub), "--adjacency", "swap")[0] == 2
    assert run("nonsense")[0] == 2
