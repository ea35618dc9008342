"""The PDF for the audit file: printed by headless Chromium from the HTML, checked as rendered
pages (pypdfium2) — page count, no blank page, the budget line, no artefacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.render_pdf import BROWSER_ENV, PdfRenderError, find_browser
from securefl.audit.report import WRITERS, write_report
from securefl.errors import ConfigurationError

from .pdfpages import read_pdf
from .samples import ARTEFACTS, dp_report, flat


def test_missing_browser_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    with pytest.raises(PdfRenderError, match="apt-get install chromium"):
        find_browser()
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigurationError) as err:
        find_browser()
    assert err.value.parameter == BROWSER_ENV  # type: ignore[attr-defined]


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    assert set(WRITERS) == {"json", "md", "html", "pdf"}
    with pytest.raises(ConfigurationError, match="docx"):
        write_report({}, tmp_path / "r", ["docx"])


@pytest.mark.browser
def test_pdf_pages_render_with_budget_and_no_artefacts(
    chromium: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey
) -> None:
    monkeypatch.setenv(BROWSER_ENV, chromium)
    rep = dp_report()
    out = write_report(rep, tmp_path / "privacy_report", ["pdf", "json"])
    assert out["pdf"].read_bytes()[:5] == b"%PDF-" and os.path.getsize(out["pdf"]) > 20_000
    pages = read_pdf(out["pdf"])
    assert 2 <= len(pages) <= 15
    for i, page in enumerate(pages):
        assert page.grey.shape[0] > page.grey.shape[1]  # portrait A4
        assert page.ink > 0.005, f"page {i + 1} is blank"
    text = flat("\n".join(p.text for p in pages))
    assert "differential privacy for each client" in text
    assert "Budget: ε ≤ 8" in text and "budget ε = 8" in text  # headline and ε-plot line
    assert "Rounds are numbered from 1" in text
    for word in ARTEFACTS:
        assert word not in text, word
