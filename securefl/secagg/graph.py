"""SecAgg+ neighbour graph from shared public randomness (Bell et al. CCS 2020, §3.3 / §4).

Each client talks only to its neighbours in a random k-regular graph: a Harary graph H(k, n)
(nodes on a ring, each joined to the k/2 nearest on either side) whose nodes are relabelled by a
uniformly random permutation. The permutation comes from an AES-256-CTR stream keyed by
HKDF-SHA256 of the session id, so every party computes the same graph without talking, and no
party can pick its neighbours. The complete graph (k = None or k ≥ n−1) is classic SecAgg.
An odd k is rounded up to k+1 so that the Harary graph is exactly regular.

The graph is a pure function of (graph seed, client ids, k): :func:`neighbours` memoises that
function in a bounded LRU cache (:data:`GRAPH_CACHE_SIZE` graphs) and hands out read-only views,
so every party object of one round shares one graph and nothing else is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

from securefl.crypto.drbg import CtrDrbg
from securefl.secagg.config import SecAggConfig
from securefl.secagg.derive import graph_seed

#: Graphs kept by :func:`neighbours` (a few concurrent rounds; one graph per round is needed).
GRAPH_CACHE_SIZE = 8


class _Stream:
    """Uniform integers from the AES-256-CTR DRBG (rejection sampling: no modulo bias).

    Words are read 1024 at a time (4 KiB of keystream); consecutive little-endian uint32s.
    """

    def __init__(self, key: bytes) -> None:
        self._drbg = CtrDrbg(key)
        self._buf: list[int] = []
        self._pos = 0

    def _word(self) -> int:
        if self._pos >= len(self._buf):
            self._buf = self._drbg.uint32(1024).tolist()
            self._pos = 0
        w = self._buf[self._pos]
        self._pos += 1
        return w

    def below(self, bound: int) -> int:
        """Uniform integer in [0, bound) for 1 ≤ bound ≤ 2^32."""
        limit = (1 << 32) - ((1 << 32) % bound)
        while True:
            w = self._word()
            if w < limit:
                return w % bound


def permutation(ids: tuple[int, ...], seed: bytes) -> list[int]:
    """Fisher–Yates shuffle of ``ids`` driven by the AES-CTR stream keyed by ``seed``."""
    order = list(ids)
    stream = _Stream(seed)
    for i in range(len(order) - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def graph_from_seed(
    seed: bytes, ids: tuple[int, ...], degree: int | None
) -> dict[int, tuple[int, ...]]:
    """Client id → sorted tuple of its neighbours (never itself): the Harary graph H(degree, n)
    relabelled by the permutation of ``seed``, or the complete graph if ``degree`` is None."""
    if degree is None:
        return {u: ids[:i] + ids[i + 1 :] for i, u in enumerate(ids)}
    half = degree // 2
    order = permutation(ids, seed)
    n = len(order)
    out: dict[int, tuple[int, ...]] = {}
    for p, u in enumerate(order):
        near = {order[(p + j) % n] for j in range(1, half + 1)}
        near.update(order[(p - j) % n] for j in range(1, half + 1))
        out[u] = tuple(sorted(near))
    return out


def _graph_key(config: SecAggConfig) -> tuple[bytes, tuple[int, ...], int | None]:
    degree = None if config.is_complete else config.neighbour_count
    seed = b"" if degree is None else graph_seed(config)
    return seed, config.client_ids, degree


def build_graph(config: SecAggConfig) -> dict[int, tuple[int, ...]]:
    """Client id → sorted tuple of its neighbours (never itself), computed afresh."""
    return graph_from_seed(*_graph_key(config))


@functools.lru_cache(maxsize=GRAPH_CACHE_SIZE)
def _cached_graph(
    seed: bytes, ids: tuple[int, ...], degree: int | None
) -> Mapping[int, tuple[int, ...]]:
    return MappingProxyType(graph_from_seed(seed, ids, degree))


def neighbours(config: SecAggConfig) -> Mapping[int, tuple[int, ...]]:
    """:func:`build_graph` through a bounded LRU cache; the result is read-only."""
    return _cached_graph(*_graph_key(config))


def graph_cache_info() -> functools._CacheInfo:
    """Hits, misses and current size of the graph cache (bounded by GRAPH_CACHE_SIZE)."""
    return _cached_graph.cache_info()
