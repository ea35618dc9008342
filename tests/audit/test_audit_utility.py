"""The benchmark's privacy–utility curve as a labelled reference section of the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from securefl.audit.render_html import render_html
from securefl.audit.render_md import render_markdown
from securefl.audit.utility import utility_reference
from securefl.cli import app
from securefl.errors import ConfigurationError
from tests.audit.samples import EXAMPLES, REPO, dp_report

SCHEMA = json.loads((REPO / "audits" / "report.schema.json").read_text())
RESULT: dict[str, Any] = {
    "seeds": 5,
    "acc_linear_probe": 0.76,
    "curve": {
        "device_client_level": {
            "inf": {"median": 0.77, "min": 0.75, "max": 0.78},
            "8": {"median": 0.76, "min": 0.74, "max": 0.77},
            "3": {"median": 0.74, "min": 0.70, "max": 0.75},
        },
        "silo_example_level": {
            "inf": {"median": 0.77, "min": 0.76, "max": 0.78},
            "1": {"median": 0.66, "min": 0.60, "max": 0.69},
        },
    },
}


def test_reference_section_in_every_format() -> None:
    base = dp_report()
    assert "utility_reference" not in base  # only when asked for
    rep = {**base, "utility_reference": utility_reference(RESULT, label="bench.json")}
    jsonschema.validate(rep, SCHEMA)
    pts = rep["utility_reference"]["regimes"]["device_client_level"]["points"]
    assert [p["epsilon"] for p in pts] == [3.0, 8.0]  # sorted, "inf" is the baseline
    html, md = render_html(rep), render_markdown(rep)
    for text in (html, md):
        assert "Privacy–utility reference (benchmark, not this run)" in text
        assert "0.740 (0.700–0.750)" in text and "0.961" in text  # 0.74 / 0.77
    assert html.count('class="chart"') == render_html(base).count('class="chart"') + 1


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"curve": {"r": {"8": {"median": 1.5, "min": 0, "max": 1}}}},
        {"curve": {"r": {"-1": {"median": 0.5, "min": 0.4, "max": 0.6}}}},
        {"curve": {"r": {"nan": {"median": 0.5, "min": 0.4, "max": 0.6}}}},
        {"curve": {"r": {"x": {"median": 0.5, "min": 0.4, "max": 0.6}}}},
        {"curve": {"r": {"8": {"median": 0.5}}}},
        {"curve": {"r": []}},
    ],
)
def test_malformed_results_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        utility_reference(bad)


def test_cli_report_with_utility(tmp_path: Path) -> None:
    result = tmp_path / "utility.json"
    result.write_text(json.dumps(RESULT))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "audit",
            "report",
            str(EXAMPLES / "ledger.sqlite"),
            "--out",
            str(out),
            "--public-key",
            str(EXAMPLES / "ledger.pub"),
            "--utility",
            str(result),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "privacy_report.json").read_text())
    assert doc["utility_reference"]["seeds"] == 5
    assert "benchmark, not this run" in (out / "privacy_report.html").read_text()
