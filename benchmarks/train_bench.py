"""Batched client training vs the per-client loop (issue 13 §2).

``python benchmarks/train_bench.py [--quick]`` prints, as its last line, one JSON object with

* ``clients_per_s_loop`` — clients per second through ``securefl.fl.client.client_step`` (what
  ``securefl simulate`` runs per client: load the global adapter, AdamW, the client's batches);
* ``clients_per_s_batched`` — clients per second through
  :class:`securefl.train.BatchedClientTrainer` on the same model, hyper-parameters and kind of
  data, in the same process (tokenisation included in both);
* ``clients_per_s_speedup`` — their ratio (issue 13 target ≥ 10);

for all-MiniLM-L6-v2 with LoRA on query/value/classifier (r = 4, the default run's adapter),
2 local epochs of batch 8, ``max_length`` 64, clients of 10–20 short texts (two synthetic
sentences each, about 20 tokens), and the same figures for the tiny random BERT
(``tiny_*``). The loop times a few clients, the batched path a whole cohort; both are medians
over ``--reps`` interleaved repetitions. ``max_rel_diff`` checks that the two paths agree
(dropout off, same data order) on the clients both trained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np


def _clients(n: int, seed: int) -> list[Any]:
    """Client datasets of 10–20 texts, each text two synthetic sentences of one topic."""
    from securefl.fl.data import TextDataset, synthetic_topics

    pool = synthetic_topics(4000, seed=seed)
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for text, y in zip(pool.texts, pool.labels, strict=True):
        by_label.setdefault(y, []).append(text)
    out = []
    for _ in range(n):
        size = int(rng.integers(10, 21))
        labels = [int(rng.integers(len(pool.label_names))) for _ in range(size)]
        texts = []
        for y in labels:
            a, b = rng.choice(len(by_label[y]), 2, replace=False)
            texts.append(f"{by_label[y][a]} {by_label[y][b]}")
        out.append(TextDataset(tuple(texts), tuple(labels), pool.label_names))
    return out


def _no_dropout(model: Any) -> None:
    import torch

    for module in model.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def measure(name: str, n_loop: int, n_batched: int, reps: int, chunk: int) -> dict[str, Any]:
    from securefl.fl.client import TrainSpec, client_step
    from securefl.fl.model import AdapterModel
    from securefl.train import BatchedClientTrainer

    model = AdapterModel(
        name,
        num_labels=4,
        lora_r=4,
        lora_alpha=8.0,
        lora_targets=("query", "value", "classifier"),
        max_length=64,
        seed=0,
        device="cpu",
    )
    spec = TrainSpec(epochs=2, batch_size=8, lr=1e-2)
    clients = _clients(max(n_loop, n_batched), seed=1)
    flat = model.get_flat()
    trainer = BatchedClientTrainer(model, spec, chunk_size=chunk)
    loop_s: list[float] = []
    batched_s: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for cid in range(n_loop):
            client_step(model, flat, clients[cid], spec, client_id=cid, round_index=0, seed=0)
        loop_s.append((time.perf_counter() - t0) / n_loop)
        t0 = time.perf_counter()
        for _chunk in trainer.train_chunks(
            flat, clients[:n_batched], client_ids=range(n_batched), round_index=0, seed=0
        ):
            pass
        batched_s.append((time.perf_counter() - t0) / n_batched)
    # agreement (dropout off, same data order) on a few clients
    _no_dropout(model)
    k = min(n_loop, 2)
    ref = np.stack(
        [
            client_step(model, flat, clients[c], spec, client_id=c, round_index=0, seed=0).delta
            for c in range(k)
        ]
    )
    got = next(trainer.train_chunks(flat, clients[:k], client_ids=range(k), round_index=0, seed=0))
    rel = float(np.max(np.linalg.norm(got.deltas - ref, axis=1) / np.linalg.norm(ref, axis=1)))
    loop, batched = statistics.median(loop_s), statistics.median(batched_s)
    return {
        "clients_per_s_loop": round(1 / loop, 3),
        "clients_per_s_batched": round(1 / batched, 3),
        "clients_per_s_speedup": round(loop / batched, 2),
        "max_rel_diff": rel,
        "mean_client_size": float(np.mean([len(c) for c in clients[:n_batched]])),
        "loop_clients": n_loop,
        "batched_clients": n_batched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    load = os.getloadavg()[0]
    if args.quick:
        tiny = measure("tiny", 8, 64, reps, args.chunk)
        minilm = measure("minilm", 2, 16, reps, args.chunk)
    else:
        tiny = measure("tiny", 16, 256, reps, args.chunk)
        minilm = measure("minilm", 4, 64, reps, args.chunk)
    out = {
        "clients_per_s_loop": minilm["clients_per_s_loop"],
        "clients_per_s_batched": minilm["clients_per_s_batched"],
        "clients_per_s_speedup": minilm["clients_per_s_speedup"],
        "max_rel_diff": minilm["max_rel_diff"],
        "tiny_clients_per_s_loop": tiny["clients_per_s_loop"],
        "tiny_clients_per_s_batched": tiny["clients_per_s_batched"],
        "tiny_clients_per_s_speedup": tiny["clients_per_s_speedup"],
        "tiny_max_rel_diff": tiny["max_rel_diff"],
        "minilm": minilm,
        "tiny": tiny,
        "torch_threads": __import__("torch").get_num_threads(),
        "loadavg_1m_start": round(load, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "quick": args.quick,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
