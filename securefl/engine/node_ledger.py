"""A data holder's own signed ledger: opening it, and reading back what the node contributed.

The node ledger is a :class:`securefl.audit.ledger.Ledger` like the server's (hash chain,
Ed25519-signed head), holding only node records (``node_policy``, ``node_contribution``,
``node_round_refused``; :mod:`securefl.audit.records`). Its signing key lives outside the
directory of the ledger (a directory handed to an auditor must not hold what can re-sign it,
:mod:`securefl.audit.keys`). :class:`NodeHistory` is what a node's policy decides against: the
terms it pinned per run and how often it contributed — read from the ledger, never from the
server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from securefl.audit.keys import FileSigner, ensure_key_dir, write_keypair
from securefl.audit.ledger import Entry, Ledger
from securefl.audit.records import (
    NODE_CONTRIBUTION,
    NODE_POLICY,
    NODE_ROUND_REFUSED,
    NodeContribution,
    NodePolicyRecorded,
    parse_as,
)
from securefl.audit.spend import NodeRunCharge, node_run_charges
from securefl.engine.node_terms import RoundTerms, TermsError
from securefl.errors import ConfigurationError


def open_node_ledger(path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Ledger:
    """The node's ledger at ``path``, signed with the Ed25519 key at ``key_path``.

    On first use the key is created (PEM, mode 0600, public key ``KEY.pub`` beside it) in a
    directory created 0700. Refused (:class:`ConfigurationError`): a key directory others can
    access, a key file others can read, and a key inside the ledger's own directory.
    """
    ledger_path = Path(path).expanduser()
    key = Path(key_path).expanduser()
    ensure_key_dir(key.parent)
    if not key.exists():
        write_keypair(key)
    signer = FileSigner(key, run_dir=ledger_path.parent)
    if not ledger_path.parent.is_dir():
        raise ConfigurationError(
            f"directory {ledger_path.parent} does not exist", parameter="ledger_path"
        )
    return Ledger(ledger_path, signer)


@dataclass
class NodeHistory:
    """What a node ledger says the node did, fed entry by entry in ledger order.

    ``pinned`` holds per run the terms of the first round the node joined; ``contributions``
    the entries it admitted; ``policy_sha256`` the last node policy recorded. A malformed node
    entry sets ``error`` (the node then refuses everything: it cannot account).
    """

    pinned: dict[str, RoundTerms] = field(default_factory=dict)
    first_round: dict[str, int] = field(default_factory=dict)
    contributions: dict[str, int] = field(default_factory=dict)
    refusals: int = 0
    policy_sha256: str | None = None
    error: str | None = None
    _entries: list[Entry] = field(default_factory=list)

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> NodeHistory:
        h = cls()
        for e in entries:
            h.feed(e)
        return h

    def feed(self, entry: Entry) -> NodeContribution | None:
        """Take one entry into account; returns its record if it is a contribution."""
        if self.error is not None:
            return None
        try:
            if entry.kind == NODE_POLICY:
                self.policy_sha256 = parse_as(entry, NodePolicyRecorded).policy_sha256
            elif entry.kind == NODE_ROUND_REFUSED:
                self.refusals += 1
            elif entry.kind == NODE_CONTRIBUTION:
                rec = parse_as(entry, NodeContribution)
                terms = RoundTerms.from_dict(rec.terms)
                if rec.dp_event != terms.dp_event or rec.planned_rounds != terms.rounds:
                    raise ConfigurationError(
                        "dp_event / planned_rounds differ from its terms",
                        parameter=f"entry {entry.seq}",
                    )
                if terms.run_id != entry.run_id:
                    raise ConfigurationError(
                        "terms name another run", parameter=f"entry {entry.seq}.run_id"
                    )
                self.pinned.setdefault(entry.run_id, terms)
                self.first_round.setdefault(entry.run_id, terms.round_index)
                self.contributions[entry.run_id] = self.contributions.get(entry.run_id, 0) + 1
                self._entries.append(entry)
                return rec
        except (ConfigurationError, TermsError) as exc:
            self.error = f"entry {entry.seq} ({entry.kind}): {exc}"
        return None

    def charges(self, *, extra: dict[str, int] | None = None) -> list[NodeRunCharge]:
        """Per run: the pinned event × max(planned rounds, contributions) (+ ``extra``)."""
        charges = node_run_charges(self._entries, extra=extra)
        return charges


__all__ = ["NodeHistory", "open_node_ledger"]
