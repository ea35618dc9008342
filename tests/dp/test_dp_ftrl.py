"""DP-FTRL with tree aggregation (Kairouz et al. 2021): noise, schedule and accounting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from securefl.dp.accounting import get_accountant
from securefl.dp.errors import InvalidParameterError, SamplingMismatchError
from securefl.dp.events import DiscreteGaussianEvent, GaussianEvent, NoOpEvent
from securefl.dp.ftrl import (
    DpFtrlConfig,
    DpFtrlServer,
    TreeAggregator,
    max_node_load,
    released_nodes,
)
from securefl.dp.sampling import CryptoRandom


def _brute_force_load(rounds: int, sep: int, k: int, restart: int | None) -> int:
    """max Σ_v |P ∩ v|² over every participation set P the schedule allows, by enumeration."""
    nodes = released_nodes(rounds, restart)
    best = 0
    for n in range(1, k + 1):
        for p in itertools.combinations(range(1, rounds + 1), n):
            if any(b - a < sep for a, b in itertools.pairwise(p)):
                continue
            best = max(best, sum(sum(a <= x <= b for x in p) ** 2 for a, b in nodes))
    return best


def test_released_nodes_are_the_online_tree() -> None:
    assert released_nodes(8) == [(1, 1), (1, 2), (3, 3), (1, 4), (5, 5), (5, 6), (7, 7), (1, 8)]
    assert released_nodes(5, restart_every=2) == [(1, 1), (1, 2), (3, 3), (3, 4), (5, 5)]


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.integers(1, 11),
    sep=st.integers(1, 11),
    k=st.integers(1, 3),
    restart=st.sampled_from([None, 1, 2, 3, 4, 5, 8]),
)
def test_node_load_bounds_the_brute_force_sensitivity(
    rounds: int, sep: int, k: int, restart: int | None
) -> None:
    bound = max_node_load(rounds, min_separation=sep, max_participations=k, restart_every=restart)
    exact = _brute_force_load(rounds, sep, k, restart)
    assert bound >= exact  # sound
    if k == 1:
        assert bound == exact == max(1, 1 + int(math.log2(min(rounds, restart or rounds))))


@pytest.mark.parametrize("rounds", [1, 2, 3, 7, 8, 12])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_node_load_is_exact_for_one_participation_per_tree(rounds: int, k: int) -> None:
    """KMSTTX's epoch schedule: restart every R rounds, each client once per epoch."""
    for r in (1, 2, 3, 4):
        if rounds % r == 0:
            load = max_node_load(rounds, min_separation=r, max_participations=k, restart_every=r)
            assert load == _brute_force_load(rounds, r, k, r)
    # single participation: ⌈log₂(T + 1)⌉ nodes, KMSTTX Thm 4.1
    assert max_node_load(rounds, min_separation=1, max_participations=1) == math.ceil(
        math.log2(rounds + 1)
    )


def test_event_is_one_gaussian_with_the_tree_sensitivity() -> None:
    cfg = DpFtrlConfig(
        clip=1.0, noise_multiplier=2.0, expected_cohort=50, min_separation=1, max_participations=1
    )
    d, t = 10, 16
    ev = cfg.event(t, d)
    assert isinstance(ev, DiscreteGaussianEvent)
    load = 5  # ⌈log₂ 17⌉
    assert ev.l2_sensitivity == pytest.approx(cfg.grid_sensitivity(d) * math.sqrt(load))
    assert ev.sigma == cfg.grid_sigma(d) and ev.dimension == d * t
    z_eff = cfg.effective_noise_multiplier(t, d)
    assert z_eff == pytest.approx(ev.sigma / ev.l2_sensitivity)
    assert z_eff >= 2.0 / math.sqrt(load)
    # zCDP: the discrete event is charged exactly the continuous Gaussian's RDP at z_eff
    rdp = get_accountant("rdp")
    assert rdp.epsilon(ev, 1e-5) == pytest.approx(rdp.epsilon(GaussianEvent(z_eff), 1e-5))
    assert cfg.event(0, d) == NoOpEvent()
    node_z = DpFtrlConfig.node_noise_multiplier(1.0, t, min_separation=1, max_participations=1)
    assert node_z == pytest.approx(math.sqrt(load))


def test_prefix_noise_variance_matches_the_tree() -> None:
    """Zero inputs: S̃_t is the sum of popcount(t) node noises, each N_Z(0, σ²)^d, so
    Σ S̃_t²/(popcount(t)·σ²) over d coordinates is χ²(d) (σ = 40: Var N_Z = σ² to 1e-300).
    Two-sided test per t at α = 1e-6/T; also the prefix at t = 2^j − 1 has j independent
    node noises."""
    d, sigma, rounds = 4000, 40, 12
    tree = TreeAggregator(d, sigma)
    zeros = np.zeros(d, dtype=np.int64)
    alpha = 1e-6 / rounds
    lo, hi = chi2.ppf(alpha / 2, d), chi2.ppf(1 - alpha / 2, d)
    for t in range(1, rounds + 1):
        prefix = tree.add(zeros).astype(np.float64)
        stat = float((prefix**2).sum()) / (bin(t).count("1") * sigma**2)
        assert lo < stat < hi, (t, stat / d)


def test_prefix_sums_are_unbiased_and_restart() -> None:
    rng = np.random.default_rng(3)  # test data, not noise
    d, sigma = 50, 3
    xs = rng.integers(-1000, 1000, size=(10, d))
    tree = TreeAggregator(d, sigma, restart_every=4, rng=CryptoRandom(b"t" * 32))
    for t, x in enumerate(xs, start=1):
        start = 4 * ((t - 1) // 4)
        truth = xs[start:t].sum(axis=0)
        err = tree.add(x.astype(np.int64)) - truth
        assert float(np.abs(err).max()) <= 8 * sigma * math.sqrt(3)


@pytest.mark.parametrize("restart", [None, 2])
def test_server_releases_the_noisy_mean_delta(restart: int | None) -> None:
    cfg = DpFtrlConfig(
        clip=1.0,
        noise_multiplier=1e-4,  # tiny noise: check the arithmetic
        expected_cohort=4,
        min_separation=1,
        max_participations=10,
        restart_every=restart,
        frac_bits=20,
    )
    server = DpFtrlServer(cfg, 3)
    model = np.zeros(3)
    sums = [np.array([0.5, -1.0, 2.0]), np.array([1.0, 1.0, 1.0]), np.array([-2.0, 0.0, 0.25])]
    for i, s in enumerate(sums):
        model += server.add(s, participants=["a", "b"])
        truth = np.sum(sums[: i + 1], axis=0) / 4  # the deltas telescope across restarts
        assert np.abs(model - truth).max() < 1e-3
    if restart is None:
        assert np.allclose(model, server.noisy_prefix_mean())
    else:  # the third round opened a new tree
        assert np.allclose(server.noisy_prefix_mean(), sums[2] / 4, atol=1e-3)
    assert server.rounds == 3 and server.event() == cfg.event(3, 3)
    assert server.params()["noise_location"].startswith("central")


def test_int_grid_sums_from_secure_aggregation() -> None:
    cfg = DpFtrlConfig(1.0, 1e-4, 1, min_separation=1, max_participations=1, frac_bits=8)
    server = DpFtrlServer(cfg, 2)
    out = server.add(np.array([256, -512], dtype=np.int64), participants=[1])
    assert np.abs(out - np.array([1.0, -2.0])).max() < 0.1


def test_the_schedule_is_enforced_before_release() -> None:
    cfg = DpFtrlConfig(1.0, 1.0, 2, min_separation=3, max_participations=2)
    server = DpFtrlServer(cfg, 2)
    x = np.zeros(2)
    server.add(x, participants=["a"])
    server.add(x, participants=["b"])
    with pytest.raises(SamplingMismatchError):
        server.add(x, participants=["a"])  # round 3, separation 2 < 3
    assert server.rounds == 2  # nothing was released
    server.add(x, participants=["c"])
    server.add(x, participants=["a"])  # round 4: separation 3
    server.add(x, participants=["b"])  # round 5
    server.add(x, participants=["c"])  # round 6
    with pytest.raises(SamplingMismatchError):
        server.add(x, participants=["a"])  # round 7: third participation
    with pytest.raises(SamplingMismatchError):
        server.add(x, participants=["y", "y"])


def test_validation() -> None:
    with pytest.raises(InvalidParameterError) as info:
        DpFtrlConfig(1.0, 1.0, 2, min_separation=0, max_participations=1)
    assert info.value.parameter == "min_separation"
    server = DpFtrlServer(DpFtrlConfig(1.0, 1.0, 2, 1, 1), 3)
    for bad in (np.zeros(2), np.array([np.nan, 0, 0]), np.array(["a", "b", "c"])):
        with pytest.raises(InvalidParameterError):
            server.add(bad, participants=[1])
    with pytest.raises(InvalidParameterError):
        TreeAggregator(3, 2).add(np.zeros(3))  # float, not int64


def test_node_sums_beyond_the_int64_headroom_are_refused() -> None:
    tree = TreeAggregator(1, 1)
    big = np.array([(1 << 55) + 1], dtype=np.int64)
    tree.add(big)
    with pytest.raises(InvalidParameterError):
        tree.add(big)  # node [1, 2] = 2^56 + ... exceeds the headroom
