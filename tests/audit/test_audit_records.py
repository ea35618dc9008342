"""Typed ledger records: round trips, refusals naming the field, version-0 ledgers still read."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.ledger import Entry, Ledger, read_entries, verify_ledger
from securefl.audit.policy import BudgetPolicy, PolicyError
from securefl.audit.provenance import code_version
from securefl.audit.records import (
    RECORD_TYPES,
    EmpiricalAudit,
    ModelProvenance,
    NodeContribution,
    NodePolicyRecorded,
    NodeRefusal,
    NodeRoundRefused,
    PolicyRecorded,
    Record,
    RecordError,
    RoundAborted,
    RoundCompleted,
    RoundProjected,
    RoundRefused,
    RunFinished,
    RunResumed,
    RunStarted,
    UnknownKindError,
    parse,
)
from securefl.audit.spend import charged_rounds
from securefl.errors import ConfigurationError

from .conftest import TS, round_event

REPO = Path(__file__).resolve().parents[2]
# A ledger written by the version-0 writer (the old sample run), kept as a fixture.
EXAMPLE = Path(__file__).parent / "fixtures" / "v0_ledger.sqlite"


def run_started(**over: Any) -> RunStarted:
    base: dict[str, Any] = {
        "privacy_unit": "client",
        "adjacency": "add-remove",
        "planned_rounds": 3,
        "code_version": code_version(),
        "aggregation": {"protocol": "secagg+", "threshold": 6},
        "dp": {"mode": "central", "clip": 0.5, "noise_multiplier": 1.1},
        "delta": 1e-5,
        "accountant": "rdp",
    }
    base.update(over)
    return RunStarted(**base)


SAMPLES: list[Record] = [
    run_started(),
    PolicyRecorded(policy={"name": "p"}, policy_sha256="ab" * 32),
    RoundProjected(dp_event=round_event(), projected_epsilon=1.0, expected_cohort=8),
    RoundCompleted(
        dp_event=round_event(),
        participants=7,
        cohort_size=8,
        participant_ids=[1, 2, 3, 4, 5, 6, 7],
        dropped={"unmask": [8]},
        dropouts=1,
        epsilon=1.0,
        accuracy=0.5,
        bytes_up=10.0,
    ),
    RoundRefused(reasons=["too much"], projected_epsilon=float("inf")),
    RoundAborted(released=False, reason="killed"),
    RunResumed(from_round=2, reconciled=[{"aborted_in_flight_round": 2}]),
    RunFinished(rounds_completed=3, epsilon=2.0, global_adapter_sha256="ab" * 32),
    ModelProvenance(base_model="m", weights_sha256={"w.bin": "00"}, licence="mit"),
    EmpiricalAudit(epsilon_lower_bound=0.3, confidence=0.95, canaries=100, guesses=20),
    NodeRefusal(node=3, reason="threshold below policy", stage="share_keys"),
    NodePolicyRecorded(policy={"kind": "node"}, policy_sha256="ab" * 32),
    NodeContribution(
        terms={"run_id": "run-1", "rounds": 3},
        terms_sha256="cd" * 32,
        dp_event={"type": "gaussian", "noise_multiplier": 1.0},
        planned_rounds=3,
        charged_rounds=3,
        accountant="rdp",
        delta=1e-5,
        adjacency="add-remove",
        policy_sha256="ab" * 32,
        epsilon_run=2.5,
    ),
    NodeRoundRefused(reasons=["aggregation: 'plain' is not allowed"], policy_sha256="ab" * 32),
]


def entry_of(kind: str, payload: dict[str, Any], seq: int = 1) -> Entry:
    import json

    return Entry(seq, "r", 0, kind, json.dumps(payload), TS, "0" * 64, "0" * 64)


def test_every_record_type_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(RECORD_TYPES)


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_every_field_without_a_default_is_required(record: Record) -> None:
    """The table-driven reader: required exactly when the dataclass field has no default."""
    required = [
        f.name
        for f in dataclasses.fields(record)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert required
    for name in required:
        payload = record.to_payload()
        del payload[name]
        with pytest.raises(RecordError) as info:
            type(record).from_payload(payload)
        assert info.value.field == name


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_round_trip_through_the_ledger(
    record: Record, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    with Ledger(tmp_path / "l.db", key, run_id="r") as ledger:
        e = ledger.append_record(record, round_id=0, timestamp=TS)
        assert e.payload["record_version"] == 1
        back = parse(e)
        assert back == record and type(back) is type(record) and back.version == 1
        assert ledger.verify().ok


def test_per_round_records_need_a_round_id(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with Ledger(tmp_path / "l.db", key, run_id="r") as ledger:
        with pytest.raises(ConfigurationError, match="round_id"):
            ledger.append_record(RoundAborted(released=False))
        ledger.append_record(RunResumed(from_round=0))  # run-level: no round id needed


def test_run_started_requires_planned_rounds_and_code_version() -> None:
    with pytest.raises(RecordError, match="planned_rounds") as err:
        run_started(planned_rounds=None)
    assert err.value.field == "planned_rounds"
    with pytest.raises(RecordError, match="code_version"):
        run_started(code_version=None)
    payload = run_started().to_payload()
    del payload["code_version"]
    with pytest.raises(RecordError) as err2:
        parse(entry_of("run_started", payload))
    assert err2.value.field == "code_version" and err2.value.parameter == "run_started.code_version"


@pytest.mark.parametrize(
    ("kind", "payload", "field"),
    [
        ("round_completed", {"dp_event": round_event(), "record_version": 1}, "participants"),
        ("round_completed", {"participants": 3, "record_version": 1}, "dp_event"),
        ("round_completed", {"dp_event": {"sigma": 1}, "participants": 3}, "dp_event"),
        ("round_completed", {"dp_event": round_event(), "participants": "3"}, "participants"),
        ("round_completed", {"dp_event": round_event(), "participants": {"a": 1}}, "participants"),
        ("round_projected", {"dp_event": round_event(), "projected_epsilon": "x"}, None),
        ("round_aborted", {"released": "no"}, "released"),
        ("run_resumed", {"record_version": 1, "from_round": 1}, "reconciled"),
        ("policy", {"policy": {}}, "policy_sha256"),
        ("run_started", {"privacy_unit": "user", "adjacency": "add-remove"}, "privacy_unit"),
        ("run_started", {"privacy_unit": "client", "adjacency": "swap"}, "adjacency"),
        ("empirical_audit", {"epsilon_lower_bound": 1.0, "confidence": 2}, "confidence"),
        (
            "round_completed",
            {"dp_event": round_event(), "participants": 1, "record_version": 9},
            None,
        ),
    ],
)
def test_malformed_payloads_are_refused_naming_the_field(
    kind: str, payload: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(RecordError) as err:
        parse(entry_of(kind, payload, seq=7))
    assert err.value.seq == 7 and err.value.kind == kind
    if field is not None:
        assert err.value.field == field, str(err.value)
        assert field in str(err.value)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(UnknownKindError, match="unknown entry kind"):
        parse(entry_of("round_compelted", {"dp_event": round_event(), "participants": 1}))


def test_unknown_keys_are_kept_not_lost() -> None:
    rec = parse(entry_of("round_aborted", {"released": True, "note": "x", "record_version": 1}))
    assert rec.extra == {"note": "x"}
    assert rec.to_payload() == {"released": True, "note": "x", "record_version": 1}


def test_version_zero_record_cannot_be_written_back(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    old = parse(entry_of("round_aborted", {"released": False}))
    assert old.version == 0
    with Ledger(tmp_path / "l.db", key, run_id="r") as ledger, pytest.raises(RecordError):
        ledger.append_record(old, round_id=0)


# ---------------------------------------------------------------- version 0 (today's writer)
def test_example_ledger_parses_verifies_and_maps_version_zero() -> None:
    assert verify_ledger(EXAMPLE, EXAMPLE.with_suffix(".pub")).ok
    entries = read_entries(EXAMPLE)
    records = [parse(e) for e in entries]
    assert all(r.version == 0 for r in records)
    started = records[0]
    assert isinstance(started, RunStarted)
    # The reader/writer disagreement of issue 10: fl/run.py wrote config.rounds, not rounds.
    assert started.planned_rounds == 10
    assert started.code_version is None  # never recorded by version 0: "not recorded"
    assert started.privacy_unit == "client" and started.adjacency == "add-remove"
    assert started.aggregation["protocol"] == "secagg+"
    assert started.mechanism == "central" and started.clip == 0.5
    assert started.noise_multiplier == pytest.approx(0.9423828125)
    assert started.delta == 1e-5 and started.accountant == "rdp"
    done = [r for r in records if isinstance(r, RoundCompleted)]
    assert len(done) == 10
    first = done[0]
    assert first.participants == 40 and first.participant_ids is not None
    assert first.dropouts == 2 and first.dropped == {"masked_input": [80], "share_keys": [21]}
    assert first.accuracy == 0.215 and first.bytes_up == 6331908.0
    assert len(charged_rounds(entries)) == 10
    finished = records[-1]
    assert isinstance(finished, RunFinished) and finished.rounds_completed == 10


def test_version_zero_readme_shapes_map_explicitly() -> None:
    rec = parse(
        entry_of(
            "round_completed",
            {
                "dp_event": round_event(),
                "participants": 10,
                "dropouts": [1, 2],
                "epsilon": {"rdp": 1.5, "prv": None},
                "metrics": {"loss": 0.5},
            },
        )
    )
    assert isinstance(rec, RoundCompleted)
    assert rec.participants == 10 and rec.participant_ids is None and rec.dropouts == 2
    assert rec.epsilon is None and rec.epsilon_by_accountant == {"rdp": 1.5, "prv": None}
    assert rec.loss == 0.5
    started = parse(
        entry_of(
            "run_started",
            {"privacy_unit": "client", "adjacency": "add_remove", "rounds": 4, "clip": 1.0},
        )
    )
    assert isinstance(started, RunStarted)
    assert started.planned_rounds == 4 and started.adjacency == "add-remove"
    assert started.clip == 1.0 and started.aggregation == {}
    no_dp = parse(
        entry_of(
            "run_started",
            {"privacy_unit": "client", "adjacency": "add-remove", "dp": {"mode": "none"}},
        )
    )
    assert isinstance(no_dp, RunStarted) and no_dp.dp is None and no_dp.mechanism is None
    refused = parse(entry_of("round_refused", {"reasons": ["x"], "projected_epsilon": "inf"}))
    assert isinstance(refused, RoundRefused) and refused.projected_epsilon is None


# ---------------------------------------------------------------- policy reads through records
def _policy(min_cohort: int) -> BudgetPolicy:
    return BudgetPolicy.from_dict(
        {
            "privacy_unit": "client",
            "adjacency": "add-remove",
            "accountant": "rdp",
            "budget": {"max_epsilon": 100.0, "delta": 1e-5},
            "cohort": {"min_cohort": min_cohort},
        }
    )


def test_min_cohort_is_refused_not_skipped_when_participants_missing(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Issue 10: a typo in ``participants`` silently skipped the min_cohort rule."""
    with Ledger(tmp_path / "l.db", key, run_id="r") as ledger:
        ledger.append_record(run_started(), timestamp=TS)
        ledger.append(
            "round_completed",
            {"dp_event": round_event(), "participant": 1},  # the typo
            round_id=0,
            timestamp=TS,
        )
        res = _policy(5).check(ledger)
        assert not res.ok
        assert any("participants not recorded" in v for v in res.violations), res.violations
        assert _policy(1).check(ledger).ok  # nothing to check: no refusal
        with pytest.raises(PolicyError, match=r"round_info\.participant") as err:
            _policy(5).check_round(ledger, round_event(), {"run_id": "r", "participant": 9})
        assert getattr(err.value, "parameter", None) == "round_info.participant"
        d = _policy(5).check_round(ledger, round_event(), {"run_id": "r"})
        assert not d.allowed and any("participants not recorded" in r for r in d.reasons)
        ok = _policy(5).check_round(ledger, round_event(), {"run_id": "r", "expected_cohort": 9})
        assert ok.allowed, ok.reasons


def test_report_schema_matches_the_records() -> None:
    """The report's run row carries RunStarted.planned_rounds and .code_version as recorded."""
    import json

    import jsonschema

    schema = json.loads((REPO / "audits" / "report.schema.json").read_text())
    run_row = schema["properties"]["runs"]["items"]["properties"]
    jsonschema.validate(code_version(), run_row["code_version"])
    jsonschema.validate(run_started().planned_rounds, run_row["planned_rounds"])
    prov = schema["properties"]["model_provenance"]["items"]["properties"]
    sample = ModelProvenance(base_model="m", weights_sha256="00", licence=None, source="hub")
    assert set(prov) <= {"base_model", "weights_sha256", "licence", "source"}
    assert {"base_model", "weights_sha256", "licence", "source"} <= set(vars(sample))
