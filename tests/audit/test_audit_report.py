"""Reports: schema-valid JSON, recomputed ε under each accountant, escaping, caveats."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.ledger import Ledger
from securefl.audit.policy import BudgetPolicy, record_refusal
from securefl.audit.report import build_report, write_html, write_json, write_markdown
from securefl.audit.spend import compose, epsilon

from .conftest import TS, round_event

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "audits" / "report.schema.json").read_text())
MakeLedger = Callable[..., Ledger]
EVIL = "<script>alert('x')</script>|*_"


def validate(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    # Round-trip through JSON exactly as written to disk (no NaN, plain types).
    jsonschema.validate(
        json.loads(json.dumps(report, allow_nan=False)), SCHEMA, cls=jsonschema.Draft202012Validator
    )


def full_ledger(make_ledger: MakeLedger) -> Ledger:
    ledger = make_ledger(12)
    ledger.append(
        "model_provenance",
        {"base_model": EVIL, "weights_sha256": {"w.bin": "00"}, "licence": "apache-2.0"},
        timestamp=TS,
    )
    p = BudgetPolicy.load(REPO / "audits" / "policies" / "client_level_secagg.toml")
    d = p.check_round(ledger, round_event(), {"run_id": "run-1", "participants": 1})
    record_refusal(
        ledger, d, {"run_id": "run-1", "round_id": 12, "participants": 1}, policy=p, timestamp=TS
    )
    ledger.append("round_projected", {"dp_event": round_event()}, round_id=13, timestamp=TS)
    ledger.append(
        "empirical_audit",
        {
            "epsilon_lower_bound": 0.5,
            "confidence": 0.95,
            "epsilon_theoretical": 3.0,
            "claim_violated": False,
        },
        timestamp=TS,
    )
    return ledger


def test_report_content_and_schema(make_ledger: MakeLedger) -> None:
    ledger = full_ledger(make_ledger)
    pol = BudgetPolicy.load(REPO / "audits" / "policies" / "client_level_secagg.toml")
    rep = build_report(ledger, pol, generated_at=TS)
    validate(rep)
    g = rep["guarantee"]
    assert g["privacy_unit"] == "client" and g["adjacency"] == "add-remove"
    assert g["rounds_charged"] == 13 and g["rounds_in_flight"] == 1
    expected = {a: epsilon(a, compose([round_event()] * 13), pol.delta) for a in ("rdp", "pld")}
    for a, eps in expected.items():
        assert g["epsilon"][a] == pytest.approx(eps)
    assert g["tightest"]["accountant"] in ("pld", "prv")
    assert g["epsilon"]["rdp"] >= g["tightest"]["epsilon"]
    assert g["sampling"] == [{"scheme": "poisson", "rate": 0.1}]
    curve = rep["epsilon_curve"]
    assert curve["rounds"][-1] == 13
    rdp = curve["rdp"]
    assert all(a <= b for a, b in itertools.pairwise(rdp))  # ε grows with rounds
    assert curve["pld"][-1] == pytest.approx(g["epsilon"]["pld"])
    assert len(rep["rounds"]) == 13 and rep["rounds"][0]["accuracy"] == 0.5
    assert rep["refusals"] and "minimum cohort" in " ".join(rep["refusals"][0]["reasons"])
    assert rep["ledger"]["verification"]["ok"]
    assert rep["policy"]["ok"] is True
    assert {a["protocol"] for a in rep["threat_model"]["aggregation"]} == {"secagg+"}
    assert any("charged in full" in c for c in rep["caveats"])
    items = {c["item"]: c["status"] for c in rep["checklist"]}
    assert items["privacy unit"] == "reported" and items["model provenance"] == "reported"


def test_writers_escape_recorded_text(make_ledger: MakeLedger, tmp_path: Path) -> None:
    rep = build_report(full_ledger(make_ledger), generated_at=TS, accountants=("rdp",))
    html = write_html(rep, tmp_path / "r.html").read_text()
    md = write_markdown(rep, tmp_path / "r.md").read_text()
    js = json.loads(write_json(rep, tmp_path / "r.json").read_text())
    assert EVIL not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the render marker
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    assert "<script>alert" not in md and "\\<script\\>" in md
    assert js["model_provenance"][0]["base_model"] == EVIL


def test_understated_claim_and_tampering_are_caveated(
    make_ledger: MakeLedger, key: Ed25519PrivateKey
) -> None:
    ledger = make_ledger(10, epsilon={"rdp": 0.1})
    rep = build_report(ledger, generated_at=TS, accountants=("rdp",))
    assert any("understates" in c for c in rep["caveats"])
    ledger.close()
    import sqlite3

    conn = sqlite3.connect(ledger.path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET payload = replace(payload, '10', '11') WHERE seq = 3")
    conn.commit()
    conn.close()
    bad = build_report(
        ledger.path, public_key=key.public_key(), generated_at=TS, accountants=("rdp",)
    )
    validate(bad)
    assert not bad["ledger"]["verification"]["ok"]
    assert bad["caveats"][0].startswith("LEDGER VERIFICATION FAILED")


def test_empty_and_non_private_ledgers(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    empty = Ledger(tmp_path / "e.db", key, run_id="r")
    rep = build_report(empty, generated_at=TS)
    validate(rep)
    assert rep["guarantee"]["rounds_charged"] == 0
    assert any("privacy unit not recorded" in c for c in rep["caveats"])
    write_html(rep, tmp_path / "e.html")
    empty.append("round_completed", {"dp_event": {"type": "non_private"}}, round_id=0)
    rep = build_report(empty, generated_at=TS)
    validate(rep)
    assert rep["guarantee"]["epsilon"] == {"rdp": None, "prv": None, "pld": None}
    assert any("non-private" in c for c in rep["caveats"])


def test_metrics_argument_and_aliases(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(
        3, dropped={"share_keys": [1, 2], "unmask": [3]}, metrics={"accuracy": 0.9}
    )
    rep = build_report(ledger, metrics={1: {"bytes_up": 42}}, generated_at=TS, accountants=("rdp",))
    validate(rep)
    rows = rep["rounds"]
    assert rows[1]["bytes_up"] == 42 and rows[0]["accuracy"] == 0.9
    assert rows[0]["dropouts"] == 0  # explicit "dropouts" wins over the per-stage alias


def test_large_ledger_is_thinned_in_html(make_ledger: MakeLedger, tmp_path: Path) -> None:
    from securefl.audit.ledger import PendingEntry

    ledger = make_ledger(0)
    ledger.append_many(
        PendingEntry(
            "round_completed",
            {"dp_event": round_event(), "participants": 10, "accuracy": i / 2000},
            round_id=i,
            timestamp=TS,
        )
        for i in range(2000)
    )
    rep = build_report(ledger, generated_at=TS, accountants=("rdp",))
    validate(rep)
    assert len(rep["rounds"]) == 2000 and len(rep["epsilon_curve"]["rounds"]) <= 41
    html = write_html(rep, tmp_path / "big.html").read_text()
    assert len(html) < 400_000


def test_he_threat_model_states_a_recorded_weakening() -> None:
    """CKKS without DP on an engine (both parties' recorded opt-in): the key holder decrypts
    whatever it is sent, so the report must not claim the server cannot read an update."""
    from securefl.audit.threat_model import aggregation_threat_model
    from securefl.engine.he_job import WEAKENED_WITHOUT_DP

    plain = aggregation_threat_model({"protocol": "he-ckks", "he_preset": "fast"})
    weak = aggregation_threat_model(
        {"protocol": "he-ckks", "he_preset": "fast", "weakened_threat_model": WEAKENED_WITHOUT_DP}
    )
    assert plain["protects_against"][0].startswith("the aggregation server reading")
    assert not any("WEAKENED" in line for line in plain["does_not_protect_against"])
    assert "NOT prevented" in weak["protects_against"][0]
    first = weak["does_not_protect_against"][0]
    assert first.startswith("WEAKENED BY A RECORDED OPT-IN")
    assert WEAKENED_WITHOUT_DP["opt_in"] in first
    assert WEAKENED_WITHOUT_DP["server_may_obtain"] in first


def test_he_trust_row_names_the_server_when_weakened() -> None:
    from securefl.audit.threat_model import trust_model

    normal, weak = (
        trust_model(["he-ckks"], {"none"}, {"none"}, "client", w)[0]
        for w in (frozenset(), frozenset({"he-ckks"}))
    )
    assert normal["sees_updates"].startswith("nobody")
    assert weak["sees_updates"].startswith("the server, one update of its choice")
