"""Published head anchors: the normal defence against rollback of a whole ledger.

A signature cannot tell a current ledger from an older, validly signed copy of it (see
:mod:`securefl.audit.ledger`). An anchor ``SEQ:HASH`` written somewhere the ledger's holder
cannot rewrite can: a ledger that does not contain every anchor published for its id was
rolled back or forked. :func:`publish_anchor` appends the head to an anchor log (JSON lines)
outside the run directory — by default ``anchors.jsonl`` next to the signing keys — and
``securefl audit verify LEDGER -k KEY.pub --anchors FILE`` checks every anchor of that ledger.
Copy the log (or each line) to a ticket, model card or transparency log for the strongest
guarantee: the operator can still edit a log on their own disk.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securefl.audit.keys import default_anchor_log
from securefl.audit.ledger import Ledger, LedgerError, VerifyResult, format_timestamp

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """One published head: which ledger, which entry, when, signed by which key."""

    ledger_id: str
    seq: int
    entry_hash: str
    timestamp: str
    key_fingerprint: str | None = None

    @property
    def text(self) -> str:
        """``SEQ:HASH``, the form ``--expect-head`` takes."""
        return f"{self.seq}:{self.entry_hash}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.text,
            "entry_hash": self.entry_hash,
            "key_fingerprint": self.key_fingerprint,
            "ledger_id": self.ledger_id,
            "seq": self.seq,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "anchor") -> Anchor:
        if not isinstance(d, dict):
            raise LedgerError(f"{where}: an anchor must be a JSON object")
        lid, seq, h, ts = d.get("ledger_id"), d.get("seq"), d.get("entry_hash"), d.get("timestamp")
        fp = d.get("key_fingerprint")
        if not isinstance(lid, str) or not lid:
            raise LedgerError(f"{where}: ledger_id is missing")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise LedgerError(f"{where}: seq must be an integer >= 0")
        if not isinstance(h, str) or not _HEX64.match(h):
            raise LedgerError(f"{where}: entry_hash must be 64 hex digits")
        if not isinstance(ts, str):
            raise LedgerError(f"{where}: timestamp is missing")
        if fp is not None and (not isinstance(fp, str) or not _HEX64.match(fp)):
            raise LedgerError(f"{where}: key_fingerprint must be 64 hex digits")
        return cls(lid, seq, h, ts, fp)


def publish_anchor(
    ledger: Ledger | VerifyResult,
    *,
    anchor_log: str | os.PathLike[str] | None = None,
    key_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    timestamp: datetime | str | None = None,
) -> Anchor:
    """Append the ledger's current signed head to the anchor log and return it.

    ``ledger`` is the open :class:`Ledger` (at the end of a run) or the result of verifying
    one (``securefl audit anchor``: only a verified head is worth publishing).

    ``anchor_log`` defaults to ``anchors.jsonl`` in the key directory; a log inside
    ``run_dir`` is refused (the run directory is what gets rolled back). The line is
    appended with ``O_APPEND`` and fsynced before this returns.
    """
    ledger_id: str | None
    if isinstance(ledger, Ledger):
        head, ledger_id, where = ledger.head(), ledger.ledger_id, str(ledger.path)
    else:
        if not ledger.ok:
            raise LedgerError("refusing to publish the head of a ledger that did not verify")
        head, ledger_id, where = ledger.head, ledger.ledger_id, "the verified ledger"
    if head is None or ledger_id is None:
        raise LedgerError(f"{where} has no signed head to publish")
    path = Path(anchor_log) if anchor_log is not None else default_anchor_log(key_dir)
    if run_dir is not None:
        p, d = path.resolve(), Path(run_dir).resolve()
        if p == d or d in p.parents:
            raise LedgerError(
                f"anchor log {path} lies inside the run directory {run_dir}; publish anchors"
                " outside it (next to the keys, or a path given with --anchors)"
            )
    anchor = Anchor(
        ledger_id=ledger_id,
        seq=head.seq,
        entry_hash=head.entry_hash,
        timestamp=format_timestamp(timestamp),
        key_fingerprint=head.key_fingerprint,
    )
    line = json.dumps(anchor.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LedgerError(f"cannot write anchor log {path}: {exc.strerror}") from exc
    return anchor


def read_anchors(path: str | os.PathLike[str], *, ledger_id: str | None = None) -> list[Anchor]:
    """Anchors from a log (one JSON object per line), optionally only those of one ledger.

    A malformed line is refused (naming its line number), never skipped: a skipped anchor
    would silently weaken rollback detection.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read anchor log {p}: {exc}") from exc
    out: list[Anchor] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise LedgerError(f"{p}:{i}: not JSON") from exc
        a = Anchor.from_dict(data, where=f"{p}:{i}")
        if ledger_id is None or a.ledger_id == ledger_id:
            out.append(a)
    return out


def finish_ledger(
    ledger: Ledger,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    anchor_log: str | os.PathLike[str] | None = None,
    key_dir: str | os.PathLike[str] | None = None,
) -> Anchor:
    """End of a run, after its last append: publish the head anchor (outside ``run_dir``),
    then :meth:`Ledger.finalize` so the ledger is one self-contained file. Print or report the
    returned anchor's ``text``; the ledger stays open (the caller closes it)."""
    anchor = publish_anchor(ledger, anchor_log=anchor_log, key_dir=key_dir, run_dir=run_dir)
    ledger.finalize()
    return anchor


def latest_anchor(anchors: list[Anchor]) -> Anchor | None:
    """The published anchor with the highest ``seq`` (the one a rollback must cut off)."""
    return max(anchors, key=lambda a: a.seq, default=None)


__all__ = ["Anchor", "finish_ledger", "latest_anchor", "publish_anchor", "read_anchors"]
