"""Typed ledger records: one frozen class per entry kind, the only reader and writer of payloads.

A ledger entry is data an auditor recomputes from (dp_accounting's ``DpEvent`` habit): its
meaning must not depend on which code wrote it. Before this module the writer (``fl/run.py``)
and the readers (policy, spend, report) each spelled payload keys by hand and disagreed
(``rounds`` vs ``config.rounds``; ``code_version`` never written), so a typo silently skipped a
policy rule. Now every payload goes through :meth:`Record.to_payload` and comes back through
:func:`parse`, which refuses an unknown kind or a missing / ill-typed field with a
:class:`RecordError` naming the field.

Versions. A payload written through this module carries ``"record_version": 1``. Payloads
without it are *version 0*: what securefl wrote before records existed (``fl/run.py``) and what
``audits/README.md`` told users to write. They are mapped explicitly, field by field, in each
class's ``_from_v0`` (e.g. ``planned_rounds`` from ``config.rounds``; ``code_version`` was never
recorded and reads as ``None``). A version-0 record is for reading only (``append_record``
refuses it). Keys a record does not name are kept in ``extra`` and written back unchanged, so
``from_payload(to_payload())`` is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

from securefl.audit.ledger import (
    MODEL_PROVENANCE,
    POLICY,
    ROUND_ABORTED,
    ROUND_COMPLETED,
    ROUND_PROJECTED,
    ROUND_REFUSED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Entry,
    EntryError,
    LedgerError,
)
from securefl.errors import ConfigurationError
from securefl.vocabulary import Adjacency

RECORD_VERSION = 1
_R = TypeVar("_R", bound="Record")
VERSION_KEY = "record_version"
EMPIRICAL_AUDIT = "empirical_audit"
NODE_REFUSAL = "node_refusal"
# Kinds of a *node* ledger (the data holder's own, protocols/engine-flower.md "Node-side policy
# and ledger"); a server ledger never holds them.
NODE_POLICY = "node_policy"
NODE_CONTRIBUTION = "node_contribution"
NODE_ROUND_REFUSED = "node_round_refused"
PRIVACY_UNITS = ("example", "client")
METRIC_NAMES = ("accuracy", "loss", "bytes_up", "bytes_down")


class RecordError(LedgerError, ConfigurationError):
    """A ledger payload does not match its record: ``field`` names what is wrong.

    Also a :class:`ConfigurationError` whose ``parameter`` is ``kind.field``, so code that
    already refuses malformed input (policy checks, reports) refuses a malformed entry too.
    """

    def __init__(
        self, message: str, *, kind: str, field: str | None = None, seq: int | None = None
    ) -> None:
        where = f"entry {seq}: " if seq is not None else ""
        name = f"{kind}.{field}" if field else kind
        ConfigurationError.__init__(self, f"{where}{message}", parameter=name)
        self.kind = kind
        self.field = field
        self.seq = seq


class UnknownKindError(RecordError):
    """The entry kind has no record class (another tool's entry, or a typo)."""


# --------------------------------------------------------------------------- field readers
class _Reader:
    """Typed, named reads from one payload; every failure names ``kind.field``."""

    def __init__(self, payload: Mapping[str, Any], kind: str, seq: int | None) -> None:
        if not isinstance(payload, Mapping):
            raise RecordError("payload must be a JSON object", kind=kind, seq=seq)
        self.payload = payload
        self.kind = kind
        self.seq = seq
        self.used: set[str] = {VERSION_KEY}

    def fail(self, name: str, message: str) -> RecordError:
        return RecordError(message, kind=self.kind, field=name, seq=self.seq)

    def has(self, name: str) -> bool:
        return self.payload.get(name) is not None

    def raw(self, name: str, *, required: bool) -> Any:
        self.used.add(name)
        value = self.payload.get(name)
        if value is None and required:
            raise self.fail(name, "is required")
        return value

    def str_(self, name: str, *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        if v is not None and (not isinstance(v, str) or not v):
            raise self.fail(name, f"must be a non-empty string, got {v!r}")
        return v

    def int_(self, name: str, *, required: bool = True, minimum: int = 0) -> Any:
        v = self.raw(name, required=required)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
            raise self.fail(name, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def float_(self, name: str, *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        return _float(v, lambda msg: self.fail(name, msg))

    def bool_(self, name: str, *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        if v is not None and not isinstance(v, bool):
            raise self.fail(name, f"must be true or false, got {v!r}")
        return v

    def dict_(self, name: str, *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        if v is not None and not isinstance(v, Mapping):
            raise self.fail(name, "must be an object")
        return None if v is None else dict(v)

    def list_(self, name: str, *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        if v is not None and not isinstance(v, list):
            raise self.fail(name, "must be a list")
        return None if v is None else list(v)

    def choice(self, name: str, options: Iterable[str], *, required: bool = True) -> Any:
        v = self.str_(name, required=required)
        opts = tuple(options)
        if v is not None and v not in opts:
            raise self.fail(name, f"must be one of {', '.join(opts)}, got {v!r}")
        return v

    def adjacency(self, name: str = "adjacency", *, required: bool = True) -> Any:
        v = self.raw(name, required=required)
        if v is None:
            return None
        try:
            return Adjacency.parse(v).value
        except ValueError as exc:
            raise self.fail(name, str(exc)) from exc

    def dp_event(self, name: str = "dp_event", *, required: bool = True) -> Any:
        ev = self.dict_(name, required=required)
        if ev is not None and not isinstance(ev.get("type"), str):
            raise self.fail(name, "must be a DpEvent.to_dict() (a 'type' is required)")
        return ev

    def extra(self) -> dict[str, Any]:
        return {k: v for k, v in self.payload.items() if k not in self.used}


def _float(v: Any, fail: Any) -> float | None:
    """A finite number; version 0 wrote ε = ∞ as the string "inf" (read as None: unbounded)."""
    if v is None or v in ("inf", "-inf", "nan"):
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise fail(f"must be a finite number, got {v!r}")
    return float(v)


def _count(v: Any) -> int | None:
    """Version 0 counted clients as an int, a list of ids or a per-stage dict of lists."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, list):
        return len(v)
    if isinstance(v, Mapping):
        parts = [_count(x) for x in v.values()]
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    return None


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------- base class
@dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every record; ``kind`` is the ledger entry kind, ``version`` the payload format
    it was read from (1 = written through this module, 0 = mapped from an older payload)."""

    KIND: ClassVar[str] = ""
    #: Entries of this kind describe one round: ``append_record`` requires a ``round_id``.
    PER_ROUND: ClassVar[bool] = False
    version: int = field(default=RECORD_VERSION, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.KIND

    def to_payload(self) -> dict[str, Any]:
        """The canonical payload (version 1); ``None`` fields are omitted."""
        if self.version != RECORD_VERSION:
            raise RecordError(
                "a record read from an older payload cannot be written back",
                kind=self.KIND,
                field=VERSION_KEY,
            )
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name in ("version", "extra"):
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        out[VERSION_KEY] = RECORD_VERSION
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, seq: int | None = None) -> Self:
        """Parse a payload of this kind (version 1, or version 0 mapped explicitly)."""
        r = _Reader(payload, cls.KIND, seq)
        version = payload.get(VERSION_KEY, 0) if isinstance(payload, Mapping) else 0
        if version == 0:
            return cls._from_v0(r)
        if version != RECORD_VERSION:
            raise r.fail(VERSION_KEY, f"unsupported record version {version!r}")
        return cls._from_v1(r)

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        return cls._read(r)

    @classmethod
    def _read(cls, r: _Reader, *, optional: Mapping[str, Any] | None = None, **given: Any) -> Self:
        """The one field reader of every record, driven by the dataclass fields.

        A field in ``given`` is taken as is (a kind's own check, or a version-0 mapping); every
        other field is read by its name if :data:`_BY_NAME` has it (the same meaning in every
        record), else by its annotated type (:data:`_BY_TYPE`), in declaration order. A field
        without a default is required, unless ``optional`` names it with the value to use when
        absent; a ``default_factory`` fills an absent list.
        """
        optional = optional or {}
        values = dict(given)
        for f in fields(cls):
            if f.name in values or f.name in ("version", "extra"):
                continue
            required = f.default is MISSING and f.default_factory is MISSING
            required = required and f.name not in optional
            read = _BY_NAME.get(f.name) or _BY_TYPE[_type_head(f.type)]
            value = read(r, f.name, required)
            if value is None and f.name in optional:
                value = optional[f.name]
            if value is not None or f.default_factory is MISSING:
                values[f.name] = value
        return cls(**values, extra=r.extra())

    @classmethod
    def _from_v0(cls, r: _Reader) -> Self:
        """By default version 0 used the same keys; what differs is mapped in subclasses."""
        rec = cls._from_v1(r)
        return _with_version(rec, 0)


def _with_version(rec: _R, version: int) -> _R:
    object.__setattr__(rec, "version", version)
    return rec


# --------------------------------------------------------------------------- run lifecycle
@dataclass(frozen=True, kw_only=True)
class RunStarted(Record):
    """What the run will do: the guarantee's unit and adjacency, the plan, the code.

    ``planned_rounds`` and ``code_version`` (``securefl.audit.provenance.code_version()``) are
    required from version 1; version-0 ledgers read ``config.rounds`` (or ``rounds``) and have
    no code version (``None``: "not recorded"). ``dp`` is ``None`` for a run without DP.
    """

    KIND: ClassVar[str] = RUN_STARTED
    privacy_unit: str
    adjacency: str
    planned_rounds: int | None
    code_version: dict[str, Any] | None
    aggregation: dict[str, Any]
    dp: dict[str, Any] | None = None
    delta: float | None = None
    accountant: str | None = None
    sampling: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    config_sha256: str | None = None
    policy: str | None = None

    def __post_init__(self) -> None:
        if self.version >= 1:
            if not isinstance(self.planned_rounds, int) or isinstance(self.planned_rounds, bool):
                raise RecordError(
                    "is required (an integer)", kind=self.KIND, field="planned_rounds"
                )
            if not isinstance(self.code_version, Mapping):
                raise RecordError(
                    "is required (securefl.audit.provenance.code_version())",
                    kind=self.KIND,
                    field="code_version",
                )
            if self.privacy_unit not in PRIVACY_UNITS:
                raise RecordError(
                    f"must be one of {', '.join(PRIVACY_UNITS)}",
                    kind=self.KIND,
                    field="privacy_unit",
                )
            Adjacency.parse(self.adjacency, parameter=f"{self.KIND}.adjacency")
            if not isinstance(self.aggregation.get("protocol"), str):
                raise RecordError("needs a 'protocol'", kind=self.KIND, field="aggregation")

    @property
    def clip(self) -> float | None:
        return _num(self.dp, "clip")

    @property
    def noise_multiplier(self) -> float | None:
        return _num(self.dp, "noise_multiplier")

    @property
    def mechanism(self) -> str | None:
        """The DP mode (``central`` / ``distributed`` / ``local``), ``None`` without DP."""
        if self.dp is None:
            return None
        for key in ("mode", "mechanism"):
            v = self.dp.get(key)
            if isinstance(v, str):
                return v
        return None

    @classmethod
    def _from_v0(cls, r: _Reader) -> Self:
        # fl/run.py wrote {config, dp{mode, clip, noise_multiplier, delta, accountant}, ...};
        # audits/README.md told users to write mechanism/clip/noise_multiplier/delta/rounds at
        # the top level. Both are mapped here, nothing else is guessed.
        config = r.dict_("config", required=False)
        dp = r.dict_("dp", required=False)
        top_dp = {
            k: r.raw(k, required=False)
            for k in ("mechanism", "clip", "noise_multiplier")
            if r.has(k)
        }
        if top_dp:
            dp = {**top_dp, **(dp or {})}
        if dp is not None and dp.get("mode") == "none":
            dp = None
        rounds = r.raw("rounds", required=False)
        if rounds is None and config is not None:
            rounds = config.get("rounds")
        if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int)):
            raise r.fail("rounds", f"must be an integer, got {rounds!r}")
        delta = r.float_("delta", required=False)
        if delta is None and dp is not None:
            delta = _float(dp.get("delta"), lambda m: r.fail("dp.delta", m))
        accountant = r.str_("accountant", required=False)
        if accountant is None and dp is not None and isinstance(dp.get("accountant"), str):
            accountant = dp["accountant"]
        if accountant is None and config is not None and isinstance(config.get("accountant"), str):
            accountant = config["accountant"]
        return cls._read(
            r,
            optional={"code_version": None, "aggregation": {}},
            version=0,
            planned_rounds=rounds,
            dp=dp,
            delta=delta,
            accountant=accountant,
            config=config,
        )


def _num(d: Mapping[str, Any] | None, key: str) -> float | None:
    if d is None:
        return None
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _eps_map(r: _Reader, name: str) -> dict[str, float | None] | None:
    """The run's own ε claim per accountant name (``{"rdp": 3.1, "prv": null}``)."""
    d = r.dict_(name, required=False)
    if d is None:
        return None
    out: dict[str, float | None] = {}
    for k, v in d.items():
        out[str(k)] = _float(v, lambda m, k=k: r.fail(f"{name}.{k}", m))
    return out


def _aggregation(r: _Reader, name: str, *, required: bool) -> Any:
    agg = r.dict_(name, required=required)
    if agg is not None and not isinstance(agg.get("protocol"), str):
        raise r.fail(name, "needs a 'protocol' (plaintext, secagg, secagg+, he-ckks)")
    return agg


_FieldReader = Callable[[_Reader, str, bool], Any]


def _type_head(annotation: Any) -> str:
    """``"float | None"`` → ``"float"``, ``"dict[str, Any] | None"`` → ``"dict"``."""
    return str(annotation).split("|")[0].split("[")[0].strip()


#: Fields read the same way in every record that has them, whatever their annotation says.
_BY_NAME: Mapping[str, _FieldReader] = {
    "privacy_unit": lambda r, n, req: r.choice(n, PRIVACY_UNITS, required=req),
    "adjacency": lambda r, n, req: r.adjacency(n, required=req),
    "dp_event": lambda r, n, req: r.dp_event(n, required=req),
    "aggregation": lambda r, n, req: _aggregation(r, n, required=req),
    "epsilon_by_accountant": lambda r, n, req: _eps_map(r, n),
}
#: Every other field, by the first type of its annotation (``float | None`` → ``float``).
_BY_TYPE: Mapping[str, _FieldReader] = {
    "int": lambda r, n, req: r.int_(n, required=req),
    "float": lambda r, n, req: r.float_(n, required=req),
    "str": lambda r, n, req: r.str_(n, required=req),
    "bool": lambda r, n, req: r.bool_(n, required=req),
    "dict": lambda r, n, req: r.dict_(n, required=req),
    "list": lambda r, n, req: r.list_(n, required=req),
}


@dataclass(frozen=True, kw_only=True)
class PolicyRecorded(Record):
    """Which budget policy governs the run: its content and SHA-256 (``policy.record_policy``)."""

    KIND: ClassVar[str] = POLICY
    policy: dict[str, Any]
    policy_sha256: str


@dataclass(frozen=True, kw_only=True)
class RunResumed(Record):
    """A run restarted from its checkpoint at ``from_round``; ``reconciled`` lists what the
    resume appended to make the ledger agree with the checkpoint (aborted rounds, ...)."""

    KIND: ClassVar[str] = RUN_RESUMED
    from_round: int
    reconciled: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        rec = r.list_("reconciled", required=r.payload.get(VERSION_KEY) is not None) or []
        if not all(isinstance(x, Mapping) for x in rec):
            raise r.fail("reconciled", "must be a list of objects")
        return cls._read(r, reconciled=[dict(x) for x in rec])


@dataclass(frozen=True, kw_only=True)
class RunFinished(Record):
    """The run's own summary (its ε is a claim, compared with the recomputation)."""

    KIND: ClassVar[str] = RUN_FINISHED
    rounds_completed: int
    epsilon: float | None = None
    delta: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    refused: list[dict[str, Any]] = field(default_factory=list)
    global_adapter_sha256: str | None = None


# --------------------------------------------------------------------------- rounds
@dataclass(frozen=True, kw_only=True)
class RoundProjected(Record):
    """Written before a round starts: the DP event it will spend. A projection with no later
    completion (or ``round_aborted`` with ``released: false``) is charged in full."""

    KIND: ClassVar[str] = ROUND_PROJECTED
    PER_ROUND: ClassVar[bool] = True
    dp_event: dict[str, Any]
    projected_epsilon: float | None = None
    privacy_unit: str | None = None
    adjacency: str | None = None
    aggregation: dict[str, Any] | None = None
    expected_cohort: int | None = None


@dataclass(frozen=True, kw_only=True)
class RoundCompleted(Record):
    """A released round: its DP event (charged), who was in the sum, what it cost.

    ``participants`` is the number of clients whose updates are in the released aggregate
    (required from version 1: the policy's ``min_cohort`` rule reads it; ``None`` only in a
    version-0 entry that did not record it, which a policy then refuses); ``participant_ids`` lists
    them; ``dropped`` maps a protocol stage to the clients lost there.
    """

    KIND: ClassVar[str] = ROUND_COMPLETED
    PER_ROUND: ClassVar[bool] = True
    dp_event: dict[str, Any]
    participants: int | None
    cohort_size: int | None = None
    participant_ids: list[int] | None = None
    dropouts: int | None = None
    dropped: dict[str, Any] | None = None
    epsilon: float | None = None
    epsilon_by_accountant: dict[str, float | None] | None = None
    delta: float | None = None
    accountant: str | None = None
    privacy_unit: str | None = None
    adjacency: str | None = None
    aggregation: dict[str, Any] | None = None
    accuracy: float | None = None
    loss: float | None = None
    bytes_up: float | None = None
    bytes_down: float | None = None
    timings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        p = self.participants
        if p is None and self.version == 0:
            return  # not recorded by an older writer: the policy refuses what it cannot check
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise RecordError("must be an integer >= 0", kind=self.KIND, field="participants")

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        ids = r.list_("participant_ids", required=False)
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise r.fail("participant_ids", "must be a list of integers")
        return cls._read(r, participant_ids=ids)

    @classmethod
    def _from_v0(cls, r: _Reader) -> Self:
        # fl/run.py: participants = list of ids, dropped = {stage: [ids]}, metrics = {...};
        # README table: participants = int, dropouts = int|list|dict, metrics at top level.
        raw = r.raw("participants", required=False)
        count = _count(raw)
        if raw is not None and (count is None or isinstance(raw, Mapping)):
            raise r.fail("participants", f"must be a count or a list of client ids, got {raw!r}")
        ids = raw if isinstance(raw, list) else None
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise r.fail("participants", "must be a list of integer client ids")
        dropped_raw = r.raw("dropped", required=False)
        dropouts_raw = r.raw("dropouts", required=False)
        lost = dropouts_raw if dropouts_raw is not None else dropped_raw
        dropouts = None if lost is None else _count(lost)
        if lost is not None and dropouts is None:
            raise r.fail("dropouts", f"must be a count, a list or a per-stage dict, got {lost!r}")
        dropped = dict(lost) if isinstance(lost, Mapping) else None
        eps_map = _eps_map(r, "epsilon") if isinstance(r.payload.get("epsilon"), Mapping) else None
        metrics = r.dict_("metrics", required=False) or {}
        values: dict[str, float | None] = {}
        for name in METRIC_NAMES:
            v = r.raw(name, required=False)
            if v is None:
                v = metrics.get(name)
            values[name] = _float(v, lambda m, n=name: r.fail(n, m))
        return cls._read(
            r,
            version=0,
            participants=count,
            participant_ids=ids,
            dropouts=dropouts,
            dropped=dropped,
            epsilon_by_accountant=eps_map,
            accuracy=values["accuracy"],
            loss=values["loss"],
            bytes_up=values["bytes_up"],
            bytes_down=values["bytes_down"],
            **({"epsilon": None} if eps_map is not None else {}),  # else read as a number
        )


@dataclass(frozen=True, kw_only=True)
class RoundRefused(Record):
    """The policy refused a round before it started (nothing is charged)."""

    KIND: ClassVar[str] = ROUND_REFUSED
    PER_ROUND: ClassVar[bool] = True
    reasons: list[str]
    projected_epsilon: float | None = None
    dp_event: dict[str, Any] | None = None
    policy: str | None = None
    policy_sha256: str | None = None
    round_info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "projected_epsilon", _finite_or_none(self.projected_epsilon))

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        reasons = r.list_("reasons")
        if not all(isinstance(x, str) for x in reasons):
            raise r.fail("reasons", "must be a list of strings")
        return cls._read(r, reasons=reasons)


@dataclass(frozen=True, kw_only=True)
class RoundAborted(Record):
    """A projected round that did not finish. ``released: false`` is the operator's assertion
    that nothing left the process, so the projection is not charged (reports list it)."""

    KIND: ClassVar[str] = ROUND_ABORTED
    PER_ROUND: ClassVar[bool] = True
    released: bool
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class NodeRefusal(Record):
    """A client refused a server request (a remote fault seen by the node, reported upward)."""

    KIND: ClassVar[str] = NODE_REFUSAL
    node: int
    reason: str
    stage: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- node ledger
@dataclass(frozen=True, kw_only=True)
class NodePolicyRecorded(Record):
    """The node policy in force from this entry on: its content and SHA-256 (written by the
    node before the first decision taken under a policy it had not recorded yet)."""

    KIND: ClassVar[str] = NODE_POLICY
    policy: dict[str, Any]
    policy_sha256: str


@dataclass(frozen=True, kw_only=True)
class NodeContribution(Record):
    """A node admitted a round and is about to compute its update (written *before* it
    computes, so a crash after admission still counts the spend).

    ``terms`` is the announced round (``RoundTerms.to_dict()``); ``dp_event`` and
    ``planned_rounds`` repeat the two terms the node's own accounting reads, as typed fields.
    ``charged_rounds`` is what the node charged the run, max(planned rounds, contributions);
    ``epsilon_run`` / ``epsilon_total`` are the node's figures at admission (``None``: no finite
    bound) — an auditor recomputes them from the events, they are not trusted.
    """

    KIND: ClassVar[str] = NODE_CONTRIBUTION
    PER_ROUND: ClassVar[bool] = True
    terms: dict[str, Any]
    terms_sha256: str
    dp_event: dict[str, Any]
    planned_rounds: int
    charged_rounds: int
    accountant: str
    delta: float
    adjacency: str
    policy_sha256: str
    epsilon_run: float | None = None
    epsilon_total: float | None = None


@dataclass(frozen=True, kw_only=True)
class NodeRoundRefused(Record):
    """A node refused a round under its own policy (nothing computed, nothing charged).
    ``reasons`` are ``"rule: message"`` strings; ``terms`` is ``None`` when the announced terms
    did not even parse."""

    KIND: ClassVar[str] = NODE_ROUND_REFUSED
    reasons: list[str]
    policy_sha256: str
    terms: dict[str, Any] | None = None
    epsilon_run: float | None = None
    epsilon_total: float | None = None

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        reasons = r.list_("reasons")
        if not reasons or not all(isinstance(x, str) for x in reasons):
            raise r.fail("reasons", "must be a non-empty list of strings")
        return cls._read(r, reasons=reasons)


# --------------------------------------------------------------------------- model, audits
@dataclass(frozen=True, kw_only=True)
class ModelProvenance(Record):
    """Which model the guarantee is about (NIST SP 800-226 §2: name the release)."""

    KIND: ClassVar[str] = MODEL_PROVENANCE
    base_model: str
    weights_sha256: dict[str, str] | str | None = None
    licence: str | None = None
    source: str | None = None

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        w = r.raw("weights_sha256", required=False)
        if w is not None and not isinstance(w, str | Mapping):
            raise r.fail("weights_sha256", "must be a hex digest or {file: digest}")
        return cls._read(r, weights_sha256=dict(w) if isinstance(w, Mapping) else w)


@dataclass(frozen=True, kw_only=True)
class EmpiricalAudit(Record):
    """A one-run audit (Steinke, Nasr & Jagielski 2023): a lower bound on ε with confidence."""

    KIND: ClassVar[str] = EMPIRICAL_AUDIT
    epsilon_lower_bound: float
    confidence: float
    method: str | None = None
    canaries: int | None = None
    guesses: int | None = None
    correct: int | None = None
    delta: float | None = None
    epsilon_theoretical: float | None = None
    claim_violated: bool | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def _from_v1(cls, r: _Reader) -> Self:
        lb = r.float_("epsilon_lower_bound")
        conf = r.float_("confidence")
        if not 0 < conf < 1:
            raise r.fail("confidence", f"must be in (0, 1), got {conf}")
        return cls._read(r, epsilon_lower_bound=lb, confidence=conf)


# --------------------------------------------------------------------------- parsing
RECORD_TYPES: tuple[type[Record], ...] = (
    RunStarted,
    PolicyRecorded,
    RoundProjected,
    RoundCompleted,
    RoundRefused,
    RoundAborted,
    RunResumed,
    RunFinished,
    ModelProvenance,
    EmpiricalAudit,
    NodeRefusal,
    NodePolicyRecorded,
    NodeContribution,
    NodeRoundRefused,
)
BY_KIND: Mapping[str, type[Record]] = {t.KIND: t for t in RECORD_TYPES}
KNOWN_KINDS = frozenset(BY_KIND)


def parse(entry: Entry) -> Record:
    """The typed record of one ledger entry; :class:`UnknownKindError` for a kind without a
    record class, :class:`RecordError` (naming the field) for a malformed payload."""
    cls = BY_KIND.get(entry.kind)
    if cls is None:
        raise UnknownKindError("unknown entry kind", kind=entry.kind, seq=entry.seq)
    return cls.from_payload(_payload(entry), seq=entry.seq)


def _payload(entry: Entry) -> dict[str, Any]:
    try:
        return entry.payload
    except EntryError as exc:
        raise RecordError(exc.reason, kind=entry.kind, field=exc.field, seq=entry.seq) from exc


def parse_as(entry: Entry, cls: type[_R]) -> _R:
    """:func:`parse`, refusing an entry of another kind (``field`` = ``kind``)."""
    if entry.kind != cls.KIND:
        raise RecordError(f"expected a {cls.KIND} entry", kind=entry.kind, seq=entry.seq)
    return cls.from_payload(_payload(entry), seq=entry.seq)


def iter_records(
    entries: Iterable[Entry], *, kinds: Iterable[type[Record]] | None = None
) -> Iterator[tuple[Entry, Record]]:
    """``(entry, record)`` for each entry whose kind is one of ``kinds`` (default: all known
    kinds; entries of other kinds are skipped — use :func:`parse` to refuse them)."""
    wanted = {c.KIND for c in kinds} if kinds is not None else KNOWN_KINDS
    for e in entries:
        if e.kind in wanted:
            yield e, parse(e)


__all__ = [
    "BY_KIND",
    "KNOWN_KINDS",
    "RECORD_TYPES",
    "RECORD_VERSION",
    "EmpiricalAudit",
    "ModelProvenance",
    "NodeContribution",
    "NodePolicyRecorded",
    "NodeRefusal",
    "NodeRoundRefused",
    "PolicyRecorded",
    "Record",
    "RecordError",
    "RoundAborted",
    "RoundCompleted",
    "RoundProjected",
    "RoundRefused",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "UnknownKindError",
    "iter_records",
    "parse",
    "parse_as",
]
