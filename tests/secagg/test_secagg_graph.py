"""SecAgg+ neighbour graph: regular, symmetric, loop-free, the same at every party, derived
from the session id (so it changes with the round), complete for k = None or k ≥ n − 1."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from securefl.secagg import neighbours, simulation_config
from securefl.secagg.graph import build_graph, permutation


@given(st.integers(3, 60), st.integers(2, 70), st.integers(0, 3))
def test_regular_symmetric(n: int, k: int, round_index: int) -> None:
    cfg = simulation_config(
        range(1, n + 1),
        threshold=2,
        bits=8,
        dimension=1,
        degree=k,
        round_index=round_index,
        threat_model="semi-honest",  # t = 2 for any graph: the topology is what is tested
    )
    g = neighbours(cfg)
    assert set(g) == set(cfg.client_ids)
    expect = cfg.neighbour_count
    for u, nb in g.items():
        assert u not in nb and len(nb) == len(set(nb)) == expect
        assert list(nb) == sorted(nb)
        for v in nb:
            assert u in g[v]
    if k >= n - 1:
        assert cfg.is_complete and expect == n - 1
    assert build_graph(cfg) == dict(g)  # recomputed independently: same graph


def test_graph_changes_with_session() -> None:
    ids = range(1, 41)
    kw = {"threshold": 2, "bits": 8, "dimension": 1, "degree": 6, "threat_model": "semi-honest"}
    a = simulation_config(ids, **kw)  # type: ignore[arg-type]
    b = simulation_config(ids, round_index=1, **kw)  # type: ignore[arg-type]
    assert dict(neighbours(a)) != dict(neighbours(b))


def test_permutation_is_roughly_uniform() -> None:
    """Position of element 0 over 3000 seeds, 6 slots: chi-square, α = 1e-6."""
    from scipy import stats

    counts = [0] * 6
    for s in range(3000):
        order = permutation(tuple(range(6)), s.to_bytes(32, "little"))
        counts[order.index(0)] += 1
    assert stats.chisquare(counts).pvalue > 1e-6
