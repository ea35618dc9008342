"""What a report must disclose (issue 14, Trust 3/4 and Readability): resumes and uncharged
rounds, code version and planned rounds, a non-DP run stated plainly, no guarantee under a
failed verification, the budget beside ε, and no Python reprs or internal artefacts."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.ledger import Ledger
from securefl.audit.policy import BudgetPolicy
from securefl.audit.render_html import render_html
from securefl.audit.render_md import render_markdown
from securefl.audit.report import build_report

from .conftest import TS, round_event, run_started_payload

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "audits" / "report.schema.json").read_text())
POLICY = REPO / "audits" / "policies" / "client_level_secagg.toml"


def _valid(rep: dict[str, Any]) -> None:
    jsonschema.validate(
        json.loads(json.dumps(rep, allow_nan=False)), SCHEMA, cls=jsonschema.Draft202012Validator
    )


def _visible_text(page: str) -> str:
    body = re.sub(r"<(script|style)>.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def _pages(rep: dict[str, Any]) -> list[str]:
    return [_visible_text(render_html(rep)), render_markdown(rep)]


def resumed_ledger(path: Path, key: Ed25519PrivateKey, **started: object) -> Ledger:
    """Round 3 (round_id 2) is in flight when the run dies; the resume aborts it (released:
    false, so uncharged) and re-runs it, as ``securefl.fl.run._reconcile`` does."""
    ledger = Ledger(path, key, run_id="run-1")
    ledger.append("run_started", run_started_payload(**started), timestamp=TS)
    for r in range(4):
        ledger.append("round_projected", {"dp_event": round_event()}, round_id=r, timestamp=TS)
        if r == 2:
            ledger.append(
                "round_aborted",
                {"released": False, "reason": "run stopped before the round finished; re-run"},
                round_id=r,
                timestamp=TS,
            )
            ledger.append(
                "run_resumed",
                {"from_round": 2, "reconciled": [{"aborted_in_flight_round": 2}]},
                timestamp=TS,
            )
            ledger.append("round_projected", {"dp_event": round_event()}, round_id=r, timestamp=TS)
        ledger.append(
            "round_completed",
            {"dp_event": round_event(), "participants": 10, "bytes_up": 2_500_000.0},
            round_id=r,
            timestamp=TS,
        )
    return ledger


def test_resume_and_uncharged_round_are_disclosed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rep = build_report(
        resumed_ledger(tmp_path / "l.db", key), generated_at=TS, accountants=("rdp",)
    )
    _valid(rep)
    d = rep["disclosures"]
    assert len(d["resumes"]) == 1 and "round 3 was in flight" in d["resumes"][0]["reconciled"][0]
    assert [r["round"] for r in d["uncharged_rounds"]] == [3]
    assert "operator's assertion" in d["uncharged_rounds"][0]["basis"]
    assert rep["guarantee"]["rounds_charged"] == 4  # the re-run round 3 is charged once
    assert rep["runs"][0]["resumes"] == 1 and rep["runs"][0]["rounds_uncharged"] == 1
    for page in _pages(rep):
        assert "Crashes and resumes" in page and "not charged" in page
        assert "operator's assertion that nothing was released" in page


def test_code_version_and_planned_rounds_from_run_started(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    # the loop's layout: planned rounds only inside config (older ledgers)
    old = Ledger(tmp_path / "old.db", key, run_id="run-1")
    old.append("run_started", run_started_payload(config={"rounds": 30}), timestamp=TS)
    rep = build_report(old, generated_at=TS, accountants=("rdp",))
    assert rep["runs"][0]["planned_rounds"] == 30
    assert rep["runs"][0]["code_version"] == {"securefl": "test", "git_commit": None}
    new = Ledger(tmp_path / "new.db", key, run_id="run-1")
    cv = {"securefl": "0.9", "git_commit": "ab" * 20, "git_dirty": True}
    new.append("run_started", run_started_payload(planned_rounds=12, code_version=cv), timestamp=TS)
    rep = build_report(new, generated_at=TS, accountants=("rdp",))
    _valid(rep)
    assert rep["runs"][0]["planned_rounds"] == 12 and rep["runs"][0]["code_version"] == cv
    for page in _pages(rep):
        assert "securefl 0.9, git abababababab, uncommitted changes" in page
        assert "12" in page


def test_non_dp_run_says_no_differential_privacy(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ledger = Ledger(tmp_path / "l.db", key, run_id="run-1")
    ledger.append(
        "run_started",
        run_started_payload(dp={"mode": "none", "delta": 1e-5}, noise_multiplier=None, clip=None),
        timestamp=TS,
    )
    for r in range(3):
        ledger.append(
            "round_completed", {"dp_event": {"type": "non_private"}}, round_id=r, timestamp=TS
        )
    rep = build_report(ledger, generated_at=TS)
    _valid(rep)
    g = rep["guarantee"]
    assert g["dp_status"] == "none" and g["headline"] is None and g["budget"] is None
    assert g["statement"].startswith("No differential privacy")
    assert rep["threat_model"]["trust_model"][0]["dp_mode"] == "none"
    for page in _pages(rep):
        assert "No differential privacy" in page
        assert "-DP" not in page and "-differential privacy for each" not in page
        assert "sampling rate" not in page and "rate q = 1" not in page


def _tamper(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET payload = replace(payload, '10', '11') WHERE seq = 3")
    conn.commit()
    conn.close()


def test_failed_verification_states_no_guarantee(
    make_ledger: Callable[..., Ledger], key: Ed25519PrivateKey
) -> None:
    ledger = make_ledger(6)
    ledger.close()
    _tamper(ledger.path)
    rep = build_report(
        ledger.path, BudgetPolicy.load(POLICY), public_key=key.public_key(), generated_at=TS
    )
    _valid(rep)
    g = rep["guarantee"]
    assert not g["verified"] and g["headline"] is None
    assert g["statement"].startswith("UNVERIFIED")
    page = render_html(rep)
    assert '<div class="banner bad" id="verification">' in page
    assert 'class="strong"' not in page  # the confident headline style is never used
    for page in _pages(rep):
        assert "differential privacy for each" not in page
        assert "UNVERIFIED" in page and "(unverified)" in page


def test_budget_round_numbers_and_epsilon_column(make_ledger: Callable[..., Ledger]) -> None:
    rep = build_report(make_ledger(5), BudgetPolicy.load(POLICY), generated_at=TS)
    g = rep["guarantee"]
    assert g["budget"]["epsilon"] == 8.0 and g["budget"]["within"] is True
    assert "Budget: ε ≤ 8" in g["statement"]
    assert [r["round"] for r in rep["rounds"]] == [1, 2, 3, 4, 5]
    eps = [r["epsilon_cumulative"] for r in rep["rounds"]]
    assert eps == sorted(eps) and eps[-1] == g["epsilon"]["rdp"]
    page = render_html(rep)
    assert "budget ε = 8" in page  # the dashed budget line on the ε plot
    text = _visible_text(page)
    assert text.count("ε ≤ 8") >= 3  # headline, parameters section, policy banner
    assert "ε after round (RDP)" in text and "numbered from 1" in text


def test_no_reprs_artefacts_or_python_names(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(0)
    for r, t in enumerate((6, 7, 8)):  # varying thresholds: one protocol, listed once
        ledger.append(
            "round_completed",
            {
                "dp_event": round_event(),
                "bytes_up": 1_234_567.0,
                "aggregation": {"protocol": "secagg+", "threshold": t, "degree": 8},
            },
            round_id=r,
            timestamp=TS,
        )
    ledger.append(
        "round_completed", {"dp_event": {"type": "unknown_mech"}}, round_id=3, timestamp=TS
    )
    rep = build_report(ledger, generated_at=TS)
    items = [c["item"] for c in rep["checklist"]]
    assert len(items) == len(set(items))
    trust = next(c for c in rep["checklist"] if c["item"].startswith("trust model"))
    assert trust["value"] == "secagg+"
    for page in _pages(rep):
        assert "{'" not in page and "None" not in page and "': " not in page
        assert "charts:" not in page and "render-check" not in page
        assert "expected_head" not in page and "--expect-head" in page
        assert "1.23 MB" in page
        assert "/tmp/" not in page or "from /tmp/" in page  # only the ledger source line
    page = render_html(rep)
    assert "cannot bound these events" in page  # the accountants' legend and table say so
    assert "threshold t (smallest recorded)" in page and "range 6–8" in page


def test_local_paths_are_not_shown(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(1)
    ledger.append(
        "model_provenance",
        {"base_model": "m", "source": "/home/alice/venv/lib/site-packages/pkg/model"},
        timestamp=TS,
    )
    rep = build_report(ledger, generated_at=TS, accountants=("rdp",), source_label="ledger.db")
    assert rep["model_provenance"][0]["source"] == "(local path) …/pkg/model"
    for page in _pages(rep):
        assert "/home/alice" not in page and "pkg/model" in page
