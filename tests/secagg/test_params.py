"""SecAgg+ parameter solver: agrees with fcp's table, meets its own bounds, explains refusals."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.errors import ConfigurationError
from securefl.secagg.params import (
    InfeasibleParametersError,
    bounds,
    complete_graph_parameters,
    min_threshold,
    solve_parameters,
)
from securefl.vocabulary import ThreatModel

NS = [100, 1000, 10**4, 10**5, 10**6]
# REFERENCE.md (Google fcp graph parameter finder; σ = 40, η = 20): (γ, δ, model) → [(k, t)].
TABLE = {
    (0.05, 0.05, "semi-honest"): [(12, 6), (30, 17), (34, 20), (36, 21), (38, 22)],
    (0.05, 0.05, "semi-malicious"): [(16, 11), (52, 37), (62, 44), (68, 48), (74, 52)],
    (0.05, 0.33, "semi-honest"): [(28, 6), (72, 24), (86, 29), (96, 32), (102, 34)],
    (0.33, 0.33, "semi-honest"): [(68, 34), (286, 150), (422, 221), (480, 251), (518, 270)],
}
CASES = [
    (g, d, m, n, k, t)
    for (g, d, m), row in TABLE.items()
    for n, (k, t) in zip(NS, row, strict=True)
]


@pytest.mark.parametrize(("gamma", "delta", "model", "n", "k_ref", "t_ref"), CASES)
def test_close_to_the_fcp_table_and_within_own_bounds(
    gamma: float, delta: float, model: str, n: int, k_ref: int, t_ref: int
) -> None:
    p = solve_parameters(n, gamma, delta, model=model)
    assert not p.complete_graph
    assert 0.67 * k_ref <= p.k <= 1.5 * k_ref  # stated tolerance
    assert 0.67 * t_ref <= p.t <= 1.5 * t_ref
    # Same method as fcp (exact hypergeometric tails): in fact we reproduce the table exactly.
    assert (p.k, p.t) == (k_ref, t_ref)
    sec, cor = bounds(n, p.k, p.t, gamma, delta, model)
    assert sec <= -p.sigma and cor <= -p.eta
    assert (sec, cor) == (p.log2_security_failure, p.log2_correctness_failure)


@given(
    n=st.integers(20, 5000),
    gamma=st.floats(0.0, 0.3),
    delta=st.floats(0.0, 0.3),
    model=st.sampled_from(["semi-honest", "semi-malicious"]),
)
def test_choice_is_minimal_and_satisfies_its_bounds(
    n: int, gamma: float, delta: float, model: str
) -> None:
    try:
        p = solve_parameters(n, gamma, delta, model=model)
    except InfeasibleParametersError as exc:
        assert str(exc)
        return
    # the config's threshold floor (spec §1) is exactly the solver's privacy rule
    floor = min_threshold(n, p.k, gamma, model=model)
    assert floor == p.t
    if p.complete_graph:
        assert p.k == n - 1
        return
    sec, cor = bounds(n, p.k, p.t, gamma, delta, model)
    assert sec <= -p.sigma and cor <= -p.eta
    assert p.k % 2 == 0 and 2 <= p.t <= p.k
    if p.t > 2:  # one less threshold would not be private enough
        assert bounds(n, p.k, p.t - 1, gamma, delta, model)[0] > -(p.sigma + 1) - 1e-9


def test_the_default_model_is_malicious_and_old_names_parse() -> None:
    """Issue 12 hole 5 / issue 10: the solver defaults to the malicious server (Bell et al.'s
    semi-malicious model); results record the vocabulary's canonical name."""
    default = solve_parameters(1000, 0.05, 0.05)
    old = solve_parameters(1000, 0.05, 0.05, model="semi-malicious")
    new = solve_parameters(1000, 0.05, 0.05, model=ThreatModel.MALICIOUS)
    assert default == old == new and default.model == "malicious"
    assert min_threshold(10, 9, 0.0) == 6  # t > n/2 by default


def test_semi_malicious_needs_more_than_semi_honest() -> None:
    honest = solve_parameters(1000, 0.05, 0.05, model="semi-honest")
    malicious = solve_parameters(1000, 0.05, 0.05, model="semi-malicious")
    assert malicious.k > honest.k and malicious.t > honest.t
    assert 2 * malicious.t > malicious.k  # shares of both types never both reach t


def test_complete_graph_rules() -> None:
    p = complete_graph_parameters(90, 0.1, 0.2, model="semi-honest")
    assert (p.k, p.t, p.complete_graph) == (89, 10, True)
    q = complete_graph_parameters(90, 0.1, 0.2, model="semi-malicious")
    assert q.t == (90 + 9) // 2 + 1 and q.t > (90 + 9) / 2
    assert q.t <= 90 - 18 - 1
    with pytest.raises(InfeasibleParametersError, match="survive"):
        complete_graph_parameters(10, 0.3, 0.3, model="semi-malicious")
    assert solve_parameters(50, 0.1, 0.1, complete_graph=True).complete_graph


def test_small_cohorts_fall_back_to_the_complete_graph() -> None:
    p = solve_parameters(7, 0.3, 0.3, model="semi-honest")
    assert p.complete_graph and (p.k, p.t) == (6, 3) and "no k < n−1" in p.rationale
    with pytest.raises(InfeasibleParametersError, match="complete graph fails too"):
        solve_parameters(10, 0.3, 0.6, model="semi-honest")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1000, 0.5, 0.5), {"model": "semi-honest"}, "0.9"),
        ((1000, 0.3, 0.31), {"model": "semi-malicious"}, "2δ"),
        ((1000, 1.0, 0.0), {}, "gamma"),
        ((1000, 0.1, -0.1), {}, "delta"),
        ((2, 0.1, 0.1), {}, "n"),
        ((1000, 0.1, 0.1), {"model": "evil"}, "model"),
        ((1000, 0.1, 0.1), {"sigma": 0}, "sigma"),
    ],
)
def test_infeasible_or_invalid_requests_say_why(
    args: tuple[int, float, float], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        solve_parameters(*args, **kwargs)  # type: ignore[arg-type]


def test_infeasible_is_a_configuration_error_with_a_reason() -> None:
    with pytest.raises(InfeasibleParametersError) as info:
        solve_parameters(30, 0.4, 0.6, model="semi-honest")
    assert "γ + δ" in str(info.value)
    assert issubclass(InfeasibleParametersError, ConfigurationError)


def test_to_dict_is_json_ready() -> None:
    d = solve_parameters(1000, 0.05, 0.05, model="semi-honest").to_dict()
    assert (
        d["k"] == 30 and d["model"] == "semi-honest" and math.isfinite(d["log2_security_failure"])
    )


def test_min_threshold_rules() -> None:
    assert min_threshold(10, 9, 0.2, model="semi-malicious") == 7  # t > (10 + 2)/2
    assert min_threshold(11, 10, 0.2, model="semi-malicious") == 7  # t > 6.5
    assert min_threshold(10, 9, 0.2, model="semi-honest") == 3  # t > 2
    assert min_threshold(10, 9, 0.0, model="semi-honest") == 2  # never below 2
    # a Harary graph where every neighbour could be corrupt: no threshold is private
    assert min_threshold(20, 4, 0.5, model="semi-honest") == 5
    for bad in ({"k": 0}, {"gamma": float("nan")}, {"gamma": True}, {"model": "evil"}):
        kw: dict[str, object] = {"n": 10, "k": 9, "gamma": 0.1, "model": "semi-honest", **bad}
        with pytest.raises(ConfigurationError):
            min_threshold(**kw)  # type: ignore[arg-type]
