"""An explicit, opt-in process pool over chunks (issue 10 #4: off by default).

TenSEAL holds the GIL while encrypting a CKKSVector, and its context ``n_threads`` only
parallelises CKKSTensor ops, so processes are what use all cores (measured in
``benchmarks/he_bench.py``: threads give no speed-up here). Each role owns its own
:class:`WorkerPool`; there is no module-level pool. With ``workers=1`` (the default) no process
is ever started, so the key holder's secret key stays in the calling process. ``workers > 1`` is
the caller's explicit opt-in: the key holder's workers then hold the secret key in memory too,
which its release metadata records (``secret_key_processes``).

Workers come from a ``forkserver`` (no inherited locks or threads of the caller, e.g. torch)
and load each context once and cache it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from securefl.errors import ConfigurationError

T = TypeVar("T")
#: Below this many chunks the pool's transfer/start cost outweighs the gain.
MIN_CHUNKS_FOR_POOL = 16


def resolve_workers(workers: int) -> int:
    """Validate an explicit worker count (1 = in-process, the default everywhere)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigurationError(
            "must be a positive int (1 = no worker processes)", parameter="workers"
        )
    return workers


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


class WorkerPool:
    """``workers`` processes, started on first use of ≥ MIN_CHUNKS_FOR_POOL chunks; never for 1."""

    def __init__(self, workers: int) -> None:
        self.workers = resolve_workers(workers)
        self._executor: ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def _get(self) -> ProcessPoolExecutor:
        if self._executor is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["securefl.he._ops"])
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._executor

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __del__(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False)

    def map_ranges(
        self,
        n_chunks: int,
        local: Callable[[int, int], T],
        remote: Callable[[int, int], tuple[Callable[..., T], Sequence[Any]]],
    ) -> list[T]:
        """Run ``local(start, stop)`` in-process, or ``remote`` tasks over chunk ranges.

        Two ranges per worker balance the load when other processes share the cores.
        """
        if self.workers <= 1 or n_chunks < MIN_CHUNKS_FOR_POOL:
            return [local(0, n_chunks)]
        pool = self._get()
        futures: list[Future[T]] = []
        for start, stop in split(n_chunks, 2 * self.workers):
            fn, args = remote(start, stop)
            futures.append(pool.submit(fn, *args))
        return [f.result() for f in futures]
