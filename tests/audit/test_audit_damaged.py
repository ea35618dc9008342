"""Damaged and hostile ledger / policy files give typed errors, never untyped escapes.

Regressions of the fuzz harness's findings (issue 12, hole 8; formerly KNOWN_ISSUES of the
``policy_toml``, ``ledger_file`` and ``ledger_rows`` targets). The rule: a file that cannot be
read raises :class:`LedgerOpenError` (CLI exit 2); bytes that were read but are damaged make
verification fail (``ok=False``, the error naming the entry and the field) and readers raise a
:class:`LedgerError`; a valid ledger is never reported invalid.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.ledger import (
    MAX_INT_DIGITS,
    MAX_PAYLOAD_DEPTH,
    EntryError,
    Ledger,
    LedgerError,
    LedgerOpenError,
    _is_open_failure,
    read_entries,
    verify_ledger,
)
from securefl.audit.policy import BudgetPolicy, PolicyError
from securefl.audit.records import RecordError, RoundCompleted, parse, parse_as
from securefl.errors import ConfigurationError

from .conftest import TS

MakeLedger = Callable[..., Ledger]


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def _closed(make_ledger: MakeLedger, rounds: int = 3) -> Path:
    """A finalized ledger (one self-contained file, as an auditor receives it)."""
    ledger = make_ledger(rounds)
    ledger.finalize()
    ledger.close()
    return ledger.path


def _edit(path: Path, column: str, value: object, seq: int = 2) -> None:
    """What someone with write access to the file can store (triggers dropped)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (value, seq))
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


# ---------------------------------------------------------------------------- policy TOML
def test_deeply_nested_policy_toml_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('name = "x"\ndescription = ' + "{ a = " * 3000 + "1" + " }" * 3000 + "\n")
    with pytest.raises(PolicyError, match="nested too deeply") as info:
        BudgetPolicy.load(path)
    assert info.value.parameter == "path" and str(path) in str(info.value)


# ---------------------------------------------------------------------------- damaged files
def _schema_format_255(data: bytes) -> bytes:
    return data[:44] + b"\x00\x00\x00\xff" + data[48:]


def _bad_utf8_schema(data: bytes) -> bytes:
    i = data.index(b"); END")
    return data[:i] + b"\xff" * 4 + data[i + 4 :]


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], _schema_format_255, _bad_utf8_schema],
    ids=["truncated-half", "schema-format-255", "schema-not-utf8"],
)
def test_damaged_file_is_invalid_not_unreadable(
    make_ledger: MakeLedger, key: Ed25519PrivateKey, damage: Callable[[bytes], bytes]
) -> None:
    path = _closed(make_ledger)
    path.write_bytes(damage(path.read_bytes()))
    result = verify_ledger(path)  # the bytes were read: INVALID (exit 1), not exit 2
    assert not result.ok and result.errors
    assert result.to_dict()["ok"] is False
    with pytest.raises(LedgerError) as info:
        read_entries(path)
    assert not isinstance(info.value, LedgerOpenError)
    with pytest.raises(LedgerError):  # nor can a writer open it
        Ledger(path, key, run_id="run-1").close()


def test_corrupt_page_met_while_streaming(make_ledger: MakeLedger) -> None:
    """A damaged b-tree page deep in the entries table, found only while iterating rows."""
    ledger = make_ledger(0)
    for r in range(200):
        ledger.append("note", {"pad": "x" * 400, "r": r}, round_id=r, timestamp=TS)
    ledger.finalize()
    ledger.close()
    path = ledger.path
    data = bytearray(path.read_bytes())
    page = 4096
    leaves = [i for i in range(1, len(data) // page) if data[i * page] == 0x0D]
    victim = leaves[len(leaves) // 2] * page
    data[victim : victim + 8] = b"\xff" * 8  # page type and first cell offsets
    path.write_bytes(bytes(data))
    result = verify_ledger(path)
    assert not result.ok
    assert any("damaged" in e or "malformed" in e for e in result.errors), result.errors
    with pytest.raises(LedgerError) as info:
        read_entries(path)
    assert not isinstance(info.value, LedgerOpenError)


def test_unreadable_is_still_an_open_failure(tmp_path: Path) -> None:
    """Real SQLite errors: a file that cannot be opened vs bytes that are not a database."""
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(f"{(tmp_path / 'no' / 'such.db').as_uri()}?mode=ro", uri=True)
    assert _is_open_failure(cannot_open.value)
    (tmp_path / "junk.db").write_bytes(b"junk" * 2048)
    with (
        sqlite3.connect(tmp_path / "junk.db") as conn,
        pytest.raises(sqlite3.DatabaseError) as junk,
    ):
        conn.execute("SELECT 1 FROM sqlite_master").fetchall()
    assert not _is_open_failure(junk.value)
    with pytest.raises(LedgerOpenError):
        verify_ledger(tmp_path / "missing.db")


# ---------------------------------------------------------------------------- edited rows
BAD_PAYLOADS = {
    "truncated": "{",
    "array": "[]",
    "huge-int": '{"a":' + "9" * 5000 + "}",
    "long-int": '{"a":' + "9" * (MAX_INT_DIGITS + 1) + "}",
    "deep": '{"a":' + "[" * 3000 + "]" * 3000 + "}",
    "just-too-deep": '{"a":' + "[" * MAX_PAYLOAD_DEPTH + "]" * MAX_PAYLOAD_DEPTH + "}",
    "nan": '{"a":NaN}',
    "overflow": '{"a":1e400}',
    "damaged": '{X"dp_event":1}',
}


@pytest.mark.parametrize("text", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bad_stored_payload_is_typed(make_ledger: MakeLedger, text: str) -> None:
    path = _closed(make_ledger)
    _edit(path, "payload", text)
    result = verify_ledger(path)
    assert not result.ok
    assert any(e.startswith("entry 2: payload") for e in result.errors), result.errors
    entry = read_entries(path)[1]
    with pytest.raises(EntryError) as info:
        _ = entry.payload
    assert (info.value.seq, info.value.field) == (2, "payload")
    with pytest.raises(RecordError) as rec:
        parse(entry)
    assert rec.value.seq == 2 and rec.value.parameter == "round_completed.payload"
    with pytest.raises(RecordError):
        parse_as(entry, RoundCompleted)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("round_id", "x"),
        ("round_id", float("inf")),  # what a stored 1e400 reads back as
        ("round_id", 1.5),
        ("run_id", b"\x00\xff"),
        ("payload", b"{}"),
        ("timestamp", 5),  # TEXT affinity stores '5': a wrong timestamp, still text
    ],
)
def test_bad_stored_column_is_typed(make_ledger: MakeLedger, column: str, value: object) -> None:
    path = _closed(make_ledger)
    _edit(path, column, value, seq=2)
    result = verify_ledger(path)
    assert not result.ok
    assert any(e.startswith("entry 2:") for e in result.errors), result.errors
    if column != "timestamp":
        assert any(column in e for e in result.errors), result.errors
        with pytest.raises(EntryError) as info:
            read_entries(path)
        assert (info.value.seq, info.value.field) == (2, column)


def test_bad_head_row_and_meta_are_reported(make_ledger: MakeLedger) -> None:
    path = _closed(make_ledger)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE head SET seq = 'x', public_key = 'zz'")
    conn.close()
    result = verify_ledger(path)
    assert not result.ok and any("head row is malformed" in e for e in result.errors)
    assert result.to_dict()["head"] is None
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = X'00ff' WHERE key = 'ledger_id'")
    conn.close()
    result = verify_ledger(path)
    assert not result.ok and "ledger id is malformed" in result.errors


# ---------------------------------------------------------------------------- the bounds
def test_writer_and_reader_bounds_agree(make_ledger: MakeLedger, key: Ed25519PrivateKey) -> None:
    """Whatever the writer accepts verifies and reads back; past the bound it is refused on
    write with a ConfigurationError naming the field (so no valid ledger is ever invalid)."""
    ledger = make_ledger(0)
    at_bound: dict[str, Any] = {
        "deep": _nested(MAX_PAYLOAD_DEPTH - 1),  # the payload object itself is level 1
        "big": 10**MAX_INT_DIGITS - 1,
        "neg": -(10**MAX_INT_DIGITS - 1),
    }
    ledger.append("note", at_bound, timestamp=TS)
    with pytest.raises(ConfigurationError, match="nested deeper") as deep:
        ledger.append("note", {"deep": _nested(MAX_PAYLOAD_DEPTH)})
    assert deep.value.parameter is not None and deep.value.parameter.startswith("payload.deep")
    with pytest.raises(ConfigurationError, match="digits") as big:
        ledger.append("note", {"big": 10**MAX_INT_DIGITS})
    assert big.value.parameter == "payload.big"
    with pytest.raises(ConfigurationError, match="digits"):
        ledger.append("note", {"huge": 1 << 20000})  # past Python's str() limit too
    assert len(ledger) == 2
    ledger.finalize()
    ledger.close()
    result = verify_ledger(ledger.path, key.public_key())
    assert result.ok, result.errors
    assert read_entries(ledger.path)[1].payload == at_bound


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(_schema_format_255(p.read_bytes())),
        lambda p: p.write_bytes(_bad_utf8_schema(p.read_bytes())),
        lambda p: _edit(p, "round_id", "1e400"),
        lambda p: _edit(p, "payload", '{"a":' + "[" * 3000 + "]" * 3000 + "}"),
    ],
    ids=["schema-format-255", "schema-not-utf8", "round-id-1e400", "deep-payload"],
)
def test_cli_reports_damage_as_invalid(
    make_ledger: MakeLedger, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """Exit 1 (INVALID, read and found damaged), not 2 (could not be read), not a crash."""
    from typer.testing import CliRunner

    from securefl.cli import app

    path = _closed(make_ledger)
    damage(path)
    runner = CliRunner()
    res = runner.invoke(app, ["audit", "verify", str(path), "--trust-stored-key"])
    assert res.exit_code == 1 and "INVALID" in res.output, res.output
    res = runner.invoke(app, ["audit", "verify", str(path), "--trust-stored-key", "--json"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.output)["ok"] is False
