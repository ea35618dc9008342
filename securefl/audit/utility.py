"""The privacy–utility reference a report can carry: accuracy against ε from a benchmark.

A run's report states what ε was spent; a compliance reader also needs to know what that ε
costs in accuracy. :func:`utility_reference` reads the JSON that ``benchmarks/utility_bench.py``
writes (``curve``: regime → ε or ``"inf"`` → {median, min, max}; ``acc_linear_probe``;
``seeds``) and keeps only validated numbers. It is a *reference*: measured on the benchmark's
public corpus, never on this run's data, and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from securefl.errors import ConfigurationError

MAX_POINTS = 64


def _acc(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise ConfigurationError(f"{where} must be an accuracy in [0, 1]", parameter="utility")
    return float(v)


def utility_reference(
    source: Mapping[str, Any] | str | PathLike[str], *, label: str | None = None
) -> dict[str, Any]:
    """The report's ``utility_reference`` block from a benchmark result (mapping or file)."""
    if isinstance(source, Mapping):
        doc: Any = source
        where = label or "benchmark result"
    else:
        path = Path(source)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}", parameter="utility") from None
        where = label or path.name
    if not isinstance(doc, Mapping) or not isinstance(doc.get("curve"), Mapping):
        raise ConfigurationError("a utility result needs a 'curve' object", parameter="utility")
    regimes: dict[str, dict[str, Any]] = {}
    for regime, points in doc["curve"].items():
        if not isinstance(points, Mapping) or len(points) > MAX_POINTS:
            raise ConfigurationError(f"curve {regime!r} is malformed", parameter="utility")
        curve, baseline = [], None
        for eps, p in points.items():
            if not isinstance(p, Mapping):
                raise ConfigurationError(f"curve {regime!r} point {eps!r}", parameter="utility")
            stats = {k: _acc(p.get(k), f"{regime} ε={eps} {k}") for k in ("median", "min", "max")}
            if eps == "inf":
                baseline = stats
                continue
            try:
                e = float(eps)
            except ValueError:
                e = math.nan
            if not (math.isfinite(e) and e > 0):
                raise ConfigurationError(f"ε {eps!r} must be positive", parameter="utility")
            curve.append({"epsilon": e, **stats})
        regimes[str(regime)[:80]] = {
            "points": sorted(curve, key=lambda q: q["epsilon"]),
            "nonprivate": baseline,
        }
    seeds = doc.get("seeds")
    probe = doc.get("acc_linear_probe")
    return {
        "source": str(where)[:200],
        "seeds": seeds if isinstance(seeds, int) and not isinstance(seeds, bool) else None,
        "acc_linear_probe": None if probe is None else _acc(probe, "acc_linear_probe"),
        "regimes": regimes,
        "note": (
            "Reference curve measured by the benchmark on its own public corpus (median over"
            " seeds, min–max), not on this run's data: it shows what accuracy a given ε costs"
            " with this library's mechanisms, not this model's accuracy."
        ),
    }
