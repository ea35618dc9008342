"""Audit layer: tamper-evident privacy ledger, budget policies, reports, empirical audits.

Consumes DP events (:mod:`securefl.dp.events`) and protocol parameters as plain data; knows
nothing of tensors. See ``audits/README.md`` for the ledger records, key custody and anchors.
"""

from securefl.audit.anchors import Anchor, finish_ledger, publish_anchor, read_anchors
from securefl.audit.keys import FileSigner, Signer, assert_no_signing_key_under, default_signer
from securefl.audit.ledger import (
    Entry,
    Head,
    Ledger,
    LedgerError,
    LedgerOpenError,
    VerifyResult,
    verify_ledger,
)
from securefl.audit.records import Record, RecordError, parse

__all__ = [
    "Anchor",
    "Entry",
    "FileSigner",
    "Head",
    "Ledger",
    "LedgerError",
    "LedgerOpenError",
    "Record",
    "RecordError",
    "Signer",
    "VerifyResult",
    "assert_no_signing_key_under",
    "default_signer",
    "finish_ledger",
    "parse",
    "publish_anchor",
    "read_anchors",
    "verify_ledger",
]
