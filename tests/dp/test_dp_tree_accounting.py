"""DP-FTRL tree increments (protocols/dp.md §3.2): RDP unchanged, PLD/PRV account each release
as ONE Gaussian with μ = √(2ρ_T) (checked against dp-accounting and Balle–Wang's analytic
Gaussian), never below the exact ε of a tiny discrete tree, and refused under sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.dp.accounting import RdpAccountant, calibrate_noise_multiplier, get_accountant
from securefl.dp.errors import InvalidParameterError, UnsupportedEventError
from securefl.dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DpEvent,
    GaussianEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
    TreeIncrementEvent,
    ZCDPEvent,
)
from securefl.dp.ftrl import DpFtrlConfig
from securefl.dp.sampling import discrete_gaussian_pmf
from securefl.dp.tree_accounting import merge_tree_releases, release_totals
from securefl.fl.mechanisms import ftrl_events
from securefl.fl.privacy import compose

DELTA = 1e-5
#: The default run's adapter dimension (MiniLM + LoRA r = 4, issue 13's table).
D_DEFAULT = 38416


def _conf(z: float, *, k: int = 1, b: int = 1, **kw: float) -> DpFtrlConfig:
    return DpFtrlConfig(
        clip=float(kw.get("clip", 0.5)),
        noise_multiplier=z,
        expected_cohort=32.0,
        min_separation=b,
        max_participations=k,
        frac_bits=int(kw.get("frac_bits", 16)),
    )


def _old_events(conf: DpFtrlConfig, d: int, rounds: int) -> list[DpEvent]:
    """What ftrl_round_event recorded before this change (zcdp growth, noop when flat)."""
    out: list[DpEvent] = []
    for t in range(1, rounds + 1):
        grow = conf.node_load(t) - conf.node_load(t - 1)
        if grow <= 0:
            out.append(NoOpEvent())
            continue
        sigma = float(conf.grid_sigma(d))
        sens = conf.grid_sensitivity(d)
        out.append(ZCDPEvent(rho=sens * sens * grow / (2.0 * sigma * sigma)))
    return out


def _rho(conf: DpFtrlConfig, d: int, rounds: int) -> float:
    return conf.grid_sensitivity(d) ** 2 * conf.node_load(rounds) / (2.0 * conf.grid_sigma(d) ** 2)


def _analytic_gaussian_epsilon(mu: float, delta: float) -> float:
    """Balle & Wang 2018 Thm 8: δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ), solved for ε."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def d_of(eps: float) -> float:
        return phi(mu / 2 - eps / mu) - math.exp(eps) * phi(-mu / 2 - eps / mu)

    lo, hi = 0.0, 1.0
    while d_of(hi) > delta:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if d_of(mid) > delta else (lo, mid)
    return hi


# ------------------------------------------------------------------------------ the event


def test_tree_increment_validates_and_keeps_the_zcdp_growth() -> None:
    e = TreeIncrementEvent(sigma=30.0, l2_sensitivity=3.0, dimension=4, load_increment=2)
    assert e.rho == 3.0 * 3.0 * 2 / (2.0 * 30.0 * 30.0)
    assert TreeIncrementEvent(30.0, 3.0, 4, 0).rho == 0.0
    for kw, name in [
        ({"load_increment": -1}, "load_increment"),
        ({"nodes": 0}, "nodes"),
        ({"sigma": 0.0}, "sigma"),
        ({"dimension": 0}, "dimension"),
    ]:
        args = {"sigma": 30.0, "l2_sensitivity": 3.0, "dimension": 4, "load_increment": 1}
        with pytest.raises(InvalidParameterError) as info:
            TreeIncrementEvent(**{**args, **kw})  # type: ignore[arg-type]
        assert getattr(info.value, "parameter", None) == name


# ----------------------------------------------- (a) supported, tighter than RDP (old: refused)


@pytest.mark.parametrize("accountant", ["pld", "prv"])
def test_default_ftrl_run_is_supported_and_tighter_than_rdp(accountant: str) -> None:
    """Default DP-FTRL run (10 rounds, k = b = 1, ε = 8 calibrated with RDP, d of MiniLM)."""
    d, rounds = D_DEFAULT, 10

    def events(z: float) -> DpEvent:
        return compose(ftrl_events(_conf(z), d, rounds))

    rdp = get_accountant("rdp")
    z = calibrate_noise_multiplier(8.0, DELTA, rounds=1, accountant="rdp", event_for=events)
    run = events(z)
    acc = get_accountant(accountant)
    assert acc.supports(run)
    eps_rdp = rdp.epsilon(run, DELTA)
    eps = acc.epsilon(run, DELTA)
    assert eps_rdp == pytest.approx(8.0, abs=0.02)
    assert eps < 0.95 * eps_rdp  # 7.44 vs 8.00 (pld)
    assert acc.delta(run, eps_rdp) < DELTA


# ------------------------------------------------- (b) one Gaussian with μ = √(2ρ_T), exactly


@pytest.mark.parametrize(("z", "rounds", "k", "b"), [(0.8, 10, 1, 1), (2.0, 64, 4, 8)])
def test_pld_is_the_gaussian_pld_at_mu_sqrt_2rho(z: float, rounds: int, k: int, b: int) -> None:
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    d = 1000
    conf = _conf(z, k=k, b=b)
    mu = math.sqrt(2.0 * _rho(conf, d, rounds))
    run = compose(ftrl_events(conf, d, rounds))
    reference = pld_lib.from_gaussian_mechanism(
        standard_deviation=1.0 / mu, sensitivity=1.0, value_discretization_interval=1e-3
    ).get_epsilon_for_delta(DELTA)
    eps = get_accountant("pld").epsilon(run, DELTA)
    assert eps == pytest.approx(reference, rel=1e-6)
    assert eps >= reference  # smoothing only ever adds
    exact = _analytic_gaussian_epsilon(mu, DELTA)
    assert exact <= eps <= exact + 5e-3
    prv = get_accountant("prv").epsilon(run, DELTA)
    assert exact <= prv <= exact + 0.011  # eps_error 0.01


# --------------------------------------- (c) never below the exact ε of a tiny discrete tree


def _exact_product_epsilon(sigma: int, shift: tuple[int, ...], delta: float) -> float:
    """ε(δ) of N_Z(0, σ²)^m vs N_Z(shift, σ²)^m, by brute force over ℤ^m (m ≤ 2)."""
    tail = 14 * sigma
    xs = np.arange(-tail, tail + 1)
    p1 = discrete_gaussian_pmf(xs, sigma)
    grids = np.meshgrid(*([xs] * len(shift)), indexing="ij")
    p = np.ones_like(grids[0], dtype=np.float64)
    q = np.ones_like(p)
    for axis, s in enumerate(shift):
        p = p * p1[grids[axis] + tail]
        q = q * discrete_gaussian_pmf(grids[axis] - s, sigma)

    def d_of(eps: float) -> float:
        return float(np.maximum(p - math.exp(eps) * q, 0.0).sum())

    lo, hi = 0.0, 1.0
    while d_of(hi) > delta:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if d_of(mid) > delta else (lo, mid)
    return lo


@pytest.mark.parametrize("z", [1.5, 2.0, 4.0])
def test_pld_never_below_the_exact_epsilon_of_a_tiny_tree(z: float) -> None:
    """T = 3, d = 1, Δ = 2 (clip 1, f = 0, +√d), one participation: joining in round 1 moves
    nodes [1,1] and [1,2] by up to Δ each — the worst pair (S_3 = 2). Its exact hockey-stick
    ε lower-bounds the true mechanism's ε; every accountant must stay at or above it."""
    conf = _conf(z, clip=1.0, frac_bits=0)
    d, rounds = 1, 3
    delta_grid, sigma = int(conf.grid_sensitivity(d)), conf.grid_sigma(d)
    assert (delta_grid, conf.node_load(rounds)) == (2, 2)
    worst = _exact_product_epsilon(sigma, (delta_grid, delta_grid), 1e-3)
    assert worst >= _exact_product_epsilon(sigma, (delta_grid,), 1e-3)  # round 3 alone
    run = compose(ftrl_events(conf, d, rounds))
    for name in ("pld", "prv", "rdp"):
        eps = get_accountant(name).epsilon(run, 1e-3)
        assert eps >= worst, name
    assert get_accountant("pld").epsilon(run, 1e-3) <= 1.05 * worst  # 4 % at σ = 3


# ------------------------------------------------------------------------ (d) RDP unchanged


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.integers(1, 60),
    z=st.floats(0.3, 5.0),
    k=st.integers(1, 5),
    b=st.integers(1, 9),
)
def test_rdp_is_bit_identical_to_the_former_zcdp_events(
    rounds: int, z: float, k: int, b: int
) -> None:
    conf = _conf(z, k=k, b=b)
    d = 257
    new, old = ftrl_events(conf, d, rounds), _old_events(conf, d, rounds)
    acc = RdpAccountant()
    assert acc.epsilon(compose(new), DELTA) == acc.epsilon(compose(old), DELTA)
    assert np.array_equal(acc.rdp(compose(new)), acc.rdp(compose(old)))
    assert not get_accountant("pld").supports(compose(old))  # old ledgers: as before


# --------------------------------------------- (e) PLD ≤ RDP and monotone in rounds (property)


@settings(max_examples=30, deadline=None)
@given(
    rounds=st.integers(1, 40),
    z=st.floats(0.5, 8.0),
    b=st.integers(1, 6),
    k=st.integers(1, 4),
)
def test_pld_below_rdp_and_monotone_in_rounds(rounds: int, z: float, b: int, k: int) -> None:
    conf = _conf(z, k=k, b=b)
    d = 64
    events = ftrl_events(conf, d, rounds + 1)
    pld, rdp = get_accountant("pld"), get_accountant("rdp")
    eps_t = pld.epsilon(compose(events[:rounds]), DELTA)
    eps_next = pld.epsilon(compose(events), DELTA)
    assert eps_t <= rdp.epsilon(compose(events[:rounds]), DELTA)
    assert eps_next >= eps_t


# ------------------------------------------------------------- composition and grouping


def test_increments_are_summed_per_release_in_any_grouping() -> None:
    """Ledger order, grouping by identical text (audit.spend), nesting: one release each."""
    conf_a, conf_b = _conf(1.0), _conf(3.0, k=2, b=3)
    d = 100
    a, b = ftrl_events(conf_a, d, 12), ftrl_events(conf_b, d, 20)
    other = PoissonSampledEvent(0.1, GaussianEvent(1.2))
    pld = get_accountant("pld")
    expected = ComposedEvent(
        (
            SelfComposedEvent(other, 5),
            DiscreteGaussianEvent(
                float(conf_a.grid_sigma(d)),
                conf_a.grid_sensitivity(d) * math.sqrt(conf_a.node_load(12)),
                d * 12,
            ),
            DiscreteGaussianEvent(
                float(conf_b.grid_sigma(d)),
                conf_b.grid_sensitivity(d) * math.sqrt(conf_b.node_load(20)),
                d * 20,
            ),
        )
    )
    interleaved = [x for pair in zip(a, b[:12], strict=True) for x in pair] + b[12:]
    shapes = [
        compose([*interleaved, *[other] * 5]),
        ComposedEvent((SelfComposedEvent(other, 5), compose(b), compose(a))),
        ComposedEvent((compose(a[:6]), other, compose([*a[6:], *b]), SelfComposedEvent(other, 4))),
    ]
    want = pld.epsilon(expected, DELTA)
    for shape in shapes:
        assert release_totals(shape) == {
            (float(conf_a.grid_sigma(d)), conf_a.grid_sensitivity(d), d): (
                conf_a.node_load(12),
                12,
            ),
            (float(conf_b.grid_sigma(d)), conf_b.grid_sensitivity(d), d): (
                conf_b.node_load(20),
                20,
            ),
        }
        assert pld.epsilon(shape, DELTA) == pytest.approx(want, rel=1e-9)
    assert merge_tree_releases(other) is other


def test_sampled_increments_are_refused_by_every_accountant() -> None:
    """An increment is not a mechanism of its own round (k = 2, b = 1: S_1 = 1, S_2 = 1 + 4,
    so round 2 records 4), so no sampling wrapper may amplify it, not even with q = 1."""
    conf = _conf(1.0, k=2, b=1)
    d = 10
    events = ftrl_events(conf, d, 2)
    assert [e.load_increment for e in events if isinstance(e, TreeIncrementEvent)] == [1, 4]
    for name in ("pld", "prv", "rdp"):
        acc = get_accountant(name)
        for wrapped in (
            PoissonSampledEvent(0.5, compose(events)),
            SelfComposedEvent(PoissonSampledEvent(0.5, events[0]), 2),
        ):
            assert not acc.supports(wrapped)
            with pytest.raises(UnsupportedEventError, match="tree increment"):
                acc.epsilon(wrapped, DELTA)
    wor = SampledWithoutReplacementEvent(10, 5, events[1])
    rdp = get_accountant("rdp", neighboring="replace_one")
    assert not rdp.supports(wor)
    for name in ("pld", "prv", "rdp"):  # even q = 1: a wrapper claims a per-round mechanism
        assert not get_accountant(name).supports(PoissonSampledEvent(1.0, events[0]))


def test_zero_growth_rounds_still_count_their_node() -> None:
    """A flat round releases a node: it adds d coordinates (smoothing slack), not load."""
    conf = _conf(1.0)
    events = ftrl_events(conf, 5, 3)
    assert [e.load_increment for e in events if isinstance(e, TreeIncrementEvent)] == [1, 1, 0]
    merged = merge_tree_releases(compose(events))
    assert isinstance(merged, ComposedEvent)
    leaf = merged.events[-1]
    assert isinstance(leaf, DiscreteGaussianEvent) and leaf.dimension == 15
    only_flat = merge_tree_releases(events[2])
    assert get_accountant("pld").epsilon(only_flat, DELTA) == 0.0


def test_readers_of_recorded_events_know_the_tree_increment() -> None:
    """A node's noise floor sees σ/Δ per node and participation; the threat model calls the
    tree's noise central (the server adds it and sees the noiseless sums)."""
    from securefl.audit.threat_model import dp_mode
    from securefl.engine.node_policy import _leaf_noise

    inc = TreeIncrementEvent(300.0, 100.0, 8, 1).to_dict()
    nested = SelfComposedEvent(TreeIncrementEvent(300.0, 100.0, 8, 0), 3).to_dict()
    assert list(_leaf_noise(inc)) == [3.0] and list(_leaf_noise(nested)) == [3.0]
    assert dp_mode({"discrete_gaussian_tree_increment"}, set()) == "central"
