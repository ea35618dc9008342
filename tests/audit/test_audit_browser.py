"""The HTML report renders in a REAL headless Chromium without script errors; the screenshot
is kept under test-artifacts/ for humans to look at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from securefl.audit.ledger import Ledger
from securefl.audit.report import build_report, write_html

from .conftest import ARTIFACTS, TS, run_chromium


@pytest.mark.browser
def test_html_report_renders_in_chromium(
    chromium: str, make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    ledger = make_ledger(30)
    ledger.append("model_provenance", {"base_model": "<b>not bold</b>"}, timestamp=TS)
    html = write_html(
        build_report(ledger, generated_at=TS, accountants=("rdp", "pld")), tmp_path / "report.html"
    )
    url = html.resolve().as_uri()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit_report.png"
    shot.unlink(missing_ok=True)
    done = run_chromium(
        chromium,
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1200,2200",
        "--enable-logging=stderr",
        "--v=0",
        url,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000  # a real page, not a blank image
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Uncaught" not in done.stderr, done.stderr[-2000:]
    dom = run_chromium(chromium, tmp_path, "--dump-dom", "--virtual-time-budget=5000", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-render="ok"' in dom.stdout  # the load handler ran and saw no error
    assert 'data-charts="4/4"' in dom.stdout  # every SVG chart has a non-empty box
    assert "charts:" not in dom.stdout  # and no internal marker is visible on the page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in dom.stdout and "<b>not bold</b>" not in dom.stdout
