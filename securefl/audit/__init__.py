"""Audit layer: tamper-evident privacy ledger, budget policies, reports, empirical audits.

Consumes DP events (:mod:`securefl.dp.events`) and protocol parameters as plain data; knows
nothing of tensors. See ``audits/README.md`` for the ledger entry kinds and their payloads.
"""

from securefl.audit.ledger import Entry, Head, Ledger, VerifyResult, verify_ledger

__all__ = ["Entry", "Head", "Ledger", "VerifyResult", "verify_ledger"]
