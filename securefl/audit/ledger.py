"""Tamper-evident, append-only privacy ledger in SQLite.

Every entry is hash-chained (``entry_hash = SHA-256(domain ‖ canonical(fields, prev_hash))``)
and the chain head — the ``(seq, entry_hash)`` of the last entry — is signed with Ed25519 in the
same transaction as the append. :meth:`Ledger.verify` therefore detects an edit of any field,
a deleted or reordered entry, a truncated tail (the signed head no longer matches the last
entry) and a head forged with another key (when the caller pins the public key).

What a signature cannot detect: an attacker who holds an *older copy* of the whole database
(or deletes the tail and restores an old head row) presents a shorter ledger that was valid at
some time. Only an external anchor defeats that rollback: publish the head
(:func:`securefl.audit.anchors.publish_anchor` appends it to an anchor log outside the run
directory; copy it to a model card, transparency log or ticket) and verify with ``anchors=``
(``--anchors FILE``) or ``expected_head=`` (``--expect-head SEQ:HASH``).

Reading never changes the file: :func:`verify_ledger` and :func:`read_entries` open a closed
ledger ``immutable`` (no ``-wal``/``-shm`` created, so read-only copies verify) and a live one
through its WAL; :meth:`Ledger.finalize` makes a finished ledger one self-contained file.

Durability and concurrency: WAL journal, ``synchronous=FULL`` (a commit is on disk when
``append`` returns), and ``BEGIN IMMEDIATE`` so that reading the head and writing the next entry
is one serialised transaction even with several writer processes. Triggers forbid UPDATE and
DELETE on entries (defence in depth; the hash chain is the real protection).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefl.audit.keys import (
    PublicKeySource,
    Signer,
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
#: Deepest nesting of JSON arrays/objects a payload may have, written or read. Records are a
#: few levels deep; the bound keeps a hostile stored payload far below the recursion limit of
#: the JSON codec and of :func:`canonical_json` (it is refused, never a RecursionError).
MAX_PAYLOAD_DEPTH = 64
#: Longest integer literal (digits) a payload may hold, written or read (2^256 has 78 digits):
#: an absurd literal is refused before Python converts it.
MAX_INT_DIGITS = 100

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


class LedgerOpenError(LedgerError):
    """The ledger could not be *read* (missing, permissions, I/O, locked): says nothing about
    whether the ledger is valid, so verification reports it apart from "INVALID" (CLI exit 2).
    """


class AnchorLike(Protocol):
    """A published anchor (:class:`securefl.audit.anchors.Anchor`)."""

    @property
    def ledger_id(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def entry_hash(self) -> str: ...


AnchorSpec = str | tuple[int, str] | AnchorLike


class NotALedgerError(LedgerError):
    """The file was read but is not a SQLite ledger (verification reports it INVALID)."""


class EntryError(LedgerError):
    """A stored entry is malformed: a column of the wrong type, or a payload that is not a
    JSON object within the bounds above. ``seq`` and ``field`` say where; verification
    reports it as an error of that entry, readers raise it."""

    def __init__(self, message: str, *, seq: int | None, field: str) -> None:
        super().__init__(f"entry {'?' if seq is None else seq}: {field} {message}")
        self.seq = seq
        self.field = field
        self.reason = message


def _jsonable(value: Any, where: str, depth: int = 0) -> Any:
    """Plain JSON data from payload values; NaN/Inf, integers longer than
    :data:`MAX_INT_DIGITS`, nesting past :data:`MAX_PAYLOAD_DEPTH` and unknown objects are
    refused (the reader refuses the same, so whatever is written reads back)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS or len(str(abs(value))) > MAX_INT_DIGITS:
            raise ConfigurationError(
                f"integer longer than {MAX_INT_DIGITS} digits in payload", parameter=where
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError("NaN or infinite number in payload", parameter=where)
        return float(value)
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_PAYLOAD_DEPTH:
        raise ConfigurationError(
            f"payload nested deeper than {MAX_PAYLOAD_DEPTH} levels", parameter=where
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError("payload keys must be strings", parameter=where)
            out[k] = _jsonable(v, f"{where}.{k}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):  # DP events and other record types
        return _jsonable(to_dict(), where, depth)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy scalar
        return _jsonable(item(), where, depth)
    raise ConfigurationError(f"cannot record a {type(value).__name__}", parameter=where)


# 10^100 < 2^333: a wider integer has more than MAX_INT_DIGITS digits (checked before str(),
# which Python refuses past 4300 digits)
_MAX_INT_BITS = 340


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer literal longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:20]} is out of range")
    return x


def _parse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: never recurses on hostile data)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, d)
            if d <= MAX_PAYLOAD_DEPTH:
                children = node.values() if isinstance(node, dict) else node
                stack.extend((v, d + 1) for v in children)
    return deepest


def parse_payload(text: str, *, seq: int | None = None) -> dict[str, Any]:
    """A stored payload as a dict, or :class:`EntryError` naming the entry and ``payload``.

    Refused: invalid JSON, a payload that is not an object, nesting past
    :data:`MAX_PAYLOAD_DEPTH`, integer literals longer than :data:`MAX_INT_DIGITS`, NaN,
    Infinity and numbers out of float range — whatever :func:`canonical_json` cannot write.
    """
    try:
        data = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except RecursionError:  # the C scanner's own guard, far past MAX_PAYLOAD_DEPTH
        raise EntryError(
            f"is nested deeper than {MAX_PAYLOAD_DEPTH} levels", seq=seq, field="payload"
        ) from None
    except (ValueError, TypeError) as exc:
        raise EntryError(f"is not valid JSON ({exc})", seq=seq, field="payload") from exc
    if not isinstance(data, dict):
        raise EntryError("is not a JSON object", seq=seq, field="payload")
    if _depth(data) > MAX_PAYLOAD_DEPTH:
        raise EntryError(
            f"is nested deeper than {MAX_PAYLOAD_DEPTH} levels", seq=seq, field="payload"
        )
    return data


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
        """The parsed payload; :class:`EntryError` if the stored text is not a bounded JSON
        object (see :func:`parse_payload`)."""
        return parse_payload(self.payload_json, seq=self.seq)

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
        try:
            return hashlib.sha256(bytes.fromhex(self.public_key)).hexdigest()
        except ValueError:  # a damaged head row (verification reports it)
            return "malformed"


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


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open for reading without changing anything on disk (issue 14, Trust 2).

    - no ``-wal`` beside the file (a finalized or cleanly closed ledger; a live writer always
      has one): ``immutable=1`` — SQLite reads the file as is and creates no ``-wal``/``-shm``;
    - a ``-wal`` exists (a writer is live, or died): ``mode=ro``, which reads the committed
      WAL frames too and so sees every committed entry. On read-only media this needs the
      ``-shm`` beside it; without it the ledger cannot be read *completely*, which is reported
      as :class:`LedgerOpenError` (never as a valid but shorter ledger).
    """
    if not path.is_file():
        raise LedgerOpenError(f"ledger file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise LedgerOpenError(f"ledger file {path} is not readable (permission denied)")
    wal = path.with_name(path.name + "-wal")
    uri = path.resolve().as_uri()
    has_wal = wal.exists() and wal.stat().st_size > 0
    if not has_wal and not wal.exists():
        uri += "?mode=ro&immutable=1"
    else:
        uri += "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=60.0)
        conn.isolation_level = None
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except _READ_ERRORS as exc:
        if has_wal and not _writable(path):
            raise LedgerOpenError(
                f"cannot read {path} from a read-only location: it has an un-checkpointed"
                f" write-ahead log ({wal.name}) and SQLite needs {path.name}-shm beside it;"
                " copy the ledger with both files, or finalize the ledger before copying"
                f" ({exc})"
            ) from exc
        if _is_open_failure(exc):
            raise LedgerOpenError(f"cannot read ledger {path}: {exc}") from exc
        raise NotALedgerError(f"{path} is not a usable ledger: {exc}") from exc
    return conn


#: SQLite result codes that mean the bytes could not be read (I/O, permission, locking,
#: memory) — as opposed to bytes that were read and are not a valid ledger (SQLITE_CORRUPT,
#: SQLITE_NOTADB, SQLITE_ERROR such as "unsupported file format" or "no such table").
_OPEN_FAILURE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_ABORT,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_AUTH,
    }
)
#: What reading a damaged file can raise: SQLite errors, and text SQLite hands back that is
#: not UTF-8 (a damaged schema or column; Python's sqlite3 raises UnicodeDecodeError).
_READ_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


def _is_open_failure(exc: BaseException) -> bool:
    """I/O, permission and locking failures (as opposed to a file that is not a ledger).

    Decided by SQLite's result code; errors without one were raised by Python's sqlite3 on
    bytes it did read (undecodable text), so they mean damage, not an unreadable file.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _OPEN_FAILURE_CODES


def _read_failure(exc: BaseException, path: object) -> LedgerError:
    """The typed error for a failure while reading ``path`` (see :func:`_is_open_failure`)."""
    if _is_open_failure(exc):
        return LedgerOpenError(f"cannot read ledger {path}: {exc}")
    return NotALedgerError(f"{path} is damaged or not a ledger: {exc}")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        return _connect_readonly(path)
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
    conn.isolation_level = None  # explicit transactions only
    conn.execute("PRAGMA busy_timeout = 60000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise LedgerError(f"cannot enable WAL journal on {path} (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


_TEXT_COLUMNS = ("run_id", "kind", "payload", "timestamp", "prev_hash", "entry_hash")


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
    """An entry from a stored row, with every column of the type the writer stores (an edited
    row can hold any SQLite value: text in an INTEGER column, REAL, BLOB): else EntryError."""
    seq = row[0]
    if type(seq) is not int:
        raise EntryError(f"is not an integer ({type(seq).__name__})", seq=None, field="seq")
    if row[2] is not None and type(row[2]) is not int:
        raise EntryError(
            f"is not an integer or NULL ({type(row[2]).__name__})", seq=seq, field="round_id"
        )
    for name, value in zip(_TEXT_COLUMNS, (row[1], *row[3:8]), strict=True):
        if type(value) is not str:
            raise EntryError(f"is not text ({type(value).__name__})", seq=seq, field=name)
    return Entry(seq, row[1], row[2], row[3], row[4], row[5], row[6], row[7])


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

    ``signing_key`` is needed only to append: a :class:`~securefl.audit.keys.Signer` (e.g.
    :func:`securefl.audit.keys.default_signer`, or a KMS/HSM adapter), or a key object,
    PEM/raw bytes or a PEM path. Readers and auditors open the ledger without it (or with
    :func:`verify_ledger`, which never writes). ``run_id`` is the default run id of appended
    entries.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        signing_key: Signer | SigningKeySource | None = None,
        *,
        run_id: str | None = None,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._key: Signer | None
        if signing_key is None:
            self._key = None
        elif isinstance(signing_key, Ed25519PrivateKey | bytes | str | PathLike):
            self._key = load_signing_key(signing_key)
        elif isinstance(signing_key, Signer):
            self._key = signing_key
        else:
            raise ConfigurationError(
                f"expected a Signer or an Ed25519 key, got {type(signing_key).__name__}",
                parameter="signing_key",
            )
        if not create and not self.path.is_file():
            raise LedgerError(f"ledger file {self.path} does not exist")
        try:
            self._conn = _connect(self.path, readonly=False)
            self._init_schema()
        except _READ_ERRORS as exc:
            if _is_open_failure(exc):
                raise LedgerOpenError(f"cannot open ledger {self.path}: {exc}") from exc
            raise LedgerError(f"{self.path} is not a usable ledger: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def finalize(self) -> None:
        """Make the finished ledger one self-contained file: checkpoint the write-ahead log
        into the main file and switch to ``journal_mode=DELETE`` (no ``-wal``/``-shm`` stay
        beside it, so a copy of the one file is complete and verifies on read-only media).

        Call at the end of a run, after the last append; a later append still works (with a
        rollback journal), and reopening the ledger for writing returns it to WAL mode.
        Fails with :class:`LedgerError` while another connection has the ledger open.
        """
        conn = self._conn
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise LedgerError(f"cannot finalize {self.path}: another connection is using it")
            mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot finalize {self.path}: {exc}") from exc
        if str(mode).lower() != "delete":
            raise LedgerError(f"cannot finalize {self.path}: journal mode stayed {mode}")

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
        message = head_message(self.ledger_id, seq, head_hash)
        sig = self._key.sign(message)
        pub = self._key.public_key()
        try:  # a plugged-in signer (KMS/HSM adapter) must return a valid Ed25519 signature
            pub.verify(sig, message)
        except (InvalidSignature, TypeError, ValueError) as exc:
            raise LedgerError("the signer returned an invalid head signature") from exc
        self._conn.execute(
            "INSERT OR REPLACE INTO head(id, seq, entry_hash, signature, public_key)"
            " VALUES (1, ?, ?, ?, ?)",
            (seq, head_hash, sig.hex(), public_key_raw(pub).hex()),
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
        yield from _iter_entries(self._conn, run_id=run_id, kind=kind, source=self.path)

    def head(self) -> Head | None:
        return _read_head(self._conn)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def verify(
        self,
        public_key: PublicKeySource | None = None,
        *,
        expected_head: AnchorSpec | list[AnchorSpec] | None = None,
        anchors: str | PathLike[str] | Sequence[AnchorLike] | None = None,
    ) -> VerifyResult:
        """See :func:`verify_ledger`; without ``public_key`` this Ledger's own key is pinned."""
        if public_key is None and self._key is not None:
            public_key = self._key.public_key()
        return _verify_conn(self._conn, public_key, _expected(expected_head, anchors))


def _iter_entries(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    kind: str | None = None,
    source: object = "the ledger",
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
    try:
        for row in conn.execute(sql + " ORDER BY seq", args):
            yield _row_to_entry(row)
    except _READ_ERRORS as exc:  # a damaged page met while streaming
        raise _read_failure(exc, source) from exc


def _read_head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute(
        "SELECT seq, entry_hash, signature, public_key FROM head WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    if type(row[0]) is not int or not all(type(v) is str for v in row[1:]):
        raise LedgerError("the signed head row is malformed (a column of the wrong type)")
    return Head(row[0], row[1], row[2], row[3])


@dataclass(frozen=True)
class _Expected:
    """Anchors the ledger must contain: ``(seq or None, hash, ledger_id or None)``; ``log`` is
    set when they came from an anchor log (then at least one must name this ledger)."""

    anchors: tuple[tuple[int | None, str, str | None], ...]
    log: str | None = None


def _parse_anchor(expected: AnchorSpec) -> tuple[int | None, str, str | None]:
    if isinstance(expected, tuple):
        return int(expected[0]), str(expected[1]).lower(), None
    if not isinstance(expected, str):
        return int(expected.seq), str(expected.entry_hash).lower(), str(expected.ledger_id)
    text = expected.strip().lower()
    if ":" in text:
        seq_text, h = text.split(":", 1)
        try:
            return int(seq_text), h, None
        except ValueError as exc:
            raise ConfigurationError(
                "anchor must be SEQ:HASH (as printed by securefl audit verify)",
                parameter="--expect-head",
            ) from exc
    return None, text, None


def _expected(
    expected_head: AnchorSpec | list[AnchorSpec] | None,
    anchors: str | PathLike[str] | Sequence[AnchorLike] | None,
) -> _Expected:
    items: list[tuple[int | None, str, str | None]] = []
    if expected_head is not None:
        if isinstance(expected_head, list):  # several published anchors
            items += [_parse_anchor(x) for x in expected_head]
        else:
            items.append(_parse_anchor(expected_head))
    log: str | None = None
    if anchors is not None:
        if isinstance(anchors, str | PathLike):
            from securefl.audit.anchors import read_anchors

            log = str(anchors)
            items += [_parse_anchor(a) for a in read_anchors(anchors)]
        else:
            log = "the given anchors"
            items += [_parse_anchor(a) for a in anchors]
    return _Expected(tuple(items), log)


def _verify_conn(
    conn: sqlite3.Connection,
    public_key: PublicKeySource | None,
    expected: _Expected,
) -> VerifyResult:
    """Verify inside ONE read transaction: a concurrent append cannot make the head and the
    entries come from different snapshots. A failure to *read* raises LedgerOpenError; bytes
    that were read but are damaged (a corrupt page met while streaming the entries) make the
    result invalid."""
    try:
        conn.execute("BEGIN")
        try:
            return _verify_snapshot(conn, public_key, expected)
        finally:
            conn.execute("ROLLBACK")
    except _READ_ERRORS as exc:
        if _is_open_failure(exc):
            raise LedgerOpenError(f"cannot read the ledger: {exc}") from exc
        pinned = public_key is not None
        return VerifyResult(False, 0, None, None, pinned, [f"ledger file is damaged: {exc}"])


def _verify_snapshot(
    conn: sqlite3.Connection,
    public_key: PublicKeySource | None,
    expected: _Expected,
) -> VerifyResult:
    errors: list[str] = []
    warnings: list[str] = []

    def err(msg: str) -> None:
        if len(errors) < _MAX_ERRORS:
            errors.append(msg)

    pinned: Ed25519PublicKey | None = None if public_key is None else load_public_key(public_key)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        try:
            head = _read_head(conn)
        except LedgerError as exc:  # an edited head row: reported, verification goes on
            err(str(exc))
            head = None
        rows = conn.execute(_SELECT_ENTRIES + " ORDER BY seq")  # streamed, not loaded
    except _READ_ERRORS as exc:
        if _is_open_failure(exc):
            raise
        return VerifyResult(False, 0, None, None, pinned is not None, [f"not a ledger: {exc}"])
    ledger_id = meta.get("ledger_id")
    if not isinstance(ledger_id, str):
        errors.append("ledger id missing" if ledger_id is None else "ledger id is malformed")
        return VerifyResult(False, 0, None, head, pinned is not None, errors)
    if meta.get("format") != str(FORMAT_VERSION):
        err(f"unsupported ledger format {meta.get('format')!r}")

    wanted = [(sq, h) for sq, h, lid in expected.anchors if lid in (None, ledger_id)]
    if expected.log is not None and not any(lid == ledger_id for _s, _h, lid in expected.anchors):
        err(f"{expected.log} holds no anchor for ledger {ledger_id} (a substituted ledger?)")
    by_hash: dict[str, list[int | None]] = {}
    for sq, h in wanted:
        by_hash.setdefault(h, []).append(sq)
    found: set[tuple[int | None, str]] = set()

    prev = genesis_hash(ledger_id)
    expected_seq = 1
    last_seq, last_hash = 0, prev
    count = 0
    for row in rows:
        count += 1
        try:
            e = _row_to_entry(row)
        except EntryError as exc:  # an edited row: report it, keep following the chain
            err(str(exc))
            prev = row[7] if type(row[7]) is str else ""
            if type(row[0]) is int:
                expected_seq = row[0] + 1
                last_seq, last_hash = row[0], prev
            continue
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
            if canonical_json(parse_payload(e.payload_json, seq=e.seq)) != e.payload_json:
                err(f"entry {e.seq}: payload is not canonical JSON")
        except EntryError as exc:
            err(str(exc))
        except ConfigurationError:
            err(f"entry {e.seq}: payload cannot be written as canonical JSON")
        if not _TS_RE.match(e.timestamp):
            err(f"entry {e.seq}: malformed timestamp")
        for sq in by_hash.get(e.entry_hash, ()):
            if sq in (None, e.seq):
                found.add((sq, e.entry_hash))
        prev = e.entry_hash
        expected_seq = e.seq + 1
        last_seq, last_hash = e.seq, e.entry_hash

    genesis = genesis_hash(ledger_id)
    for sq, h in dict.fromkeys(wanted):
        if (sq, h) not in found and not (sq == 0 and h == genesis):
            err(
                f"the externally anchored head {'' if sq is None else f'{sq}:'}{h[:16]}… is not"
                " in this ledger (rolled back or forked)"
            )

    if head is None:
        if not any("head row is malformed" in x for x in errors):
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
            " with another key would also pass; pin the signer with --public-key"
        )
    if not expected.anchors:
        warnings.append(
            "no published anchor given: a rollback to an older, validly signed copy of the"
            " whole ledger cannot be detected; verify with --anchors FILE (the anchor log) or"
            " --expect-head SEQ:HASH"
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
    expected_head: AnchorSpec | list[AnchorSpec] | None = None,
    anchors: str | PathLike[str] | Sequence[AnchorLike] | None = None,
) -> VerifyResult:
    """Recompute every hash and the head signature of the ledger at ``path``.

    Read-only in the strict sense: nothing is created or changed beside the file (see
    :func:`_connect_readonly`), so a copy on read-only media verifies. A file that cannot be
    read raises :class:`LedgerOpenError` — it is never reported as an invalid ledger.

    ``public_key`` pins the signer (without it the key stored in the file is used and the result
    says ``key_pinned=False``). ``expected_head`` (``"SEQ:HASH"``, a bare hash, or several) and
    ``anchors`` (an anchor log path, see :mod:`securefl.audit.anchors`, or anchors) name heads
    published earlier: each must be an entry of this ledger, which detects rollback and forks.
    """
    expected = _expected(expected_head, anchors)
    try:
        conn = _connect(Path(path), readonly=True)
    except NotALedgerError as exc:
        pinned = public_key is not None
        return VerifyResult(False, 0, None, None, pinned, [f"not a ledger: {exc}"])
    try:
        return _verify_conn(conn, public_key, expected)
    finally:
        conn.close()


def read_ledger_id(path: str | PathLike[str]) -> str:
    """The random id of the ledger at ``path`` (read-only, unverified)."""
    conn = _connect(Path(path), readonly=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
    except _READ_ERRORS as exc:
        raise _read_failure(exc, path) from exc
    finally:
        conn.close()
    if row is None or not isinstance(row[0], str):
        raise LedgerError(f"{path} is not a ledger: no ledger id")
    return str(row[0])


def read_entries(
    path: str | PathLike[str], *, run_id: str | None = None, kind: str | None = None
) -> list[Entry]:
    """All entries of a ledger file, read-only (for reports and checks; see verify_ledger)."""
    conn = _connect(Path(path), readonly=True)
    try:
        return list(_iter_entries(conn, run_id=run_id, kind=kind, source=path))
    except _READ_ERRORS as exc:
        raise _read_failure(exc, path) from exc
    finally:
        conn.close()
