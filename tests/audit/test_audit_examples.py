"""The sample reports under audits/examples/ are generated from the ledger stored beside them
(not hand-written): schema-valid, and their head anchor is that ledger's verified head."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from securefl.audit.ledger import verify_ledger

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
def test_examples_show_no_machine_local_path() -> None:
    for ext in ("json", "md", "html"):
        text = (EXAMPLES / f"privacy_report.{ext}").read_text()
        for local in ("/tmp/", "/work/", "/home/", "/root/", "site-packages/gt"):
            assert local not in text, (ext, local)
