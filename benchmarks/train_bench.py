"""Batched client training (with the frozen-prefix feature cache) vs the per-client loop
(issue 13 §2).

``python benchmarks/train_bench.py [--quick]`` prints, as its last line, one JSON object. For
each of three adapters on all-MiniLM-L6-v2 (r = 4, 2 local epochs of batch 8, ``max_length``
64, clients of 10–20 texts of two synthetic sentences, about 20 tokens each):

* ``head`` — ``lora_targets = ["classifier"]``, the main job's adapter (securefl/fl/default.toml);
* ``top_layer`` — LoRA on query/value of the last encoder layer only, plus the classifier;
* ``all_layers`` — LoRA on query/value of every layer plus the classifier (the cross-device
  adapter; nothing past the embeddings is frozen, so there is no cache);

it reports (``<adapter>`` sub-objects, and flattened ``<adapter>_…`` keys):

* ``clients_per_s_loop`` — today's per-client loop, no cache: ``securefl.fl.client.client_step``
  per client (load the global adapter, AdamW, tokenise and run the client's batches through
  the whole model);
* ``clients_per_s_loop_cached`` — the same loop with a warm :class:`FeatureCache`;
* ``clients_per_s_batched`` — :class:`securefl.train.BatchedClientTrainer` with the cache,
  *warm*: a first pass over the same clients filled it (every later round of a run, since
  the frozen weights and the examples do not change); ``clients_per_s_batched_cold`` — the
  first pass itself (fill included); ``fill_s`` — filling a fresh cache for those clients
  alone (tokenise + prefix pass, eval mode), ``fill_s_per_example`` the same per example;
* ``clients_per_s_speedup`` = batched (warm) / loop; ``clients_per_s_speedup_cold`` likewise;
* ``max_rel_diff`` — batched-with-cache vs uncached loop updates, dropout off, same data order
  (relative L2 per client, max over the clients both trained).

Headline keys: ``clients_per_s_speedup`` is the *head* adapter's warm speedup (the main job);
``clients_per_s_speedup_all_layers`` the all-layer one (the figure quoted before the cache);
``clients_per_s_speedup_top_layer`` likewise. Tokenisation is included in every figure.
The loop times a few clients, the batched path a whole cohort; medians over ``--reps``.

``round_*`` keys: one simulated round's local training at population 10⁴ with a cohort of
1,000 clients (uniformly sampled, 2–6 one-sentence texts each, ``max_length`` 32, head
adapter, 1 epoch of batch 16 — the main job's settings), in a child process: the cohort
trained by ``BatchedClientTrainer`` with a cold cache (fill included) and the updates summed
as they stream out; ``round_wall_s`` its wall time, ``round_peak_rss_mib`` the child's peak
resident memory (``VmHWM``: model, data of all 10⁴ clients, cache, stacked adapters),
``round_model`` which model (``--quick``: the tiny random BERT; otherwise MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

ADAPTERS: dict[str, tuple[tuple[str, ...], bool]] = {
    # name: (lora_targets, last layer only)
    "head": (("classifier",), False),
    "top_layer": (("query", "value", "classifier"), True),
    "all_layers": (("query", "value", "classifier"), False),
}


def _clients(n: int, seed: int, lo: int = 10, hi: int = 20, sentences: int = 2) -> list[Any]:
    """Client datasets of lo–hi texts, each text ``sentences`` synthetic sentences of a topic."""
    from securefl.fl.data import TextDataset, synthetic_topics

    pool = synthetic_topics(4000, seed=seed)
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for text, y in zip(pool.texts, pool.labels, strict=True):
        by_label.setdefault(y, []).append(text)
    out = []
    for _ in range(n):
        size = int(rng.integers(lo, hi + 1))
        labels = [int(rng.integers(len(pool.label_names))) for _ in range(size)]
        texts = []
        for y in labels:
            picks = rng.choice(len(by_label[y]), sentences, replace=False)
            texts.append(" ".join(by_label[y][int(a)] for a in picks))
        out.append(TextDataset(tuple(texts), tuple(labels), pool.label_names))
    return out


def _no_dropout(model: Any) -> None:
    import torch

    for module in model.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _model(name: str, adapter: str, max_length: int = 64) -> Any:
    from securefl.fl.model import AdapterModel

    targets, last_only = ADAPTERS[adapter]
    layers = None
    if last_only:
        n_layers = 2 if name == "tiny" else 6
        layers = (n_layers - 1,)
    return AdapterModel(
        name,
        num_labels=4,
        lora_r=4,
        lora_alpha=8.0,
        lora_targets=targets,
        max_length=max_length,
        seed=0,
        device="cpu",
        lora_layers=layers,
    )


def measure(
    name: str, adapter: str, n_loop: int, n_batched: int, reps: int, chunk: int
) -> dict[str, Any]:
    from securefl.fl.client import TrainSpec, client_step
    from securefl.train import BatchedClientTrainer, FeatureCache
    from securefl.train.frozen import tokenize_texts

    model = _model(name, adapter)
    spec = TrainSpec(epochs=2, batch_size=8, lr=1e-2)
    clients = _clients(max(n_loop, n_batched), seed=1)
    cohort = clients[:n_batched]
    flat = model.get_flat()
    ids = range(n_batched)

    def batched_pass(trainer: Any) -> float:
        t0 = time.perf_counter()
        for _chunk in trainer.train_chunks(flat, cohort, client_ids=ids, round_index=0, seed=0):
            pass
        return (time.perf_counter() - t0) / n_batched

    loop_s, loop_cached_s, cold_s, warm_s, fill_s = [], [], [], [], []
    has_cache = FeatureCache.for_model(model) is not None
    for _ in range(reps):
        t0 = time.perf_counter()
        for cid in range(n_loop):
            client_step(model, flat, clients[cid], spec, client_id=cid, round_index=0, seed=0)
        loop_s.append((time.perf_counter() - t0) / n_loop)
        if has_cache:
            fresh = FeatureCache.for_model(model)
            assert fresh is not None
            t0 = time.perf_counter()
            for c in cohort:
                fresh.features(*tokenize_texts(model, c.texts))
            fill_s.append(time.perf_counter() - t0)
        cache = FeatureCache.for_model(model)
        trainer = BatchedClientTrainer(model, spec, chunk_size=chunk, feature_cache=cache)
        cold_s.append(batched_pass(trainer))
        warm_s.append(batched_pass(trainer))
        if cache is not None:
            t0 = time.perf_counter()
            for cid in range(n_loop):
                client_step(
                    model,
                    flat,
                    clients[cid],
                    spec,
                    client_id=cid,
                    round_index=0,
                    seed=0,
                    feature_cache=cache,
                )
            loop_cached_s.append((time.perf_counter() - t0) / n_loop)
    # agreement (dropout off, same data order): cached batched vs uncached loop
    _no_dropout(model)
    k = min(n_loop, 2)
    ref = np.stack(
        [
            client_step(model, flat, clients[c], spec, client_id=c, round_index=0, seed=0).delta
            for c in range(k)
        ]
    )
    trainer = BatchedClientTrainer(
        model, spec, chunk_size=chunk, feature_cache=FeatureCache.for_model(model)
    )
    got = next(trainer.train_chunks(flat, clients[:k], client_ids=range(k), round_index=0, seed=0))
    rel = float(np.max(np.linalg.norm(got.deltas - ref, axis=1) / np.linalg.norm(ref, axis=1)))
    loop, warm, cold = (statistics.median(x) for x in (loop_s, warm_s, cold_s))
    examples = sum(len(c) for c in cohort)
    out: dict[str, Any] = {
        "clients_per_s_loop": round(1 / loop, 3),
        "clients_per_s_batched": round(1 / warm, 3),
        "clients_per_s_batched_cold": round(1 / cold, 3),
        "clients_per_s_speedup": round(loop / warm, 2),
        "clients_per_s_speedup_cold": round(loop / cold, 2),
        "feature_cache": has_cache,
        "max_rel_diff": rel,
        "mean_client_size": float(np.mean([len(c) for c in cohort])),
        "loop_clients": n_loop,
        "batched_clients": n_batched,
        "trainable_parameters": model.layout.size,
    }
    if has_cache:
        out["clients_per_s_loop_cached"] = round(1 / statistics.median(loop_cached_s), 3)
        out["fill_s"] = round(statistics.median(fill_s), 3)
        out["fill_s_per_example"] = round(statistics.median(fill_s) / examples, 6)
    return out


def _peak_rss_kib() -> int:
    """This process's peak resident memory: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``,
    which on Linux keeps the forking parent's peak across ``execve``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def simulated_round(name: str, population: int, cohort_size: int, chunk: int) -> dict[str, Any]:
    """One round's local training of a sampled cohort (see the module docstring)."""
    from securefl.fl.client import TrainSpec
    from securefl.train import BatchedClientTrainer, FeatureCache

    t_setup = time.perf_counter()
    model = _model(name, "head", max_length=32)
    clients = _clients(population, seed=2, lo=2, hi=6, sentences=1)
    rng = np.random.default_rng(3)
    cohort_ids = sorted(int(c) for c in rng.choice(population, cohort_size, replace=False))
    spec = TrainSpec(epochs=1, batch_size=16, lr=0.1)
    flat = model.get_flat()
    setup_s = time.perf_counter() - t_setup
    t0 = time.perf_counter()
    cache = FeatureCache.for_model(model)
    trainer = BatchedClientTrainer(model, spec, chunk_size=chunk, feature_cache=cache)
    total = np.zeros(model.layout.size)
    trained = 0
    for chunk_out in trainer.train_chunks(
        flat,
        [clients[c] for c in cohort_ids],
        client_ids=cohort_ids,
        round_index=0,
        seed=0,
    ):
        total += chunk_out.deltas.sum(axis=0)
        trained += len(chunk_out.client_ids)
    wall = time.perf_counter() - t0
    peak_kib = _peak_rss_kib()
    return {
        "round_model": "tiny-random-bert" if name == "tiny" else "all-MiniLM-L6-v2",
        "round_population": population,
        "round_cohort": trained,
        "round_examples": sum(len(clients[c]) for c in cohort_ids),
        "round_wall_s": round(wall, 2),
        "round_setup_s": round(setup_s, 2),
        "round_peak_rss_mib": round(peak_kib / 1024, 1),
        "round_cache_mib": round(0 if cache is None else cache.stats.bytes / 2**20, 2),
        "round_update_norm": float(np.linalg.norm(total / trained)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--round-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.round_only is not None:  # the child process of the round measurement
        print(json.dumps(simulated_round(args.round_only, 10_000, 1_000, 256)))
        return
    reps = args.reps or (1 if args.quick else 3)
    load = os.getloadavg()[0]
    n_loop, n_batched = (3, 32) if args.quick else (6, 128)
    results = {
        adapter: measure("minilm", adapter, n_loop, n_batched, reps, args.chunk)
        for adapter in ADAPTERS
    }
    round_model = "tiny" if args.quick else "minilm"
    child = subprocess.run(
        [sys.executable, __file__, "--round-only", round_model],
        check=True,
        capture_output=True,
        text=True,
    )
    round_info = json.loads(child.stdout.strip().splitlines()[-1])
    head = results["head"]
    out: dict[str, Any] = {
        "clients_per_s_loop": head["clients_per_s_loop"],
        "clients_per_s_batched": head["clients_per_s_batched"],
        "clients_per_s_batched_cold": head["clients_per_s_batched_cold"],
        "clients_per_s_speedup": head["clients_per_s_speedup"],
        "clients_per_s_speedup_cold": head["clients_per_s_speedup_cold"],
        "clients_per_s_speedup_top_layer": results["top_layer"]["clients_per_s_speedup"],
        "clients_per_s_speedup_all_layers": results["all_layers"]["clients_per_s_speedup"],
        "max_rel_diff": max(r["max_rel_diff"] for r in results.values()),
        **round_info,
        **results,
        "model": "all-MiniLM-L6-v2",
        "torch_threads": __import__("torch").get_num_threads(),
        "loadavg_1m_start": round(load, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "quick": args.quick,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
