"""SecAgg+ parameter solver: neighbour degree k and Shamir threshold t (Bell et al., CCS 2020).

Model (Bell et al. 2020, §3–4 and App. C; the method of Google's fcp parameter finder): the
graph is a Harary graph H(k, n) (even k) relabelled by a uniformly random permutation; at most
``A = ⌊γn⌋`` clients are corrupt and at most ``D = ⌊δn⌋`` drop out, both chosen *independently
of the graph* (the permutation is drawn after the cohort is fixed). Then the neighbours of a
client are a uniform k-subset of the others, so its corrupt neighbours X ~ Hyp(n−1, A, k) and its
surviving neighbours Y ~ Hyp(n−1, n−D−1, k). The solver takes the smallest even k with

* **connectivity** — the honest survivors' subgraph stays connected: removing nodes disconnects
  H(k, n) only through two gaps of k/2 consecutive removed nodes; union bound over the
  ≤ n(n−k−1)/2 gap pairs: ``n(n−k−1)/2 · (B)_k/(n)_k ≤ 2^−(σ+1)``, B = A + D;
* **privacy** — no honest client's secrets can be rebuilt by corrupt neighbours:
  ``n · P[X ≥ t] ≤ 2^−(σ+1)`` (semi-honest), or, since a semi-malicious server can collect
  self-mask shares and mask-key shares from *different* honest neighbours,
  ``n · P[X ≥ 2t − k] ≤ 2^−(σ+1)`` (semi-malicious);
* **correctness** — every surviving client keeps t live neighbours: ``n · P[Y < t] ≤ 2^−η``;

and the smallest such t (cheapest reconstruction). Total security failure ≤ 2^−σ. The complete
graph (classic SecAgg, Bonawitz et al. 2017) uses k = n−1 and the deterministic rules
t > A (semi-honest) or t > (n + A)/2 (semi-malicious) with t ≤ n − D − 1.
Feasibility needs γ + δ ≤ 0.9 (semi-honest) or γ + 2δ ≤ 0.9 (semi-malicious), as in the paper.
The paper's semi-malicious model is :attr:`ThreatModel.MALICIOUS` (the default, its canonical
spelling "malicious" is what results record); "semi-malicious" still parses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.vocabulary import MAX_CLIENTS, ThreatModel

#: Largest sum γ + δ (semi-honest) or γ + 2δ (semi-malicious) the paper's analysis admits.
MAX_BAD_FRACTION = 0.9
_LN2 = math.log(2.0)
_EPS = 1e-12  # guards ⌊γn⌋ against float noise (0.29·100 = 28.999…)

__all__ = [
    "InfeasibleParametersError",
    "SecAggParams",
    "bounds",
    "complete_graph_parameters",
    "min_threshold",
    "solve_parameters",
]


class InfeasibleParametersError(ConfigurationError):
    """No (k, t) meets the requested security and failure probabilities; says why."""


@dataclass(frozen=True)
class SecAggParams:
    """Solver result; ``log2_*`` are the achieved bounds (log2 of probabilities)."""

    n: int
    k: int
    t: int
    gamma: float
    delta: float
    sigma: float
    eta: float
    model: str
    complete_graph: bool
    rationale: str
    log2_security_failure: float = -math.inf
    log2_correctness_failure: float = -math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log_hyp_pmf(population: int, successes: int, draws: int) -> npt.NDArray[np.float64]:
    """ln P[X = x] for x = 0..draws, X ~ Hypergeometric (−inf where impossible)."""
    out = np.full(draws + 1, -np.inf)
    lo = max(0, draws - (population - successes))
    hi = min(draws, successes)
    if lo > hi:
        return out

    def lchoose(a: int, b: int) -> float:
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

    first = (
        lchoose(successes, lo)
        + lchoose(population - successes, draws - lo)
        - lchoose(population, draws)
    )
    x = np.arange(lo, hi, dtype=np.float64)
    ratio = (successes - x) * (draws - x) / ((x + 1) * (population - successes - draws + x + 1))
    out[lo : hi + 1] = first + np.concatenate(([0.0], np.cumsum(np.log(ratio))))
    return out


def _log_upper_tails(logp: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """ln P[X ≥ x] for x = 0..len−1."""
    return np.logaddexp.accumulate(logp[::-1])[::-1]


def _log_lower_tails(logp: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """ln P[X ≤ x] for x = 0..len−1."""
    return np.logaddexp.accumulate(logp)


def _counts(n: int, gamma: float, delta: float) -> tuple[int, int]:
    return math.floor(gamma * n + _EPS), math.floor(delta * n + _EPS)


def _log2_disconnect(n: int, k: int, bad: int) -> float:
    """log2 of the union bound on the honest-survivor subgraph of H(k, n) disconnecting."""
    if k > bad:
        return -math.inf
    pairs = n * (n - k - 1) / 2
    if pairs <= 0:
        return -math.inf
    ln = (
        math.log(pairs)
        + math.lgamma(bad + 1)
        - math.lgamma(bad - k + 1)
        + math.lgamma(n - k + 1)
        - math.lgamma(n + 1)
    )
    return ln / _LN2


def _model(model: ThreatModel | str) -> ThreatModel:
    """The threat model; Bell et al.'s "semi-malicious" is :attr:`ThreatModel.MALICIOUS`."""
    return ThreatModel.parse(model, parameter="model")


def bounds(
    n: int, k: int, t: int, gamma: float, delta: float, model: ThreatModel | str
) -> tuple[float, float]:
    """(log2 security failure, log2 correctness failure) of a random-Harary (k, t) choice.

    Security failure sums the connectivity and privacy union bounds; both are upper bounds.
    """
    corrupt, dropped = _counts(n, gamma, delta)
    others = n - 1
    log_x = _log_upper_tails(_log_hyp_pmf(others, corrupt, k))
    need = t if _model(model) is ThreatModel.SEMI_HONEST else 2 * t - k
    priv = -math.inf if need > k else float(log_x[max(need, 0)]) + math.log(n)
    log_y = _log_lower_tails(_log_hyp_pmf(others, max(n - dropped - 1, 0), k))
    corr = -math.inf if t <= 0 else float(log_y[min(t - 1, k)]) + math.log(n)
    sec = float(np.logaddexp(priv, _log2_disconnect(n, k, corrupt + dropped) * _LN2))
    return sec / _LN2, min(corr / _LN2, 0.0)


def min_threshold(
    n: int,
    k: int,
    gamma: float,
    *,
    model: ThreatModel | str = ThreatModel.MALICIOUS,
    sigma: float = 40.0,
) -> int:
    """Smallest Shamir threshold t that keeps every honest client private (may exceed k).

    The privacy half of the rules above, for a graph that is already fixed: complete graph
    (k ≥ n − 1): t > A (semi-honest) or t > (n + A)/2 (semi-malicious: a malicious server
    collects self-mask shares and mask-key shares from *disjoint* honest neighbours, Bell et al.
    2020 §4 / Bonawitz et al. 2017 §6.2); random Harary graph: the smallest t with
    n·P[X ≥ t] ≤ 2^−(σ+1), resp. t = ⌈(t_priv + k)/2⌉ so that n·P[X ≥ 2t − k] ≤ 2^−(σ+1).
    Never below 2. A result > k means no threshold is private for this (n, k, γ).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigurationError("must be a positive integer", parameter="k")
    honest = _validate(n, gamma, 0.0, sigma, 20.0, model, check_load=False)
    corrupt, _ = _counts(n, gamma, 0.0)
    if k >= n - 1:
        if honest:
            return max(corrupt + 1, 2)
        return max((n + corrupt) // 2 + 1, 2)
    upper = _log_upper_tails(_log_hyp_pmf(n - 1, corrupt, k))
    ok = np.flatnonzero(upper <= -(sigma + 1) * _LN2 - math.log(n))
    t_priv = int(ok[0]) if ok.size else k + 1
    t = t_priv if honest else math.ceil((t_priv + k) / 2)
    return max(t, 2)


def _validate(
    n: int,
    gamma: float,
    delta: float,
    sigma: float,
    eta: float,
    model: ThreatModel | str,
    *,
    check_load: bool = True,
) -> bool:
    """Validate the inputs; True for the semi-honest model."""
    if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_CLIENTS:
        raise ConfigurationError(f"must be an integer in [3, {MAX_CLIENTS}]", parameter="n")
    for name, value in (("gamma", gamma), ("delta", delta)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0.0 <= float(value) < 1.0)
        ):
            raise ConfigurationError("must be a fraction in [0, 1)", parameter=name)
    for name, value in (("sigma", sigma), ("eta", eta)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (1.0 <= float(value) <= 256.0)
        ):
            raise ConfigurationError("must be a number of bits in [1, 256]", parameter=name)
    honest = _model(model) is ThreatModel.SEMI_HONEST
    load = gamma + delta if honest else gamma + 2 * delta
    if check_load and load > MAX_BAD_FRACTION + _EPS:
        what = "γ + δ" if honest else "γ + 2δ"
        raise InfeasibleParametersError(
            f"{what} = {load:.3g} > {MAX_BAD_FRACTION}: in the {_model(model).value} model too "
            "few honest survivors remain for any threshold to be both private and live "
            "(Bell et al. 2020)",
            parameter="gamma",
        )
    return honest


def complete_graph_parameters(
    n: int,
    gamma: float,
    delta: float,
    *,
    sigma: float = 40.0,
    eta: float = 20.0,
    model: ThreatModel | str = ThreatModel.MALICIOUS,
) -> SecAggParams:
    """Classic SecAgg: k = n−1, the smallest deterministic t (no probability involved)."""
    honest = _validate(n, gamma, delta, sigma, eta, model)
    name = _model(model).value
    corrupt, dropped = _counts(n, gamma, delta)
    live_neighbours = n - dropped - 1
    if honest:
        t, rule = max(corrupt + 1, 2), f"t > A = {corrupt} corrupt clients"
    else:
        t, rule = max((n + corrupt) // 2 + 1, 2), f"t > (n + A)/2 = {(n + corrupt) / 2:g}"
    if t > live_neighbours:
        raise InfeasibleParametersError(
            f"complete graph: {rule} needs t = {t} but only {live_neighbours} neighbours "
            f"survive {dropped} dropouts",
            parameter="delta",
        )
    return SecAggParams(
        n=n,
        k=n - 1,
        t=t,
        gamma=float(gamma),
        delta=float(delta),
        sigma=float(sigma),
        eta=float(eta),
        model=name,
        complete_graph=True,
        rationale=(
            f"complete graph (SecAgg), {name}: {rule}; t ≤ n − D − 1 = {live_neighbours} "
            "live neighbours; both hold deterministically"
        ),
    )


def solve_parameters(
    n: int,
    gamma: float,
    delta: float,
    *,
    sigma: float = 40.0,
    eta: float = 20.0,
    model: ThreatModel | str = ThreatModel.MALICIOUS,
    complete_graph: bool = False,
) -> SecAggParams:
    """Smallest even k (random Harary graph) and smallest t meeting the bounds above.

    Falls back to the complete graph when no k < n − 1 works (small n); raises
    :class:`InfeasibleParametersError` explaining which bound fails otherwise.
    """
    honest = _validate(n, gamma, delta, sigma, eta, model)
    if complete_graph:
        return complete_graph_parameters(n, gamma, delta, sigma=sigma, eta=eta, model=model)
    corrupt, dropped = _counts(n, gamma, delta)
    ln_sec = -(sigma + 1) * _LN2 - math.log(n)  # per-client share of the privacy budget
    ln_cor = -eta * _LN2 - math.log(n)
    why = "no even k < n − 1 exists"
    for k in range(2, n - 1, 2):
        if _log2_disconnect(n, k, corrupt + dropped) > -(sigma + 1):
            why = f"k = {k}: honest survivors' graph may disconnect"
            continue
        upper = _log_upper_tails(_log_hyp_pmf(n - 1, corrupt, k))
        ok = np.flatnonzero(upper <= ln_sec)
        if ok.size == 0:
            why = f"k = {k}: corrupt neighbours may reach every threshold"
            continue
        t_priv = int(ok[0])  # smallest t with n·P[X ≥ t] ≤ 2^−(σ+1)
        t = t_priv if honest else math.ceil((t_priv + k) / 2)
        t = max(t, 2)
        lower = _log_lower_tails(_log_hyp_pmf(n - 1, max(n - dropped - 1, 0), k))
        if t > k or lower[t - 1] > ln_cor:
            why = f"k = {k}: t = {t} leaves too few live neighbours with probability > 2^−{eta:g}"
            continue
        sec, cor = bounds(n, k, t, gamma, delta, model)
        return SecAggParams(
            n=n,
            k=k,
            t=t,
            gamma=float(gamma),
            delta=float(delta),
            sigma=float(sigma),
            eta=float(eta),
            model=_model(model).value,
            complete_graph=False,
            rationale=(
                f"smallest even k with: P[honest survivors disconnected] ≤ 2^−{sigma + 1:g}; "
                f"n·P[corrupt neighbours ≥ {'t' if honest else '2t−k'}] "
                f"≤ 2^−{sigma + 1:g}; n·P[live neighbours < t] ≤ 2^−{eta:g} "
                f"(A = {corrupt} corrupt, D = {dropped} dropped, hypergeometric tails); "
                f"achieved 2^{sec:.1f} / 2^{cor:.1f}"
            ),
            log2_security_failure=sec,
            log2_correctness_failure=cor,
        )
    try:
        params = complete_graph_parameters(n, gamma, delta, sigma=sigma, eta=eta, model=model)
    except InfeasibleParametersError as exc:
        raise InfeasibleParametersError(
            f"no even k < n − 1 works (largest tried: {why}) and the complete graph fails "
            f"too: {exc}",
            parameter="n",
        ) from exc
    return SecAggParams(
        **{
            **params.to_dict(),
            "rationale": f"no k < n−1 works (largest tried: {why}); " + params.rationale,
        }
    )
