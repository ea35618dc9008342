"""examples/ run as a team would copy them, and their ledgers verify."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from securefl.audit.ledger import verify_ledger

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _user_lines(path: Path) -> int:
    """Lines of code a user writes: no blank lines, comments or the module docstring."""
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree, clean=False)
    skip = len(doc.splitlines()) if doc else 0
    lines = [ln for ln in path.read_text().splitlines()[skip:] if ln.strip()]
    return sum(1 for ln in lines if not ln.strip().startswith("#"))


def test_own_model_example_is_at_most_30_lines() -> None:
    assert _user_lines(EXAMPLES / "own_model_secagg_dp.py") <= 30


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", ["own_model_secagg_dp.py", "own_loop_local_dpsgd.py", "hf_lora.py"]
)
def test_example_runs_and_its_ledger_verifies(tmp_path: Path, script: str) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(run_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ε = " in proc.stdout
    assert (run_dir / "report.html").is_file()
    result = verify_ledger(run_dir / "ledger.sqlite")
    assert result.ok, result
