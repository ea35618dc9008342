"""Tamper-evident, append-only privacy ledger in SQLite.

Every entry is hash-chained (``entry_hash = SHA-256(domain ‖ canonical(fields, prev_hash))``)
and the chain head — the ``(seq, entry_hash)`` of the last entry — is signed with Ed25519 in the
same transaction as the append. :meth:`Ledger.verify` therefore detects an edit of any field,
a deleted or reordered entry, a truncated tail (the signed head no longer matches the last
entry) and a head forged with another key (when the caller pins the public key).

What a signature cannot detect: an attacker who holds an *older copy* of the whole database
(or deletes the tail and restores an old head row) presents a shorter ledger that was valid at
some time. Only an external anchor defeats that rollback: publish the head hash (e.g. in the
model card, a transparency log or a ticket) and verify with ``expected_head=``.

Durability and concurrency: WAL journal, ``synchronous=FULL`` (a commit is on disk when
``append`` returns), and ``BEGIN IMMEDIATE`` so that reading the head and writing the next entry
is one serialised transaction even with several writer processes. Triggers forbid UPDATE and
DELETE on entries (defence in depth; the hash chain is the real protection).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefl.audit.keys import (
    PublicKeySource,
    SigningKeySource,
    fingerprint,
    load_public_key,
    load_signing_key,
    public_key_raw,
)
from securefl.errors import ConfigurationError, LocalProtocolError, SecureFLError

FORMAT_VERSION = 1
_ENTRY_DOMAIN = b"securefl.audit.ledger.v1.entry\x00"
_HEAD_DOMAIN = b"securefl.audit.ledger.v1.head\x00"
_GENESIS_DOMAIN = b"securefl.audit.ledger.v1.genesis\x00"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_MAX_ERRORS = 50

# Entry kinds written by securefl itself (other kinds are allowed; these have documented payloads).
RUN_STARTED = "run_started"
ROUND_PROJECTED = "round_projected"
ROUND_COMPLETED = "round_completed"
ROUND_REFUSED = "round_refused"
POLICY = "policy"
MODEL_PROVENANCE = "model_provenance"
RUN_FINISHED = "run_finished"
ROUND_ABORTED = "round_aborted"
RUN_RESUMED = "run_resumed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    round_id INTEGER,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    entry_hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    public_key TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
"""


class RecordLike(Protocol):
    """What :meth:`Ledger.append_record` needs (see :mod:`securefl.audit.records`)."""

    PER_ROUND: ClassVar[bool]

    @property
    def kind(self) -> str: ...

    def to_payload(self) -> dict[str, Any]: ...


class LedgerError(SecureFLError):
    """The ledger file cannot be opened or written (not a ledger, wrong version, I/O)."""


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON data from payload values; NaN/Inf and unknown objects are refused."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError("NaN or infinite number in payload", parameter=where)
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError("payload keys must be strings", parameter=where)
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):  # DP events and other record types
        return _jsonable(to_dict(), where)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy scalar
        return _jsonable(item(), where)
    raise ConfigurationError(f"cannot record a {type(value).__name__}", parameter=where)


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, no NaN, UTF-8 (RFC 8785 in spirit)."""
    return json.dumps(
        _jsonable(value, "payload"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def format_timestamp(ts: datetime | str | None = None) -> str:
    """UTC ISO-8601 with microseconds and ``Z``; ``None`` reads the clock (API edge only)."""
    if ts is None:
        ts = datetime.now(UTC)
    if isinstance(ts, str):
        if not _TS_RE.match(ts):
            raise ConfigurationError(
                "timestamp must look like 2026-01-31T12:00:00.000000Z", parameter="timestamp"
            )
        return ts
    if ts.tzinfo is None:
        raise ConfigurationError("timestamp must be timezone-aware", parameter="timestamp")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def genesis_hash(ledger_id: str) -> str:
    """``prev_hash`` of entry 1: binds the chain to this ledger's random id."""
    return hashlib.sha256(_GENESIS_DOMAIN + ledger_id.encode()).hexdigest()


def entry_hash(
    *,
    ledger_id: str,
    seq: int,
    run_id: str,
    round_id: int | None,
    kind: str,
    payload_json: str,
    timestamp: str,
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical encoding of every stored field, including ``prev_hash``."""
    fields = {
        "kind": kind,
        "ledger_id": ledger_id,
        "payload": payload_json,
        "prev_hash": prev_hash,
        "round_id": round_id,
        "run_id": run_id,
        "seq": seq,
        "timestamp": timestamp,
    }
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(_ENTRY_DOMAIN + body.encode("utf-8")).hexdigest()


def head_message(ledger_id: str, seq: int, head_hash: str) -> bytes:
    """The bytes the head signature covers: ledger id, last seq and last entry hash."""
    body = json.dumps(
        {"entry_hash": head_hash, "ledger_id": ledger_id, "seq": seq},
        sort_keys=True,
        separators=(",", ":"),
    )
    return _HEAD_DOMAIN + body.encode("ascii")


@dataclass(frozen=True)
class Entry:
    """One committed ledger entry (``payload`` parsed; ``payload_json`` is what was hashed)."""

    seq: int
    run_id: str
    round_id: int | None
    kind: str
    payload_json: str
    timestamp: str
    prev_hash: str
    entry_hash: str

    @property
    def payload(self) -> dict[str, Any]:
        data = json.loads(self.payload_json)
        assert isinstance(data, dict)
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "run_id": self.run_id,
            "round_id": self.round_id,
            "kind": self.kind,
            "payload": self.payload,
            "timestamp": self.timestamp,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }


@dataclass(frozen=True)
class Head:
    """The signed chain head: last ``seq`` and its ``entry_hash`` (seq 0 = empty ledger)."""

    seq: int
    entry_hash: str
    signature: str
    public_key: str  # raw Ed25519 public key, hex

    @property
    def anchor(self) -> str:
        """``seq:entry_hash`` — publish this outside the ledger to defeat rollback."""
        return f"{self.seq}:{self.entry_hash}"

    @property
    def key_fingerprint(self) -> str:
        return hashlib.sha256(bytes.fromhex(self.public_key)).hexdigest()


@dataclass(frozen=True)
class PendingEntry:
    """An entry to append in a batch (:meth:`Ledger.append_many`)."""

    kind: str
    payload: Mapping[str, Any]
    run_id: str | None = None
    round_id: int | None = None
    timestamp: datetime | str | None = None


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_ledger`; ``ok`` is False if any error was found."""

    ok: bool
    entries: int
    ledger_id: str | None
    head: Head | None
    key_pinned: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "ledger_id": self.ledger_id,
            "head": None
            if self.head is None
            else {
                "seq": self.head.seq,
                "entry_hash": self.head.entry_hash,
                "anchor": self.head.anchor,
                "key_fingerprint": self.head.key_fingerprint,
            },
            "key_pinned": self.key_pinned,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not path.is_file():
            raise LedgerError(f"ledger file {path} does not exist")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
    else:
        conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
    conn.isolation_level = None  # explicit transactions only
    conn.execute("PRAGMA busy_timeout = 60000")
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"cannot enable WAL journal on {path} (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
    return Entry(
        seq=int(row[0]),
        run_id=str(row[1]),
        round_id=None if row[2] is None else int(row[2]),
        kind=str(row[3]),
        payload_json=str(row[4]),
        timestamp=str(row[5]),
        prev_hash=str(row[6]),
        entry_hash=str(row[7]),
    )


# Constant SQL (column names are fixed); every value is a bound parameter.
_SELECT_ENTRIES = (
    "SELECT seq, run_id, round_id, kind, payload, timestamp, prev_hash, entry_hash FROM entries"
)
_INSERT_ENTRY = (
    "INSERT INTO entries(seq, run_id, round_id, kind, payload, timestamp, prev_hash, entry_hash)"
    " VALUES (?,?,?,?,?,?,?,?)"
)


class Ledger:
    """An append-only, hash-chained, head-signed ledger file.

    ``signing_key`` (key object, PEM/raw bytes or a PEM path) is needed only to append;
    readers and auditors open the ledger without it. ``run_id`` is the default run id of
    appended entries.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        signing_key: SigningKeySource | None = None,
        *,
        run_id: str | None = None,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._key: Ed25519PrivateKey | None = (
            None if signing_key is None else load_signing_key(signing_key)
        )
        if not create and not self.path.is_file():
            raise LedgerError(f"ledger file {self.path} does not exist")
        try:
            self._conn = _connect(self.path, readonly=False)
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path} is not a usable ledger: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";\n"):
                if stmt.strip():
                    conn.execute(stmt)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "ledger_id" not in rows:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('ledger_id', ?), ('format', ?)",
                    (secrets.token_hex(16), str(FORMAT_VERSION)),
                )
            elif rows.get("format") != str(FORMAT_VERSION):
                raise LedgerError(f"unsupported ledger format {rows.get('format')!r}")
            self.ledger_id = str(
                conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()[0]
            )
            if self._key is not None:
                head = conn.execute("SELECT seq FROM head WHERE id = 1").fetchone()
                count = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
                if head is None and count == 0:
                    self._write_head(0, genesis_hash(self.ledger_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- writing ---------------------------------------------------------------------------
    def _write_head(self, seq: int, head_hash: str) -> None:
        assert self._key is not None
        sig = self._key.sign(head_message(self.ledger_id, seq, head_hash))
        self._conn.execute(
            "INSERT OR REPLACE INTO head(id, seq, entry_hash, signature, public_key)"
            " VALUES (1, ?, ?, ?, ?)",
            (seq, head_hash, sig.hex(), public_key_raw(self._key.public_key()).hex()),
        )

    def _prepare(self, item: PendingEntry) -> tuple[str, str | None, int | None, str, str]:
        if not isinstance(item.kind, str) or not _KIND_RE.match(item.kind):
            raise ConfigurationError("kind must match [a-z][a-z0-9_.-]{0,63}", parameter="kind")
        if not isinstance(item.payload, Mapping):
            raise ConfigurationError("payload must be a mapping", parameter="payload")
        run_id = item.run_id if item.run_id is not None else self.run_id
        if run_id is None or not isinstance(run_id, str) or not run_id:
            raise ConfigurationError("a non-empty run_id is required", parameter="run_id")
        if item.round_id is not None and (
            isinstance(item.round_id, bool) or not isinstance(item.round_id, int)
        ):
            raise ConfigurationError("round_id must be an int or None", parameter="round_id")
        return (
            item.kind,
            run_id,
            item.round_id,
            canonical_json(item.payload),
            format_timestamp(item.timestamp),
        )

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        run_id: str | None = None,
        round_id: int | None = None,
        timestamp: datetime | str | None = None,
    ) -> Entry:
        """Append one entry durably (committed and fsynced when this returns)."""
        return self.append_many([PendingEntry(kind, payload, run_id, round_id, timestamp)])[0]

    def append_record(
        self,
        record: RecordLike,
        *,
        round_id: int | None = None,
        run_id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> Entry:
        """Append a typed record (:mod:`securefl.audit.records`): its kind and canonical payload.

        Per-round records (projected / completed / refused / aborted) require ``round_id``.
        """
        if record.PER_ROUND and round_id is None:
            raise ConfigurationError(
                f"a {record.kind} record needs a round_id", parameter="round_id"
            )
        return self.append(
            record.kind, record.to_payload(), run_id=run_id, round_id=round_id, timestamp=timestamp
        )

    def append_many(self, items: Iterable[PendingEntry]) -> list[Entry]:
        """Append several entries in ONE durable transaction (all or nothing)."""
        if self._key is None:
            raise LocalProtocolError("this Ledger was opened without a signing key")
        prepared = [self._prepare(item) for item in items]
        if not prepared:
            return []
        conn = self._conn
        out: list[Entry] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute(
                "SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (0, genesis_hash(self.ledger_id)) if last is None else last
            rows = []
            for kind, run_id, round_id, payload_json, ts in prepared:
                assert run_id is not None
                seq += 1
                h = entry_hash(
                    ledger_id=self.ledger_id,
                    seq=seq,
                    run_id=run_id,
                    round_id=round_id,
                    kind=kind,
                    payload_json=payload_json,
                    timestamp=ts,
                    prev_hash=prev,
                )
                rows.append((seq, run_id, round_id, kind, payload_json, ts, prev, h))
                out.append(Entry(seq, run_id, round_id, kind, payload_json, ts, prev, h))
                prev = h
            conn.executemany(_INSERT_ENTRY, rows)
            self._write_head(seq, prev)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out

    # -- reading ---------------------------------------------------------------------------
    def entries(self, *, run_id: str | None = None, kind: str | None = None) -> Iterator[Entry]:
        """Entries in ``seq`` order, optionally filtered (no verification: call verify)."""
        yield from _iter_entries(self._conn, run_id=run_id, kind=kind)

    def head(self) -> Head | None:
        return _read_head(self._conn)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def verify(
        self,
        public_key: PublicKeySource | None = None,
        *,
        expected_head: str | tuple[int, str] | None = None,
    ) -> VerifyResult:
        """See :func:`verify_ledger`; without ``public_key`` this Ledger's own key is pinned."""
        if public_key is None and self._key is not None:
            public_key = self._key.public_key()
        return _verify_conn(self._conn, public_key, expected_head)


def _iter_entries(
    conn: sqlite3.Connection, *, run_id: str | None = None, kind: str | None = None
) -> Iterator[Entry]:
    sql = _SELECT_ENTRIES
    where, args = [], []
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if where:
        sql += " WHERE " + " AND ".join(where)
    for row in conn.execute(sql + " ORDER BY seq", args):
        yield _row_to_entry(row)


def _read_head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute(
        "SELECT seq, entry_hash, signature, public_key FROM head WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    return Head(int(row[0]), str(row[1]), str(row[2]), str(row[3]))


def _parse_anchor(expected: str | tuple[int, str]) -> tuple[int | None, str]:
    if isinstance(expected, tuple):
        return int(expected[0]), str(expected[1]).lower()
    text = expected.strip().lower()
    if ":" in text:
        seq_text, h = text.split(":", 1)
        try:
            return int(seq_text), h
        except ValueError as exc:
            raise ConfigurationError("anchor must be SEQ:HASH", parameter="expected_head") from exc
    return None, text


def _verify_conn(
    conn: sqlite3.Connection,
    public_key: PublicKeySource | None,
    expected_head: str | tuple[int, str] | None,
) -> VerifyResult:
    """Verify inside ONE read transaction: a concurrent append cannot make the head and the
    entries come from different snapshots."""
    conn.execute("BEGIN")
    try:
        return _verify_snapshot(conn, public_key, expected_head)
    finally:
        conn.execute("ROLLBACK")


def _verify_snapshot(
    conn: sqlite3.Connection,
    public_key: PublicKeySource | None,
    expected_head: str | tuple[int, str] | None,
) -> VerifyResult:
    errors: list[str] = []
    warnings: list[str] = []

    def err(msg: str) -> None:
        if len(errors) < _MAX_ERRORS:
            errors.append(msg)

    pinned: Ed25519PublicKey | None = None if public_key is None else load_public_key(public_key)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        head = _read_head(conn)
        rows = conn.execute(_SELECT_ENTRIES + " ORDER BY seq")  # streamed, not loaded
    except sqlite3.DatabaseError as exc:
        return VerifyResult(False, 0, None, None, pinned is not None, [f"not a ledger: {exc}"])
    ledger_id = meta.get("ledger_id")
    if ledger_id is None:
        return VerifyResult(False, 0, None, head, pinned is not None, ["ledger id missing"])
    if meta.get("format") != str(FORMAT_VERSION):
        err(f"unsupported ledger format {meta.get('format')!r}")

    anchor_seq: int | None = None
    anchor_hash: str | None = None
    anchor_found = False
    if expected_head is not None:
        anchor_seq, anchor_hash = _parse_anchor(expected_head)

    prev = genesis_hash(ledger_id)
    expected_seq = 1
    last_seq, last_hash = 0, prev
    count = 0
    for row in rows:
        count += 1
        e = _row_to_entry(row)
        if e.seq != expected_seq:
            err(f"entry seq {e.seq} where {expected_seq} was expected (deleted or reordered)")
        if e.prev_hash != prev:
            err(f"entry {e.seq}: prev_hash does not match the previous entry (chain broken)")
        try:
            recomputed = entry_hash(
                ledger_id=ledger_id,
                seq=e.seq,
                run_id=e.run_id,
                round_id=e.round_id,
                kind=e.kind,
                payload_json=e.payload_json,
                timestamp=e.timestamp,
                prev_hash=e.prev_hash,
            )
        except (TypeError, ValueError):
            recomputed = ""
        if recomputed != e.entry_hash:
            err(f"entry {e.seq}: content does not match its hash (edited)")
        try:
            if canonical_json(json.loads(e.payload_json)) != e.payload_json:
                err(f"entry {e.seq}: payload is not canonical JSON")
        except (ValueError, ConfigurationError):
            err(f"entry {e.seq}: payload is not valid JSON")
        if not _TS_RE.match(e.timestamp):
            err(f"entry {e.seq}: malformed timestamp")
        if e.entry_hash == anchor_hash and anchor_seq in (None, e.seq):
            anchor_found = True
        prev = e.entry_hash
        expected_seq = e.seq + 1
        last_seq, last_hash = e.seq, e.entry_hash

    genesis_anchor = anchor_seq == 0 and anchor_hash == genesis_hash(ledger_id)
    if anchor_hash is not None and not anchor_found and not genesis_anchor:
        err("the externally anchored head is not in this ledger (rolled back or forked)")

    if head is None:
        err("signed head missing (ledger truncated or head deleted)")
    else:
        if head.seq != last_seq or head.entry_hash != last_hash:
            err(
                f"signed head is seq {head.seq} but the last entry is seq {last_seq}"
                " (truncated, appended without signing, or head replaced)"
            )
        try:
            stored_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(head.public_key))
        except ValueError:
            err("head public key is malformed")
            stored_key = None
        key = pinned if pinned is not None else stored_key
        if (
            pinned is not None
            and stored_key is not None
            and fingerprint(pinned) != fingerprint(stored_key)
        ):
            err("head is signed by a different key than the pinned public key (forged head)")
        if key is not None:
            try:
                key.verify(
                    bytes.fromhex(head.signature),
                    head_message(ledger_id, head.seq, head.entry_hash),
                )
            except (InvalidSignature, ValueError):
                err("head signature is invalid")
    if pinned is None:
        warnings.append(
            "public key not pinned: the stored key was used, so a ledger rewritten and re-signed"
            " with another key would also pass; pass the expected public key"
        )
    if expected_head is None:
        warnings.append(
            "no external anchor given: a rollback to an older, validly signed copy of the whole"
            " ledger cannot be detected; publish head anchors and pass expected_head"
        )
    return VerifyResult(
        ok=not errors,
        entries=count,
        ledger_id=ledger_id,
        head=head,
        key_pinned=pinned is not None,
        errors=errors,
        warnings=warnings,
    )


def verify_ledger(
    path: str | PathLike[str],
    public_key: PublicKeySource | None = None,
    *,
    expected_head: str | tuple[int, str] | None = None,
) -> VerifyResult:
    """Recompute every hash and the head signature of the ledger at ``path`` (read-only).

    ``public_key`` pins the signer (without it the key stored in the file is used and the result
    says ``key_pinned=False``). ``expected_head`` (``"SEQ:HASH"`` or a bare hash published
    earlier) must be an entry of this ledger, which detects rollback and forks.
    """
    conn = _connect(Path(path), readonly=True)
    try:
        return _verify_conn(conn, public_key, expected_head)
    finally:
        conn.close()


def read_entries(
    path: str | PathLike[str], *, run_id: str | None = None, kind: str | None = None
) -> list[Entry]:
    """All entries of a ledger file, read-only (for reports and checks)."""
    conn = _connect(Path(path), readonly=True)
    try:
        return list(_iter_entries(conn, run_id=run_id, kind=kind))
    finally:
        conn.close()
