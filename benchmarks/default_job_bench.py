"""The main job's privacy–utility check (issue 13): is the default run useful at its ε?

``python benchmarks/default_job_bench.py`` runs ``securefl simulate``'s default configuration
(``securefl/fl/default.toml``) twice per seed — as shipped (its DP) and with ``dp = "none"``,
everything else equal — over 5 seeds, and prints one JSON line with

* ``acc_dp`` / ``acc_nonprivate`` — per-seed final test accuracies;
* ``ratio`` — per-seed DP ÷ non-private accuracy, with ``ratio_median`` and ``ratio_min``
  (target: ``ratio_min`` ≥ 0.9, i.e. the model is useful at the run's ε on every seed);
* ``epsilon`` / ``delta`` / ``privacy_unit`` / ``noise_multiplier`` — the guarantee the DP runs
  declare (ε spent, max over seeds);
* ``wall_s_dp`` / ``wall_s_nonprivate`` — per-run wall time (model load, ledger and reports
  included; the README promises ~2 minutes for the default run).

The seed fixes the synthetic data and its partition; client sampling, masks and DP noise come
from a CSPRNG, so each run also draws fresh coins. ``--quick``: 2 seeds. ``--set key=value``
overrides a default (a TOML literal), to try a recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _override(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def one_run(overrides: dict[str, Any], root: Path) -> dict[str, Any]:
    from securefl.fl import ledger as ledger_mod
    from securefl.fl.config import load
    from securefl.fl.run import run_simulation

    out = root / f"run-{time.time_ns()}"
    cfg = load(
        ROOT / "securefl" / "fl" / "default.toml",
        out=str(out),
        key_dir=str(root / "keys"),
        **overrides,
    )
    t0 = time.perf_counter()
    res = run_simulation(cfg, resume=False)
    wall = time.perf_counter() - t0
    return {
        "accuracy": res.accuracy,
        "epsilon": res.epsilon,
        "delta": res.delta,
        "noise_multiplier": res.noise_multiplier,
        "privacy_unit": ledger_mod.privacy_unit(cfg) if cfg.dp != "none" else None,
        "dp": cfg.dp,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds instead of 5")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, …)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    args = ap.parse_args(argv)
    n = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    base = _override(args.sets)
    dp_runs: list[dict[str, Any]] = []
    np_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="default-job-bench-") as tmp:
        root = Path(tmp)
        for seed in range(n):
            for runs, extra in ((dp_runs, {}), (np_runs, {"dp": "none"})):
                r = one_run({**base, **extra, "seed": seed}, root)
                runs.append(r)
                print(
                    f"seed {seed} dp={r['dp']}: accuracy {r['accuracy']:.3f}, "
                    f"ε {r['epsilon']:.3g}, {r['wall_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    ratio = [d["accuracy"] / p["accuracy"] for d, p in zip(dp_runs, np_runs, strict=True)]
    eps = max(d["epsilon"] for d in dp_runs)
    result = {
        "benchmark": "default_job",
        "seeds": n,
        "overrides": base,
        "dp": dp_runs[0]["dp"],
        "privacy_unit": dp_runs[0]["privacy_unit"],
        "epsilon": round(eps, 4) if math.isfinite(eps) else str(eps),
        "delta": dp_runs[0]["delta"],
        "noise_multiplier": dp_runs[0]["noise_multiplier"],
        "acc_dp": [round(d["accuracy"], 4) for d in dp_runs],
        "acc_nonprivate": [round(p["accuracy"], 4) for p in np_runs],
        "ratio": [round(x, 4) for x in ratio],
        "ratio_median": round(statistics.median(ratio), 4),
        "ratio_min": round(min(ratio), 4),
        "target_ratio_min": 0.9,
        "wall_s_dp": [round(d["wall_s"], 1) for d in dp_runs],
        "wall_s_nonprivate": [round(p["wall_s"], 1) for p in np_runs],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
