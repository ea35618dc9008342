"""CKKS aggregation: securefl.he vs raw TenSEAL doing the same ckks_vector operations.

Workload: 10 clients × d values (d = 2^20; ``--quick``: 2^17, stated in the JSON), preset
``fast``. "Ours" = HEClient.encrypt ×10 + HEServer.aggregate + KeyHolder.decrypt (envelopes,
validation, release rounding, process pool over chunks). "Raw" = one process calling
ts.ckks_vector(...).serialize() per chunk, ckks_vector_from + add per chunk, decrypt per chunk.
Also measured: TenSEAL's n_threads and a thread pool vs a process pool for encryption, and the
download saving of the mod-switch (``weighted`` preset). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tenseal as ts

from securefl.he import HEClient, HEServer, KeyHolder
from securefl.he.context import unpack_context

N_CLIENTS = 10


def _interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, tuple[float, float]]:
    """Min wall and min CPU (this process) seconds per function, runs interleaved so that
    load from other processes on the shared machine hits all of them alike."""
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    return {name: (wall[name], cpu[name]) for name in fns}


def _chunks(x: np.ndarray, slots: int) -> list[np.ndarray]:
    return [x[i : i + slots] for i in range(0, x.shape[0], slots)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="d = 2^17 instead of 2^20")
    args = ap.parse_args()
    log_d = 17 if args.quick else 20
    reps = 3
    d = 2**log_d
    rng = np.random.default_rng(0)  # benchmark data only
    updates = [{"lora.A": rng.uniform(-1, 1, size=d)} for _ in range(N_CLIENTS)]

    ncpu = os.cpu_count() or 1  # the process pool is an explicit opt-in (issue 10 #4)
    kh = KeyHolder("fast", workers=ncpu)
    slots = kh.preset.slot_count
    public = kh.public_context_bytes()
    client = HEClient(public, workers=ncpu)
    server = HEServer(kh.server_context_bytes(), max_dimension=2**21)
    client1 = HEClient(public, workers=1)
    kh1 = KeyHolder.from_secret_context_bytes(kh.secret_context_bytes(), workers=1)

    def ours(c: HEClient, k: KeyHolder) -> dict[str, Any]:
        agg = server.aggregate([c.encrypt(u) for u in updates])
        return k.decrypt(agg)

    pub_ts = unpack_context(public, allow_insecure=False)[2]
    raw_pub = ts.context_from(pub_ts, n_threads=1)
    raw_sec = kh._ctx  # the same secret key, used directly through TenSEAL

    def raw() -> np.ndarray:
        uploads = [
            [ts.ckks_vector(raw_pub, c).serialize() for c in _chunks(u["lora.A"], slots)]
            for u in updates
        ]
        out = []
        for j in range(len(uploads[0])):
            acc = ts.ckks_vector_from(raw_pub, uploads[0][j])
            for up in uploads[1:]:
                acc.add_(ts.ckks_vector_from(raw_pub, up[j]))
            out.append(acc.serialize())
        return np.concatenate([ts.ckks_vector_from(raw_sec, b).decrypt() for b in out])

    ours(client, kh)  # warm the pool and caches
    times = _interleaved(
        {"raw": raw, "ours": lambda: ours(client, kh), "ours1": lambda: ours(client1, kh1)}, reps
    )
    t_raw, t_ours, t_ours1 = (times[k][0] for k in ("raw", "ours", "ours1"))
    want = sum(u["lora.A"] for u in updates)
    got = ours(client, kh)["lora.A"]

    up = client.encrypt(updates[0])
    down = server.aggregate([up, up])

    # encrypt 1M floats (the pool over chunks) — measured directly, interleaved
    mfloat = {"w": rng.uniform(-1, 1, size=2**20)}
    enc = _interleaved(
        {"pool": lambda: client.encrypt(mfloat), "single": lambda: client1.encrypt(mfloat)}, 2
    )
    t_enc_m, t_enc_m1 = enc["pool"][0], enc["single"][0]

    # what parallelises TenSEAL encryption here: n_threads, threads, or processes?
    sample = _chunks(mfloat["w"][: 32 * slots], slots)
    ctx_threads = ts.context_from(pub_ts, n_threads=os.cpu_count() or 1)
    with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        par = _interleaved(
            {
                "serial": lambda: [ts.ckks_vector(raw_pub, c).serialize() for c in sample],
                "n_threads": lambda: [ts.ckks_vector(ctx_threads, c).serialize() for c in sample],
                "threads": lambda: list(
                    ex.map(lambda c: ts.ckks_vector(raw_pub, c).serialize(), sample)
                ),
                "processes": lambda: client._encrypt_flat(mfloat["w"][: 32 * slots]),
            },
            3,
        )
    t_serial, t_nthreads, t_threads, t_procs = (
        par[k][0] for k in ("serial", "n_threads", "threads", "processes")
    )

    # mod-switch saving: the weighted preset uploads 2 primes, downloads 1
    khw = KeyHolder("weighted", workers=1)
    cw = HEClient(khw.public_context_bytes(), workers=1)
    small = {"w": rng.uniform(-1, 1, size=2**16)}
    upw = cw.encrypt(small)
    downw = HEServer(khw.server_context_bytes()).aggregate([upw, upw])
    khp = KeyHolder("precise", workers=1)
    upp = HEClient(khp.public_context_bytes(), workers=1).encrypt(small)
    client.close()
    kh.close()

    result = {
        "d": d,
        "d_note": "quick: d = 2^17 instead of 2^20" if args.quick else "d = 2^20",
        "clients": N_CLIENTS,
        "preset": "fast",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "overhead_vs_raw_tenseal": t_ours / t_raw,
        "overhead_vs_raw_tenseal_single_process": t_ours1 / t_raw,
        "overhead_vs_raw_tenseal_single_process_cpu": times["ours1"][1] / times["raw"][1],
        "ours_s": t_ours,
        "ours_single_process_s": t_ours1,
        "raw_tenseal_s": t_raw,
        "max_abs_error": float(np.max(np.abs(got - want))),
        "bytes_per_param_upload": len(up) / d,
        "bytes_per_param_download": len(down) / d,
        "encrypt_mfloat_s": t_enc_m,
        "encrypt_mfloat_single_process_s": t_enc_m1,
        "encrypt_speedup_tenseal_n_threads": t_serial / t_nthreads,
        "encrypt_speedup_thread_pool": t_serial / t_threads,
        "encrypt_speedup_process_pool": t_serial / t_procs,
        "weighted_bytes_per_param_upload": len(upw) / 2**16,
        "weighted_bytes_per_param_download": len(downw) / 2**16,
        "weighted_download_saving": 1 - len(downw) / len(upw),
        "precise_bytes_per_param_upload": len(upp) / 2**16,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
