"""A process pool over chunks: TenSEAL holds the GIL while encrypting a CKKSVector, and its
context ``n_threads`` only parallelises CKKSTensor ops, so processes are what use all cores
(measured in ``benchmarks/he_bench.py``: threads give no speed-up here).

Workers come from a ``forkserver`` (no inherited locks or threads of the caller, e.g. torch),
load each context once and cache it. The key holder's workers therefore hold the secret key in
memory; ``workers=1`` keeps it in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from securefl.errors import ConfigurationError

T = TypeVar("T")
#: Below this many chunks the pool's transfer/start cost outweighs the gain.
MIN_CHUNKS_FOR_POOL = 16
_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigurationError("must be a positive int or None", parameter="workers")
    return workers


def _pool(size: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or size != _POOL_SIZE:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["securefl.he._ops"])
        _POOL, _POOL_SIZE = ProcessPoolExecutor(max_workers=size, mp_context=ctx), size
    return _POOL


def shutdown() -> None:
    """Stop the worker processes (they are also stopped at interpreter exit)."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """Split range(n) into ≤ parts contiguous, near-equal [start, stop) ranges."""
    parts = max(1, min(parts, n))
    step, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        stop = start + step + (1 if k < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def map_ranges(
    n_chunks: int,
    workers: int,
    local: Callable[[int, int], T],
    remote: Callable[[int, int], tuple[Callable[..., T], Sequence[Any]]],
) -> list[T]:
    """Run ``local(start, stop)`` in-process, or ``remote`` tasks over chunk ranges in the pool.

    Two ranges per worker balance the load when other processes share the cores.
    """
    if workers <= 1 or n_chunks < MIN_CHUNKS_FOR_POOL:
        return [local(0, n_chunks)]
    pool = _pool(workers)
    futures: list[Future[T]] = []
    for start, stop in split(n_chunks, 2 * workers):
        fn, args = remote(start, stop)
        futures.append(pool.submit(fn, *args))
    return [f.result() for f in futures]
