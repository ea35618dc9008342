"""Federated LoRA fine-tuning benchmark (issue 5 figures).

``python benchmarks/fl_bench.py --quick`` prints, as its last line, one JSON object with

* ``secure_overhead_frac`` — (SecAgg+ round time − plaintext round time) / plaintext round
  time for all-MiniLM-L6-v2 + LoRA, 8 clients (all sampled, no DP, no dropouts), on the same
  model and data in the same process (200 synthetic examples, about 20 per client, 2 local
  epochs — little training, so the ratio is conservative). The local training work of the two
  rounds is identical (same seeds), so the difference of the round times is the difference of
  the aggregation phases; it is computed from those phases as measured inside the rounds
  (encode + mask/aggregate + unmask of SecAgg+ minus the plaintext sum; medians over
  interleaved rounds), divided by the median plaintext round time.
  ``secure_overhead_frac_wall`` is the same ratio from whole-round wall clocks, reported too:
  on a shared 2-core machine its noise (seconds) dwarfs the difference (tens of ms).
* ``accuracy_plain`` / ``accuracy_secagg_dp`` — held-out accuracy after the main job
  (``securefl simulate``'s ``securefl/fl/default.toml``: cross-silo, 5 sites every round for
  5 rounds, DP-SGD inside each site at ε = 8 per example, SecAgg+ across sites) with plaintext
  FedAvg and no DP, and as shipped; ``dp_accuracy_cost`` is their difference (per-seed ratios
  over 5 seeds: ``benchmarks/default_job_bench.py``).
* ``default_run_s`` — wall time of the main job (in-process, model load included).

``--quick`` runs one repetition fewer of the overhead rounds; the accuracy runs are the full
default runs either way (they define the figures), so the script takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def overhead(reps: int) -> dict[str, Any]:
    """One MiniLM round through the orchestrator, plain vs SecAgg+ (no DP), same cohort."""
    from securefl.fl.client import TrainSpec, client_step
    from securefl.fl.config import RunConfig
    from securefl.fl.model import AdapterModel
    from securefl.fl.orchestrator import ModelInfo, Orchestrator
    from securefl.fl.run import load_data

    base = RunConfig(
        n_clients=8,
        sampling="fixed",
        clients_per_round=8,
        dropout_rate=0.0,
        dp="none",
        rounds=1,
    )
    clients, test = load_data(base)
    model = AdapterModel(
        base.model,
        num_labels=len(test.label_names),
        lora_r=base.lora_r,
        lora_alpha=base.lora_alpha,
        lora_targets=base.lora_targets,
        max_length=base.max_length,
        seed=base.seed,
    )
    d = model.layout.size
    info = ModelInfo(layout=model.layout, initial=model.get_flat(), provenance={})
    spec = TrainSpec(base.local_epochs, base.batch_size, base.local_lr)
    times: dict[str, list[float]] = {"plain": [], "secagg+": []}
    phases: dict[str, list[float]] = {"plain": [], "secagg+": []}
    up: dict[str, int] = {}
    for rep in range(reps + 1):  # first pair warms up caches and is discarded
        for agg in ("plain", "secagg+"):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = base.replace(aggregation=agg, out=tmp)
                with Orchestrator(cfg, info, client_sizes=tuple(map(len, clients))) as orch:
                    plan = orch.next_round()
                    assert plan is not None
                    t0 = time.perf_counter()
                    updates = {
                        c: client_step(
                            model,
                            plan.global_flat,
                            clients[c],
                            spec,
                            client_id=c,
                            round_index=0,
                            seed=cfg.seed,
                        )
                        for c in plan.cohort
                    }
                    record = orch.complete_round(plan, updates, train_s=time.perf_counter() - t0)
            t = record["timings"]
            if rep == 0:
                continue
            times[agg].append(t["round"] - t["evaluate"])
            phases[agg].append(t["encode"] + t["aggregate"] + t["unmask"])
            up[agg] = int(record["bytes_up"])
    plain = statistics.median(times["plain"])
    secure = statistics.median(times["secagg+"])
    extra = statistics.median(phases["secagg+"]) - statistics.median(phases["plain"])
    return {
        "secure_overhead_frac": extra / plain,
        "secure_overhead_frac_wall": (secure - plain) / plain,
        "round_s_plain": plain,
        "round_s_secagg_plus": secure,
        "secure_phases_s": statistics.median(phases["secagg+"]),
        "adapter_parameters": d,
        "bytes_up_per_client_plain": up["plain"] // 8,
        "bytes_up_per_client_secagg_plus": up["secagg+"] // 8,
    }


def default_runs() -> dict[str, Any]:
    """The main job (``securefl/fl/default.toml``) as shipped and with plaintext FedAvg, no DP."""
    from securefl.fl.config import load
    from securefl.fl.run import run_simulation

    main_job = Path(__file__).resolve().parents[1] / "securefl" / "fl" / "default.toml"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = str(Path(tmp) / "keys")
        t0 = time.perf_counter()
        dp = run_simulation(load(main_job, out=str(Path(tmp) / "default"), key_dir=keys))
        out["default_run_s"] = time.perf_counter() - t0
        plain = run_simulation(
            load(
                main_job,
                out=str(Path(tmp) / "plain"),
                key_dir=keys,
                aggregation="plain",
                dp="none",
            )
        )
    out.update(
        accuracy_plain=plain.accuracy,
        accuracy_secagg_dp=dp.accuracy,
        dp_accuracy_cost=plain.accuracy - dp.accuracy,
        epsilon=dp.epsilon,
        delta=dp.delta,
        noise_multiplier=dp.noise_multiplier,
        bytes_up_per_round_default=dp.bytes_per_round_up,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true", help="overhead only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"quick": args.quick}
    result.update(overhead(reps=2 if args.quick else 4))
    if not args.skip_accuracy:
        result.update(default_runs())
    result["bench_s"] = time.perf_counter() - t0
    print(
        json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in result.items()})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
