"""Model and code provenance for ledger entries (what an auditor needs to identify a model).

NIST SP 800-226 §2 asks that a DP claim name the exact release it covers; we record the base
model's name, the SHA-256 of its weight files, its licence where known, and the code version
(package version and git commit) that produced the run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import securefl

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of one file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """SHA-256 of each weight file, keyed by file name (sorted, so the record is stable)."""
    return {Path(p).name: sha256_file(p) for p in sorted(paths, key=lambda p: Path(p).name)}


def model_provenance(
    base_model: str,
    weight_files: Iterable[str | os.PathLike[str]] = (),
    *,
    licence: str | None = None,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Payload of a ``model_provenance`` entry."""
    out: dict[str, Any] = {
        "base_model": base_model,
        "weights_sha256": weights_sha256(weight_files),
        "licence": licence,
        "source": source,
    }
    if extra:
        out.update(extra)
    return out


def code_version(repo: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``securefl`` version plus git commit and dirty flag when run from a checkout."""
    root = Path(repo) if repo is not None else Path(securefl.__file__).resolve().parent.parent
    out: dict[str, Any] = {"securefl": securefl.__version__, "git_commit": None, "git_dirty": None}
    if not (root / ".git").exists():
        return out
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    out["git_commit"] = commit or None
    out["git_dirty"] = bool(status.strip())
    return out
