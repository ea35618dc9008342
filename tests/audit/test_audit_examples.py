"""The sample reports under audits/examples/ are generated from the ledger stored beside them
(not hand-written): schema-valid, and their head anchor is that ledger's verified head."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from securefl.audit.keys import assert_no_signing_key_under
from securefl.audit.ledger import read_entries, verify_ledger

EXAMPLES = Path(__file__).resolve().parents[2] / "audits" / "examples"
SCHEMA = json.loads((EXAMPLES.parent / "report.schema.json").read_text())


@pytest.mark.skipif(not (EXAMPLES / "privacy_report.json").is_file(), reason="not generated")
def test_examples_match_their_ledger() -> None:
    report = json.loads((EXAMPLES / "privacy_report.json").read_text())
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)
    result = verify_ledger(EXAMPLES / "ledger.sqlite", EXAMPLES / "ledger.pub")
    assert result.ok, result.errors
    assert result.head is not None
    assert report["ledger"]["verification"]["head"]["anchor"] == result.head.anchor
    assert report["ledger"]["entries"] == result.entries
    for ext in ("md", "html"):
        assert result.head.anchor in (EXAMPLES / f"privacy_report.{ext}").read_text()


@pytest.mark.skipif(not (EXAMPLES / "privacy_report.json").is_file(), reason="not generated")
def test_examples_come_from_a_real_run_with_the_new_flow() -> None:
    """Issue 14: a real `securefl simulate` run — its key outside (nothing here can sign), its
    published anchor verified, and an empirical audit of the model that run trained."""
    assert_no_signing_key_under(EXAMPLES)
    anchor = (EXAMPLES / "ledger.anchor").read_text().strip()
    result = verify_ledger(
        EXAMPLES / "ledger.sqlite", EXAMPLES / "ledger.pub", expected_head=anchor
    )
    assert result.ok, result.errors
    entries = read_entries(EXAMPLES / "ledger.sqlite")
    kinds = [e.kind for e in entries]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    training_run = entries[0].run_id
    (audit,) = [e for e in entries if e.kind == "empirical_audit"]
    assert audit.run_id == training_run  # the run's own model, not a side demonstration
    assert "canaries" in audit.payload["method"]
    report = json.loads((EXAMPLES / "privacy_report.json").read_text())
    assert report["ledger"]["verification"]["head"]["anchor"] == anchor
    shown = report["empirical_audits"][0]
    assert shown["max_provable_lower_bound"] and shown["mechanism"]


@pytest.mark.skipif(not (EXAMPLES / "privacy_report.json").is_file(), reason="not generated")
def test_examples_show_no_machine_local_path() -> None:
    for ext in ("json", "md", "html"):
        text = (EXAMPLES / f"privacy_report.{ext}").read_text()
        for local in ("/tmp/", "/work/", "/home/", "/root/", "site-packages/gt"):
            assert local not in text, (ext, local)


@pytest.mark.skipif(not (EXAMPLES / "privacy_report.json").is_file(), reason="not generated")
def test_examples_carry_the_current_privacy_utility_curve() -> None:
    """The sample report's reference section is the benchmark result committed beside it
    (rebuilt with ``audits/generate_examples.py --rebuild`` whenever the benchmark changes)."""
    from securefl.audit.utility import utility_reference

    source = EXAMPLES.parents[1] / "benchmarks" / "results" / "utility_bench.json"
    report = json.loads((EXAMPLES / "privacy_report.json").read_text())
    expected = utility_reference(source, label="benchmarks/results/utility_bench.json")
    assert report["utility_reference"] == expected
    assert "Privacy–utility reference" in (EXAMPLES / "privacy_report.md").read_text()
