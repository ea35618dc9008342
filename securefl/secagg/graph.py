"""SecAgg+ neighbour graph from shared public randomness (Bell et al. CCS 2020, §3.3 / §4).

Each client talks only to its neighbours in a random k-regular graph: a Harary graph H(k, n)
(nodes on a ring, each joined to the k/2 nearest on either side) whose nodes are relabelled by a
uniformly random permutation. The permutation comes from an AES-256-CTR stream keyed by
HKDF-SHA256 of the session id, so every party computes the same graph without talking, and no
party can pick its neighbours. The complete graph (k = None or k ≥ n−1) is classic SecAgg.
An odd k is rounded up to k+1 so that the Harary graph is exactly regular.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from securefl.crypto.drbg import CtrDrbg
from securefl.crypto.kdf import LABEL_NEIGHBOUR_GRAPH, derive_key
from securefl.secagg.config import SecAggConfig

_CACHE: OrderedDict[bytes, dict[int, tuple[int, ...]]] = OrderedDict()
_CACHE_SIZE = 8


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


def graph_seed(config: SecAggConfig) -> bytes:
    """Shared public randomness: HKDF(ikm = session id, label ``neighbour-graph``, ids 0, 0)."""
    return derive_key(
        config.session_id,
        label=LABEL_NEIGHBOUR_GRAPH,
        session_id=config.session_id,
        round_index=config.round_index,
        party_a=0,
        party_b=0,
    )


def permutation(ids: tuple[int, ...], seed: bytes) -> list[int]:
    """Fisher–Yates shuffle of ``ids`` driven by the AES-CTR stream keyed by ``seed``."""
    order = list(ids)
    stream = _Stream(seed)
    for i in range(len(order) - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def build_graph(config: SecAggConfig) -> dict[int, tuple[int, ...]]:
    """Client id → sorted tuple of its neighbours (never itself)."""
    ids = config.client_ids
    if config.is_complete:
        return {u: ids[:i] + ids[i + 1 :] for i, u in enumerate(ids)}
    half = config.neighbour_count // 2
    order = permutation(ids, graph_seed(config))
    n = len(order)
    out: dict[int, tuple[int, ...]] = {}
    for p, u in enumerate(order):
        near = {order[(p + j) % n] for j in range(1, half + 1)}
        near.update(order[(p - j) % n] for j in range(1, half + 1))
        out[u] = tuple(sorted(near))
    return out


def neighbours(config: SecAggConfig) -> Mapping[int, tuple[int, ...]]:
    """Cached :func:`build_graph` (keyed by session id, which binds ids and k)."""
    key = config.session_id
    graph = _CACHE.get(key)
    if graph is None:
        graph = build_graph(config)
        _CACHE[key] = graph
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return graph
