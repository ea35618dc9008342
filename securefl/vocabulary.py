"""One vocabulary for every layer: adjacency, threat model, limits.

Before this module the same idea had several spellings ("add-remove" in the ledger,
"add_remove" in DP events; "malicious" in SecAgg configs, "semi-malicious" in the parameter
solver), and a reader had to know which layer spoke which. Each concept is now one enum whose
*value* is the canonical spelling written to ledgers, policies and reports; :meth:`parse` also
accepts the older spellings so ledgers written before the change still read. Wire formats that
carry a number (the SecAgg stage byte) keep their numbers; only names are unified here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from securefl.errors import ConfigurationError

#: Most clients in one aggregation round, for every protocol and every layer (SecAgg configs,
#: the wire decoder's list bounds, the (k, t) solver, the engine). 2^20 ≈ 10^6 participants per
#: round is above any cohort in production FL (Bonawitz et al. 2019 report a few hundred).
MAX_CLIENTS = 1 << 20


class _Vocabulary(StrEnum):
    """A StrEnum that parses its canonical value, its member name, and listed aliases."""

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {}

    @classmethod
    def parse(cls, value: object, *, parameter: str | None = None) -> Self:
        """The member named by ``value``; a :class:`ConfigurationError` naming ``parameter``
        (default: the enum's name in snake case) for anything else."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            text = cls._aliases().get(value, value)
            for member in cls:
                if text in (member.value, member.name.lower(), member.value.replace("-", "_")):
                    return member
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ConfigurationError(
            f"must be one of {allowed}, got {value!r}",
            parameter=parameter or _snake(cls.__name__),
        )


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Adjacency(_Vocabulary):
    """Which datasets are neighbours (the unit of a DP guarantee, protocols/dp.md §1).

    Poisson sampling goes with add/remove (one unit present or absent); fixed-size sampling
    without replacement with replace-one (one unit swapped), whose sensitivity is twice as
    large for the same clip.
    """

    ADD_REMOVE = "add-remove"
    REPLACE_ONE = "replace-one"

    @property
    def snake(self) -> str:
        """The spelling inside DP events and accountants (``add_remove``), kept for the
        events already recorded in ledgers."""
        return self.value.replace("-", "_")

    @property
    def sensitivity_factor(self) -> float:
        """Δ₂ of a sum of updates clipped to C is factor·C."""
        return 1.0 if self is Adjacency.ADD_REMOVE else 2.0


class ThreatModel(_Vocabulary):
    """What the server may do in secure aggregation.

    ``MALICIOUS`` (the default everywhere): the server deviates arbitrarily — splits views,
    lies about dropouts, colludes with a fraction γ of clients (Bonawitz et al. 2017 §6.2;
    the "semi-malicious" rows of Bell et al. 2020's parameter tables); thresholds satisfy
    t > (n + ⌊γn⌋)/2 on the complete graph. ``SEMI_HONEST``: the server follows the protocol
    and only looks at what it receives — an explicit, recorded opt-in.
    """

    SEMI_HONEST = "semi-honest"
    MALICIOUS = "malicious"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"semi-malicious": "malicious", "semi_malicious": "malicious"}


__all__ = ["MAX_CLIENTS", "Adjacency", "ThreatModel"]
