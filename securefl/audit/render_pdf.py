"""PDF of a report for the audit file: the self-contained HTML report printed by headless
Chromium (``--print-to-pdf``).

Why Chromium rather than a pure-Python PDF library (reportlab): the PDF is then the *same
document* as the HTML — one layout, one set of words, so the two cannot disagree — with the
inline SVG charts and full Unicode (ε, δ, ≤, →) for free; reportlab would need a second layout
of every section and embedded fonts for the Greek letters. Chromium is well kept, packaged by
Debian (``apt-get install chromium``) and the other distributions, and prints without a display.

Safety: the page is a local file whose Content-Security-Policy forbids every network request;
recorded strings are escaped by :mod:`securefl.audit.render_html`. The browser runs with a
throw-away profile directory and no header/footer (which would print a machine-local path).
Chromium's sandbox is kept, except when running as root, where Chromium refuses to start
without ``--no-sandbox``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from securefl.errors import ConfigurationError, SecureFLError

BROWSER_ENV = "SECUREFL_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PDF_MAGIC = b"%PDF-"


class PdfRenderError(SecureFLError):
    """The browser could not print the report (not installed, crashed or timed out)."""


def find_browser() -> str:
    """The Chromium binary: ``$SECUREFL_CHROMIUM``, else the first of :data:`_CANDIDATES` on
    ``PATH``."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ConfigurationError(
                f"{BROWSER_ENV}={explicit} is not an executable file", parameter=BROWSER_ENV
            )
        return explicit
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfRenderError(
        "PDF reports need Chromium: install it (Debian/Ubuntu: apt-get install chromium) or"
        f" set {BROWSER_ENV} to the browser binary; the HTML report has the same content"
    )


def html_to_pdf(
    html_path: str | PathLike[str],
    pdf_path: str | PathLike[str],
    *,
    browser: str | None = None,
    timeout: float = 180.0,
) -> Path:
    """Print a local HTML file to an A4 PDF with headless Chromium."""
    src = Path(html_path).resolve()
    out = Path(pdf_path).resolve()
    binary = browser or find_browser()
    with tempfile.TemporaryDirectory(prefix="securefl-pdf-") as profile:
        args = [
            binary,
            "--headless",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            src.as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        out.unlink(missing_ok=True)
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PdfRenderError(f"Chromium did not print the report: {exc}") from exc
    if done.returncode != 0 or not out.is_file() or out.read_bytes()[:5] != _PDF_MAGIC:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise PdfRenderError(
            f"Chromium exited with status {done.returncode} without a PDF: {' | '.join(tail)}"
        )
    return out


def write_pdf(
    report: Mapping[str, Any], path: str | PathLike[str], *, browser: str | None = None
) -> Path:
    """Render ``report`` to HTML (:func:`securefl.audit.render_html.render_html`) and print it
    to ``path`` as PDF."""
    from securefl.audit.render_html import render_html

    with tempfile.TemporaryDirectory(prefix="securefl-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render_html(report), encoding="utf-8")
        return html_to_pdf(page, path, browser=browser)
