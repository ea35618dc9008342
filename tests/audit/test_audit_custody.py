"""Key custody and published anchors (issue 14, Trust 1): the private key never lives in a run
directory, a KMS/HSM can sign through the Signer protocol, and rollback detection uses the
anchor log by default."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from typer.testing import CliRunner

from securefl.audit.anchors import finish_ledger, publish_anchor, read_anchors
from securefl.audit.keys import (
    KEY_DIR_ENV,
    FileSigner,
    Signer,
    assert_no_signing_key_under,
    default_anchor_log,
    default_key_dir,
    default_signer,
    generate_signing_key,
    signing_keys_under,
    write_keypair,
)
from securefl.audit.ledger import Ledger, LedgerError, verify_ledger
from securefl.cli import app
from securefl.errors import ConfigurationError

from .conftest import TS, round_event, run_started_payload

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["audit", *args])
    return res.exit_code, res.output


# ---------------------------------------------------------------- where keys live
def test_default_key_dir_is_outside_the_working_directory() -> None:
    assert default_key_dir({KEY_DIR_ENV: "/srv/keys"}) == Path("/srv/keys")
    assert default_key_dir({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/securefl/keys")
    home = default_key_dir({})
    assert home.parts[-3:] == (".config", "securefl", "keys") and home.is_absolute()


def test_default_signer_creates_0700_dir_and_0600_key_and_reuses_it(tmp_path: Path) -> None:
    keys, run = tmp_path / "keys", tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    s1 = default_signer("r1", run_dir=run, key_dir=keys)
    assert keys.stat().st_mode & 0o777 == 0o700
    assert s1.path == keys / "r1.pem" and s1.path.stat().st_mode & 0o777 == 0o600
    assert s1.public_key_path.is_file()
    s2 = default_signer("r1", run_dir=run, key_dir=keys)  # a resumed run: same identity
    assert s2.fingerprint == s1.fingerprint
    assert "PRIVATE" not in repr(s1) and s1.fingerprint[:16] in repr(s1)
    with pytest.raises(ConfigurationError, match="run_name"):
        default_signer("../escape", run_dir=run, key_dir=keys)
    with pytest.raises(ConfigurationError, match="no signing key"):
        default_signer("other", run_dir=run, key_dir=keys, create=False)


def test_env_key_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "envkeys"))
    signer = default_signer("r", run_dir=tmp_path / "run")
    assert signer.path.parent == tmp_path / "envkeys"
    assert default_anchor_log() == tmp_path / "envkeys" / "anchors.jsonl"


def test_key_inside_the_run_directory_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_keypair(run / "ledger_signing_key.pem")
    with pytest.raises(ConfigurationError, match="inside the run directory"):
        FileSigner(run / "ledger_signing_key.pem", run_dir=run)
    with pytest.raises(ConfigurationError, match="inside the run directory"):
        default_signer("r", run_dir=run, key_dir=run / "keys")
    with pytest.raises(ConfigurationError, match="inside the run directory"):
        default_signer("r", run_dir=run, key_dir=run)


def test_keys_readable_by_others_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signer = default_signer("r", key_dir=keys)
    os.chmod(signer.path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        FileSigner(signer.path)
    os.chmod(signer.path, 0o600)
    os.chmod(keys, 0o755)
    with pytest.raises(ConfigurationError, match="chmod 700"):
        default_signer("r", key_dir=keys)


# ---------------------------------------------------------------- pluggable signer
class RemoteSigner:
    """Stands in for a KMS/HSM: the ledger never sees the private key object."""

    def __init__(self) -> None:
        self._key = generate_signing_key()
        self.calls = 0

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        self.calls += 1
        return self._key.sign(message)


class BrokenSigner(RemoteSigner):
    def sign(self, message: bytes) -> bytes:
        return bytes(64)


def test_ledger_signs_through_any_signer(tmp_path: Path) -> None:
    remote = RemoteSigner()
    assert isinstance(remote, Signer) and isinstance(generate_signing_key(), Signer)
    with Ledger(tmp_path / "l.db", remote, run_id="r") as ledger:
        ledger.append("run_started", run_started_payload(), timestamp=TS)
        assert remote.calls == 2  # genesis head + one append
    assert verify_ledger(tmp_path / "l.db", remote.public_key()).ok
    with pytest.raises(LedgerError, match="invalid head signature"):
        Ledger(tmp_path / "bad.db", BrokenSigner(), run_id="r")
    with pytest.raises(ConfigurationError, match="Signer"):
        Ledger(tmp_path / "x.db", object(), run_id="r")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the run directory
def test_no_file_in_a_run_directory_can_forge_its_ledger(tmp_path: Path) -> None:
    """What a run directory handed to an auditor may contain: the ledger, the public key,
    reports, the anchor log copy — never a private key (issue 14 done-when)."""
    run, keys = tmp_path / "run", tmp_path / "keys"
    run.mkdir()
    signer = default_signer("r", run_dir=run, key_dir=keys)
    with Ledger(run / "ledger.sqlite", signer, run_id="r") as ledger:
        ledger.append("run_started", run_started_payload(), timestamp=TS)
        ledger.append("round_completed", {"dp_event": round_event(), "participants": 5}, round_id=0)
        anchor = finish_ledger(ledger, run_dir=run, key_dir=keys)  # anchor log next to keys
    assert sorted(p.name for p in run.iterdir()) == ["ledger.sqlite"]  # finalized: one file
    assert verify_ledger(
        run / "ledger.sqlite", signer.public_key(), anchors=keys / "anchors.jsonl"
    ).ok
    assert anchor.text.startswith("2:")
    shutil.copy(signer.public_key_path, run / "ledger.pub")
    shutil.copy(keys / "anchors.jsonl", run / "anchors.jsonl")  # public: fine to hand over
    assert_no_signing_key_under(run)  # the reusable assertion for the lead's run test
    # ... and the helper does catch a key dropped there, PEM or raw.
    shutil.copy(signer.path, run / "copied.pem")
    assert signing_keys_under(run) == [run / "copied.pem"]
    with pytest.raises(ConfigurationError, match="private key material"):
        assert_no_signing_key_under(run)
    (run / "copied.pem").unlink()
    (run / "sub").mkdir()
    (run / "sub" / "k.key").write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
    with pytest.raises(ConfigurationError):
        assert_no_signing_key_under(run)


# ---------------------------------------------------------------- anchors
def _ledger(tmp_path: Path, signer: Signer, name: str = "l.db") -> Ledger:
    ledger = Ledger(tmp_path / name, signer, run_id="r")
    ledger.append("run_started", run_started_payload(), timestamp=TS)
    return ledger


def test_anchor_log_detects_rollback_and_substitution(tmp_path: Path) -> None:
    key = generate_signing_key()
    log = tmp_path / "keys" / "anchors.jsonl"
    ledger = _ledger(tmp_path, key)
    a1 = publish_anchor(ledger, anchor_log=log, timestamp=TS)
    ledger.close()
    old = tmp_path / "old.db"
    shutil.copy(ledger.path, old)
    with Ledger(ledger.path, key, run_id="r") as live:
        live.append("round_completed", {"dp_event": round_event(), "participants": 5}, round_id=0)
        a2 = publish_anchor(live, anchor_log=log)
    assert [a.text for a in read_anchors(log)] == [a1.text, a2.text]
    assert json.loads(log.read_text().splitlines()[0])["anchor"] == a1.text
    assert verify_ledger(ledger.path, key.public_key(), anchors=log).ok
    rolled = verify_ledger(old, key.public_key(), anchors=log)
    assert not rolled.ok and any("rolled back" in e for e in rolled.errors)
    # A different ledger signed by the same key has no anchor in the log: refused.
    other = _ledger(tmp_path, key, "other.db")
    other.close()
    sub = verify_ledger(other.path, key.public_key(), anchors=log)
    assert not sub.ok and any("holds no anchor" in e for e in sub.errors)
    # Without anchors the result says how to get rollback detection, in CLI terms.
    plain = verify_ledger(ledger.path, key.public_key())
    assert any("--anchors" in w and "--expect-head" in w for w in plain.warnings)
    assert not any("expected_head" in w for w in plain.warnings)


def test_anchor_log_inside_run_dir_and_malformed_lines_are_refused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, generate_signing_key())
    with pytest.raises(LedgerError, match="inside the run directory"):
        publish_anchor(ledger, anchor_log=tmp_path / "a.jsonl", run_dir=tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ledger_id": "x", "seq": 1}\n')
    with pytest.raises(LedgerError, match=r"bad.jsonl:1: entry_hash"):
        read_anchors(bad)
    ledger.close()


def test_cli_anchor_then_verify_with_anchors(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signer = default_signer("r", key_dir=keys)
    ledger = _ledger(tmp_path, signer)
    ledger.close()
    pub = str(signer.public_key_path)
    code, out = cli("anchor", str(ledger.path), "-k", pub, "--key-dir", str(keys))
    assert code == 0 and "published head anchor 1:" in out, out
    log = keys / "anchors.jsonl"
    code, out = cli("verify", str(ledger.path), "-k", pub, "--anchors", str(log))
    assert code == 0 and "OK" in out and "no published anchor" not in out, out
    code, out = cli("verify", str(ledger.path), "-k", pub)
    assert code == 0 and "--anchors FILE" in out
    code, out = cli(
        "report", str(ledger.path), "-k", pub, "--anchors", str(log), "-o", str(tmp_path / "rep")
    )
    assert code == 0, out
    rep = json.loads((tmp_path / "rep" / "privacy_report.json").read_text())
    assert rep["ledger"]["verification"]["ok"]
    assert not any("anchor" in w for w in rep["ledger"]["verification"]["warnings"])
    code, out = cli("verify", str(ledger.path), "-k", pub, "--expect-head", "x:y")
    assert code == 2 and "--expect-head" in out


def test_audit_package_in_the_repository_holds_no_private_key() -> None:
    """audits/ (examples and policies) is handed to reviewers as is."""
    assert_no_signing_key_under(Path(__file__).resolve().parents[2] / "audits")
