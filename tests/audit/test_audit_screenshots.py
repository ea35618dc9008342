"""Screenshots of the three sample reports (DP run, run without DP, tampered ledger): the HTML
in a real headless Chromium and every PDF page, checked for what each must (and must not) say.

The images go to ``test-artifacts/screenshots/``; with ``SECUREFL_UPDATE_SCREENSHOTS=1`` they
also replace the reviewers' copies in ``audits/examples/screenshots/`` (first PDF pages only,
8-bit grey, so the repository stays small)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.audit.render_pdf import BROWSER_ENV
from securefl.audit.report import write_html, write_pdf

from .conftest import ARTIFACTS, run_chromium
from .pdfpages import read_pdf, write_png
from .samples import ARTEFACTS, EXAMPLES, SAMPLES, flat, sample_report

COMMITTED = EXAMPLES / "screenshots"
_COMMITTED_PDF_PAGES = 2
_MUST = {
    "dp": (
        "differential privacy for each client",
        "Budget: ε ≤ 8",
        "budget ε = 8",
        "canaries",  # the empirical audit of the run's own model
    ),
    "no_dp": ("No differential privacy", "no ε or δ to report"),
    "tampered": ("VERIFICATION FAILED", "UNVERIFIED", "(unverified)"),
}
_MUST_NOT = {
    "dp": ("UNVERIFIED", "No differential privacy"),
    "no_dp": ("-DP", "differential privacy for each", "rate q = 1", "Budget:"),
    "tampered": ("differential privacy for each", "within budget", "Ledger verified"),
}


@pytest.mark.browser
@pytest.mark.parametrize("name", SAMPLES)
def test_sample_report_screenshots(
    name: str,
    chromium: str,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BROWSER_ENV, chromium)
    rep = sample_report(name, tmp_path, key)
    html = write_html(rep, tmp_path / f"{name}.html")
    out = ARTIFACTS / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    shot = out / f"{name}_html.png"
    shot.unlink(missing_ok=True)
    done = run_chromium(
        chromium, tmp_path, f"--screenshot={shot}", "--window-size=960,1300", html.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    url = html.as_uri()
    dom = run_chromium(chromium, tmp_path, "--dump-dom", "--virtual-time-budget=5000", url)
    assert 'data-render="ok"' in dom.stdout
    charts = dom.stdout.split('data-charts="', 1)[1].split('"', 1)[0]
    drawn, total = charts.split("/")
    assert drawn == total and int(total) >= 3

    pages = read_pdf(write_pdf(rep, tmp_path / f"{name}.pdf"), scale=1.25)
    assert 2 <= len(pages) <= 15
    assert all(p.ink > 0.005 for p in pages), [round(p.ink, 4) for p in pages]
    text = flat("\n".join(p.text for p in pages))
    for phrase in _MUST[name]:
        assert phrase in text, phrase
    for phrase in _MUST_NOT[name] + ARTEFACTS:
        assert phrase not in text, phrase
    # the first page carries the verdict, so a reader who stops there is not misled
    first = flat(pages[0].text)
    assert _MUST[name][0] in first
    for i, page in enumerate(pages[:_COMMITTED_PDF_PAGES]):
        write_png(page.grey, out / f"{name}_pdf_page{i + 1}.png")
    if os.environ.get("SECUREFL_UPDATE_SCREENSHOTS") == "1":
        COMMITTED.mkdir(exist_ok=True)
        shutil.copy(shot, COMMITTED / shot.name)
        for i in range(min(_COMMITTED_PDF_PAGES, len(pages))):
            png = f"{name}_pdf_page{i + 1}.png"
            shutil.copy(out / png, COMMITTED / png)


def test_committed_screenshots_are_present_and_small() -> None:
    names = [f"{n}_html.png" for n in SAMPLES] + [
        f"{n}_pdf_page{i + 1}.png" for n in SAMPLES for i in range(_COMMITTED_PDF_PAGES)
    ]
    for png in names:
        data = (COMMITTED / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        assert 10_000 < len(data) < 250_000, (png, len(data))
