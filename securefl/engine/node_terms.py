"""What the server announces to a node for one round (:class:`RoundTerms`) and its wire form.

A data holder decides whether to take part from these terms alone, before it computes
anything (protocols/engine-flower.md, "Node-side policy and ledger"). They come from a server
the node does not trust, so :meth:`RoundTerms.from_wire` reads them the way the SecAgg wire
decoder reads a peer message: size bounded before parsing, bounded JSON (depth, integer
length, no NaN/Infinity), exactly the known keys, every value typed and range-checked, and the
canonical encoding only (``to_wire(from_wire(b)) == b``), so one round has one byte string and
its SHA-256 can be recorded and compared. A violation raises :class:`MalformedTermsError`
naming the field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from securefl.audit.ledger import EntryError, canonical_json, parse_payload
from securefl.audit.spend import ACCOUNTANTS
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import event_from_dict
from securefl.errors import ConfigurationError, MalformedMessageError
from securefl.vocabulary import MAX_CLIENTS, ThreatModel

TERMS_VERSION = 1
#: Largest encoded terms a node reads (a DP event is a few hundred bytes).
MAX_TERMS_BYTES = 64 * 1024
#: Most rounds a run may plan (far above any FL run; bounds the node's accounting).
MAX_ROUNDS = 1_000_000
MAX_RUN_ID_CHARS = 256
AGGREGATIONS = ("plain", "secagg", "secagg+", "ckks")
DP_MODES = ("none", "central", "distributed", "local")
PRIVACY_UNITS = ("example", "client")
SECURE_MASKING = frozenset({"secagg", "secagg+"})
THREAT_MODELS = tuple(m.value for m in ThreatModel)


class TermsError(ConfigurationError):
    """Terms built locally with an invalid value (``parameter`` names the field)."""

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message, parameter=parameter)
        self.reason = message


class MalformedTermsError(MalformedMessageError):
    """Announced terms that do not parse or are out of range; ``field`` names what (a remote
    fault: the server sent them)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"round terms: {field}: {message}")
        self.field = field


def _fail(name: str, message: str) -> TermsError:
    return TermsError(message, parameter=name)


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(name, f"must be an integer in {lo}..{hi}, got {v!r}")
    return int(v)


def _opt_int(name: str, v: Any, lo: int, hi: int) -> int | None:
    return None if v is None else _int(name, v, lo, hi)


def _float(name: str, v: Any, *, lo: float, hi: float) -> float:
    """A finite number in the open interval (lo, hi)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(name, f"must be a number, got {type(v).__name__}")
    x = float(v)
    if not math.isfinite(x) or not lo < x < hi:
        raise _fail(name, f"must be a finite number in ({lo:g}, {hi:g}), got {x!r}")
    return x


def _opt_float(name: str, v: Any) -> float | None:
    return None if v is None else _float(name, v, lo=0.0, hi=math.inf)


def _choice(name: str, v: Any, options: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in options:
        shown = repr(v[:40]) if isinstance(v, str) else type(v).__name__
        raise _fail(name, f"must be one of {', '.join(options)}, got {shown}")
    return v


def _event(v: Any) -> dict[str, Any]:
    """The DP event in its canonical ``to_dict()`` form (decoded, so it is accountable)."""
    if not isinstance(v, Mapping):
        raise _fail("dp_event", "must be a DpEvent.to_dict() object")
    try:
        canonical = event_from_dict(v).to_dict()
    except InvalidParameterError as exc:
        raise _fail("dp_event", str(exc)) from exc
    except RecursionError:  # pragma: no cover - bounded by MAX_EVENT_DEPTH and the JSON depth
        raise _fail("dp_event", "nested too deeply") from None
    return canonical


@dataclass(frozen=True)
class RoundTerms:
    """One round as announced to a node: everything its policy decides on.

    ``rounds`` is the run's planned total; ``dp_event`` is the round's DP event exactly as the
    server's ledger records it (``DpEvent.to_dict()``); ``noise_multiplier`` and ``clip`` are
    the announced DP parameters (``None`` without DP); ``threshold`` / ``degree`` are the
    SecAgg(+) Shamir threshold over a client's neighbourhood and the SecAgg+ neighbour degree
    k (``None``: complete graph), as in :class:`securefl.secagg.config.SecAggConfig`.
    ``cohort_size`` is the number of clients in the round. Construction validates and
    normalises every field (:class:`TermsError`).
    """

    run_id: str
    round_index: int
    rounds: int
    aggregation: str
    dp: str
    dp_event: dict[str, Any]
    noise_multiplier: float | None
    clip: float | None
    delta: float
    accountant: str
    threat_model: str
    threshold: int | None
    cohort_size: int
    privacy_unit: str
    degree: int | None = None

    #: Fields a node pins for a whole run (all but the per-round ones): a change is refused.
    PER_ROUND_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"round_index", "cohort_size", "threshold"}
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        rid = self.run_id
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_RUN_ID_CHARS:
            raise _fail("run_id", f"must be a string of 1..{MAX_RUN_ID_CHARS} characters")
        if not rid.isprintable():
            raise _fail("run_id", "must not contain control characters")
        rounds = _int("rounds", self.rounds, 1, MAX_ROUNDS)
        set_(self, "rounds", rounds)
        set_(self, "round_index", _int("round_index", self.round_index, 0, rounds - 1))
        agg = _choice("aggregation", self.aggregation, AGGREGATIONS)
        _choice("dp", self.dp, DP_MODES)
        set_(self, "dp_event", _event(self.dp_event))
        set_(self, "noise_multiplier", _opt_float("noise_multiplier", self.noise_multiplier))
        set_(self, "clip", _opt_float("clip", self.clip))
        set_(self, "delta", _float("delta", self.delta, lo=0.0, hi=1.0))
        _choice("accountant", self.accountant, ACCOUNTANTS)
        _choice("threat_model", self.threat_model, THREAT_MODELS)
        _choice("privacy_unit", self.privacy_unit, PRIVACY_UNITS)
        n = _int("cohort_size", self.cohort_size, 1, MAX_CLIENTS)
        set_(self, "cohort_size", n)
        set_(self, "threshold", _opt_int("threshold", self.threshold, 2, MAX_CLIENTS))
        set_(self, "degree", _opt_int("degree", self.degree, 2, MAX_CLIENTS))
        if agg in SECURE_MASKING:
            if n < 2:
                raise _fail("cohort_size", f"{agg} needs at least 2 clients")
            if self.threshold is None:
                raise _fail("threshold", f"is required for {agg}")
            if self.threshold > self.neighbours:
                raise _fail(
                    "threshold", f"{self.threshold} > {self.neighbours} neighbours of a client"
                )
        elif self.threshold is not None or self.degree is not None:
            raise _fail("threshold", f"threshold and degree are SecAgg parameters, not {agg}'s")
        if agg == "secagg" and self.degree is not None:
            raise _fail("degree", "secagg runs on the complete graph (degree is for secagg+)")

    @property
    def neighbours(self) -> int:
        """Neighbours of each client: n − 1 on the complete graph, else k rounded up to even
        (``SecAggConfig.neighbour_count``); the threshold is out of this many shares."""
        n = self.cohort_size
        if self.degree is None or self.degree + (self.degree % 2) >= n - 1:
            return max(n - 1, 0)
        return self.degree + (self.degree % 2)

    def __hash__(self) -> int:
        return hash(self.to_wire())

    def pinned(self) -> dict[str, Any]:
        """The terms a run must keep in every round (see :data:`PER_ROUND_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.PER_ROUND_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundTerms:
        """Terms from a mapping with exactly the field names (:class:`TermsError` otherwise)."""
        if not isinstance(d, Mapping):
            raise _fail("terms", "must be an object")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise _fail(unknown[0][:64], "unknown field")
        missing = [k for k in names if k not in d]
        if missing:
            raise _fail(missing[0], "is required")
        return cls(**{k: d[k] for k in names})

    def to_wire(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace), UTF-8, with the format version ``v``."""
        return canonical_json({"v": TERMS_VERSION, **self.to_dict()}).encode("utf-8")

    @property
    def sha256(self) -> str:
        """SHA-256 of :meth:`to_wire`: what the node records and compares."""
        return hashlib.sha256(self.to_wire()).hexdigest()

    @classmethod
    def from_wire(cls, data: bytes) -> RoundTerms:
        """Parse announced terms; anything but valid, canonical terms raises
        :class:`MalformedTermsError` naming the field."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedTermsError(f"must be bytes, got {type(data).__name__}", field="wire")
        if len(data) > MAX_TERMS_BYTES:
            raise MalformedTermsError(
                f"{len(data)} bytes > the {MAX_TERMS_BYTES}-byte limit", field="wire"
            )
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
            obj = parse_payload(text)
        except UnicodeDecodeError as exc:
            raise MalformedTermsError("is not UTF-8", field="wire") from exc
        except EntryError as exc:
            raise MalformedTermsError(exc.reason, field="wire") from exc
        version = obj.pop("v", None)
        if version != TERMS_VERSION or isinstance(version, bool):
            raise MalformedTermsError(f"unsupported terms version {version!r}", field="v")
        try:
            terms = cls.from_dict(obj)
        except TermsError as exc:
            raise MalformedTermsError(exc.reason, field=exc.parameter or "terms") from exc
        if terms.to_wire() != raw:
            raise MalformedTermsError("is not the canonical encoding", field="wire")
        return terms


__all__ = [
    "AGGREGATIONS",
    "DP_MODES",
    "MAX_TERMS_BYTES",
    "PRIVACY_UNITS",
    "MalformedTermsError",
    "RoundTerms",
    "TermsError",
]
