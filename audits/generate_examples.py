"""Regenerate the sample privacy reports under ``audits/examples/`` from a REAL run.

The source is the run directory of ``securefl simulate`` (the cross-device job, with the
one-run canary audit of its own model)::

    securefl simulate --config securefl/fl/cross_device.toml --out runs/sample --audit 200 \\
        --policy audits/policies/client_level_secagg.toml
    python audits/generate_examples.py --run-dir runs/sample

``--rebuild`` rebuilds the reports from the ledger, key and anchor already under ``--out``
(e.g. after the privacy–utility benchmark, shown as the reports' reference section, changed).

The run directory holds the ledger (one self-contained file) and ``summary.json``, which names
the ledger's public key (kept in the key directory, outside the run) and the head anchor the
run published to the anchor log. This script copies the ledger and the public key next to the
reports, writes the published anchor to ``ledger.anchor``, and builds the reports verified
against both, so ``securefl audit verify audits/examples/ledger.sqlite -k
audits/examples/ledger.pub --expect-head "$(cat audits/examples/ledger.anchor)"`` checks that
the examples come from that ledger and that it was not rolled back. Nothing that can sign is
copied: the signing key stays in the operator's key directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

from securefl.audit.policy import BudgetPolicy
from securefl.audit.render_pdf import PdfRenderError
from securefl.audit.report import build_report, write_report
from securefl.audit.utility import utility_reference

HERE = Path(__file__).resolve().parent
DEFAULT_POLICY = HERE / "policies" / "client_level_secagg.toml"
DEFAULT_UTILITY = HERE.parent / "benchmarks" / "results" / "utility_bench.json"


def copy_ledger(src: Path, dst: Path) -> None:
    """A consistent single-file snapshot (the run already folded its WAL; this is belt and
    braces for a ledger copied mid-run)."""
    dst.unlink(missing_ok=True)
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        source.close()
        target.close()


def _repo_relative(path: Path) -> str:
    """How the report names a source file: repository-relative, never a machine-local path."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help="a securefl simulate run")
    src.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the reports from the ledger, public key and anchor already in --out",
    )
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    ap.add_argument("--out", type=Path, default=HERE / "examples")
    ap.add_argument("--title", default="Privacy report — sample run (securefl simulate)")
    ap.add_argument(
        "--utility",
        type=Path,
        default=DEFAULT_UTILITY,
        help="benchmark privacy-utility JSON shown as a labelled reference section ('' = none)",
    )
    args = ap.parse_args()
    ledger = args.out / "ledger.sqlite"
    if args.run_dir is None:  # --rebuild: the ledger, key and anchor already beside the reports
        anchor = (args.out / "ledger.anchor").read_text("utf-8").strip()
    else:
        summary = json.loads((args.run_dir / "summary.json").read_text("utf-8"))
        public_key, anchor = Path(summary["ledger_public_key"]), summary["ledger_anchor"]
        args.out.mkdir(parents=True, exist_ok=True)
        copy_ledger(args.run_dir / "ledger.sqlite", ledger)
        shutil.copy(public_key, args.out / "ledger.pub")
        (args.out / "ledger.anchor").write_text(anchor + "\n", "utf-8")
    utility = (
        utility_reference(args.utility, label=_repo_relative(args.utility))
        if str(args.utility) not in ("", ".")
        else None
    )
    report = build_report(
        ledger,
        BudgetPolicy.load(args.policy),
        public_key=args.out / "ledger.pub",
        expected_head=anchor,
        title=args.title,
        source_label="audits/examples/ledger.sqlite",
        utility=utility,
    )
    stem = args.out / "privacy_report"
    for fmt, path in write_report(report, stem, ("json", "md", "html")).items():
        print(f"wrote {fmt}: {path}")
    with contextlib.suppress(PdfRenderError):  # no Chromium here: no PDF
        from securefl.audit.report import write_pdf

        print(f"wrote pdf: {write_pdf(report, stem.with_suffix('.pdf'))}")
    v = report["ledger"]["verification"]
    print(
        f"ledger ok={v['ok']} head={v['head']['anchor'] if v['head'] else None}"
        f" policy ok={report['policy']['ok'] if report['policy'] else None}"
    )


if __name__ == "__main__":
    main()
