"""Accountants: interchangeable interpreters of :mod:`securefl.dp.events`.

* ``"pld"`` — privacy loss distributions from Google's ``dp-accounting`` (Koskela et al. 2020,
  Doroshenko et al. 2022 "Connect the dots"), pessimistic discretisation: the reference for
  tight ε. Default ``value_discretization_interval`` 1e-3 (ε within ~0.1 % of 1e-4 on our grid,
  10× faster; see ``protocols/dp.md``).
* ``"prv"`` — Opacus's PRV machinery (Gopi, Lee, Wutschitz 2021): returns the *upper* bound
  ε + eps_error; δ(ε) is likewise the upper bound δ_Y(ε − eps_error) + delta_error.
* ``"rdp"`` — Rényi DP. Opacus computes the sampled Gaussian curve (Mironov, Talwar, Zhang
  2019) and converts with Balle et al. 2020 Thm 21; ``dp-accounting`` provides what Opacus
  lacks: sampling without replacement (Wang, Balle, Kasiviswanathan 2019) and the RDP → δ
  conversion (Canonne et al. 2020 Prop 12). Discrete and distributed discrete Gaussians enter
  through their zCDP bounds (CKS 2020 Thm 14; Kairouz, Liu, Steinke 2021 Thm 1); a
  Poisson-sampled non-Gaussian event uses the general bound of Zhu & Wang 2019 Thm 6.

Every accountant answers ``supports(event)`` honestly: an event it cannot bound soundly raises
:class:`~securefl.dp.errors.UnsupportedEventError` from ``epsilon``/``delta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.discrete_accounting import (
    GaussianDomination,
    candidates,
    default_domination,
    dominate,
)
from securefl.dp.errors import (
    AccountingRangeError,
    InvalidParameterError,
    UnsupportedEventError,
)
from securefl.dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DpEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SampledWithoutReplacementEvent,
    SelfComposedEvent,
    TreeIncrementEvent,
    ZCDPEvent,
    contains,
)
from securefl.dp.tree_accounting import has_tree_increment, merge_tree_releases

Neighboring = Literal["add_remove", "replace_one"]
AccountantName = Literal["rdp", "prv", "pld"]
FloatArray = npt.NDArray[np.float64]

#: RDP orders: Opacus's defaults extended to large α (needed when ε is small and T large).
RDP_ORDERS: tuple[float, ...] = tuple(
    sorted(
        {1.0 + x / 10.0 for x in range(1, 100)}
        | {float(a) for a in range(11, 64)}
        | {64.0, 80.0, 96.0, 128.0, 160.0, 192.0, 256.0}
    )
)


class Accountant(Protocol):
    """What every accountant offers (see module docstring)."""

    name: str
    neighboring: Neighboring

    def supports(self, event: DpEvent) -> bool: ...

    def epsilon(self, event: DpEvent, delta: float) -> float: ...

    def delta(self, event: DpEvent, epsilon: float) -> float: ...


# --------------------------------------------------------------------------- helpers


def _effective_gaussian(event: DpEvent) -> float | None:
    """z of one Gaussian equivalent to a composition of Gaussians on the same data, else None.

    Composing Gaussian queries with multipliers z_i on one sample is one Gaussian query on the
    concatenated vector with z = (Σ z_i⁻²)^(-1/2) (dp_accounting does the same).
    """
    if isinstance(event, GaussianEvent):
        return float(event.noise_multiplier)
    if isinstance(event, SelfComposedEvent):
        if event.count == 0:
            return None
        z = _effective_gaussian(event.event)
        return None if z is None else z / math.sqrt(event.count)
    if isinstance(event, ComposedEvent) and event.events:
        inv = 0.0
        for e in event.events:
            z = _effective_gaussian(e)
            if z is None:
                return None
            inv += z**-2
        return float(inv**-0.5)
    return None


def ddgauss_concentrated_epsilon(event: DistributedDiscreteGaussianEvent) -> float:
    """ε of ½ε²-concentrated DP for the sum of n discrete Gaussians (Kairouz et al. 2021, Thm 1)."""
    n = event.min_contributors
    s2 = event.sigma**2
    tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, n))
    d = event.dimension
    a = math.sqrt(event.l2_sensitivity**2 / (n * s2) + 0.5 * tau * d)
    b = event.l1_sensitivity / (math.sqrt(n) * event.sigma) + tau * math.sqrt(d)
    return min(a, b)


def _check_delta(delta: float) -> float:
    return v.delta("delta", delta)


def _check_epsilon(epsilon: float) -> float:
    return v.non_negative("epsilon", epsilon)


def _walk_nonprivate(event: DpEvent) -> bool:
    if isinstance(event, NonPrivateEvent):
        return True
    if isinstance(event, SelfComposedEvent):
        return event.count > 0 and _walk_nonprivate(event.event)
    if isinstance(event, ComposedEvent):
        return any(_walk_nonprivate(e) for e in event.events)
    if isinstance(event, PoissonSampledEvent | SampledWithoutReplacementEvent):
        return _walk_nonprivate(event.event)
    return False


DiscreteLeaf = DiscreteGaussianEvent | DistributedDiscreteGaussianEvent
Chooser = Callable[[DiscreteLeaf], GaussianDomination | None]


def _gaussianize(event: DpEvent, choose: Chooser) -> tuple[DpEvent, float]:
    """Replace each discrete leaf by its dominating GaussianEvent (``protocols/dp.md`` §3.1).

    Returns the new event and η, the total pointwise log-ratio slack (each leaf's η times the
    number of times it runs). A leaf for which ``choose`` returns None is kept unchanged.
    """
    if isinstance(event, DiscreteGaussianEvent | DistributedDiscreteGaussianEvent):
        dom = choose(event)
        if dom is None:
            return event, 0.0
        return GaussianEvent(dom.noise_multiplier), dom.eta
    if isinstance(event, PoissonSampledEvent):
        inner, eta = _gaussianize(event.event, choose)
        return PoissonSampledEvent(event.sampling_probability, inner), eta
    if isinstance(event, SampledWithoutReplacementEvent):
        inner, eta = _gaussianize(event.event, choose)
        return SampledWithoutReplacementEvent(event.source_size, event.sample_size, inner), eta
    if isinstance(event, SelfComposedEvent):
        inner, eta = _gaussianize(event.event, choose)
        return SelfComposedEvent(inner, event.count), eta * event.count
    if isinstance(event, ComposedEvent):
        parts = [_gaussianize(e, choose) for e in event.events]
        return ComposedEvent(tuple(p for p, _ in parts)), math.fsum(x for _, x in parts)
    return event, 0.0


def _has_discrete(event: DpEvent) -> bool:
    return contains(event, (DiscreteGaussianEvent, DistributedDiscreteGaussianEvent))


def _rdp_slack(orders: FloatArray, eta: float) -> FloatArray:
    """(2α − 1)/(α − 1)·η: Rényi cost of a pointwise e^{±η} change of both distributions."""
    if eta == 0.0:
        return np.zeros_like(orders)
    return (2.0 * orders - 1.0) / (orders - 1.0) * eta


def _refuse_sampled_tree(inner: DpEvent) -> None:
    if has_tree_increment(inner):
        raise UnsupportedEventError(
            "a DP-FTRL tree increment inside a sampling event: an increment is not a "
            "mechanism of its own round, so no amplification by sampling applies to it",
            parameter="event",
        )


def _require_event(event: object) -> DpEvent:
    if not isinstance(event, DpEvent) or type(event) is DpEvent:
        raise InvalidParameterError(
            f"must be a DpEvent, got {type(event).__name__}", parameter="event"
        )
    return event


_NUMERIC_FAILURES = (
    ArithmeticError,
    ValueError,
    IndexError,
    MemoryError,
    RuntimeError,
    TypeError,
)


def _numeric_guard(name: str, fn: Callable[[], float]) -> float:
    """Run a library computation; its untyped failures become :class:`AccountingRangeError`."""
    from securefl.errors import SecureFLError

    try:
        out = float(fn())
    except SecureFLError:
        raise
    except _NUMERIC_FAILURES as exc:
        raise AccountingRangeError(
            f"the {name} accountant cannot evaluate this event numerically "
            f"({type(exc).__name__}); try another accountant",
            parameter="event",
        ) from exc
    if math.isnan(out):
        raise AccountingRangeError(
            f"the {name} accountant produced NaN for this event", parameter="event"
        )
    return out


def _choosers() -> list[Chooser]:
    """The default domination and one per smoothing width of the grid."""
    from securefl.dp.discrete_accounting import SMOOTHING_GRID

    def at(t: float) -> Chooser:
        def choose(e: DiscreteLeaf) -> GaussianDomination | None:
            dom = dominate(e, t)
            if dom is None and isinstance(e, DistributedDiscreteGaussianEvent):
                dom = dominate(e, t, contributors=1)
            return dom

        return choose

    return [default_domination, *(at(t) for t in SMOOTHING_GRID)]


#: η below which the smoothing slack is invisible in any reported ε.
_NEGLIGIBLE_ETA = 1e-9


def _near_full_noise(inner: DpEvent, z: float) -> bool:
    """Whether ``z`` is within 1e-4 of the multiplier the discrete noise nominally has."""
    full = _gaussianize(inner, _nominal)[0]
    z_full = _effective_gaussian(full)
    return z_full is not None and z >= (1.0 - 1e-4) * z_full


def _nominal(event: DiscreteLeaf) -> GaussianDomination:
    """σ_total/Δ with no smoothing: a *reference* (not a bound) for the RDP shortcut."""
    n = 1 if isinstance(event, DiscreteGaussianEvent) else event.min_contributors
    return GaussianDomination(event.sigma * math.sqrt(n) / event.l2_sensitivity, 0.0, 0.0, n)


def _opacus_sgm(q: float, z: float, orders: FloatArray) -> FloatArray:
    """RDP of the Poisson-sampled Gaussian (Mironov, Talwar, Zhang 2019) at ``orders``."""
    from opacus.accountants.analysis import rdp as opacus_rdp

    return np.asarray(
        opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=1, orders=[float(a) for a in orders]),
        dtype=np.float64,
    )


#: Limits of the numerical (PLD/PRV) accountants: a per-round privacy-loss range
#: 10/z + 1/(2z²) above this (z ≲ 0.032, where ε is huge anyway) needs millions of grid points
#: and minutes; such events, and more compositions than the second limit, raise
#: AccountingRangeError (use "rdp").
NUMERIC_MAX_LOSS_RANGE = 1000.0
NUMERIC_MAX_COMPOSITIONS = 10**7


#: Most grid points the composed privacy-loss distribution may need (memory ~ 8 bytes each,
#: several arrays); estimated from the loss mean and spread, see ``_numeric_limits``.
NUMERIC_MAX_GRID_POINTS = 1e7


def _loss_moments(z: float, q: float) -> tuple[float, float]:
    """Rough (mean, variance) of one round's privacy loss: 1/(2z²), 1/z² for the Gaussian;
    q²(e^{1/z²} − 1), 2q²(e^{1/z²} − 1) when that is smaller (sampled). Only sizes a refusal."""
    a = 1.0 / (z * z)
    mean, var = a / 2.0, a
    if q < 1.0 and a < 50.0:
        g = math.expm1(a)
        mean, var = min(mean, q * q * g), min(var, 2.0 * q * q * g)
    return mean, var


def _numeric_limits(name: str, event: DpEvent, interval: float | None = None) -> None:
    """Refuse, before any allocation, events a discretising accountant cannot evaluate.

    ``interval`` is the PLD grid; None means the PRV mesh eps_error/√(T·ln(12/δ_err)/2).
    """
    rounds: list[tuple[float, float, int]] = []

    def walk(e: DpEvent, count: int) -> None:
        if isinstance(e, SelfComposedEvent):
            if e.count:
                walk(e.event, count * e.count)
            return
        if isinstance(e, ComposedEvent):
            for c in e.events:
                walk(c, count)
            return
        if isinstance(e, NoOpEvent | NonPrivateEvent) or count == 0:
            return
        q = e.sampling_probability if isinstance(e, PoissonSampledEvent) else 1.0
        inner = e.event if isinstance(e, PoissonSampledEvent) else e
        z = _effective_gaussian(inner)
        if z is None and isinstance(inner, DiscreteGaussianEvent):
            z = inner.sigma / inner.l2_sensitivity
        if z is not None:
            if 10.0 / z + 0.5 / z**2 > NUMERIC_MAX_LOSS_RANGE:
                raise AccountingRangeError(
                    f"noise multiplier {z:.3g} is too small for the {name} accountant's "
                    "discretisation (ε is huge); use the 'rdp' accountant",
                    parameter="event",
                )
            rounds.append((z, q, count))

    walk(event, 1)
    total = sum(c for _, _, c in rounds)
    if total > NUMERIC_MAX_COMPOSITIONS:
        raise AccountingRangeError(
            f"more than {NUMERIC_MAX_COMPOSITIONS} compositions for the {name} accountant; "
            "use the 'rdp' accountant",
            parameter="event",
        )
    if not rounds:
        return
    mean = sum(c * _loss_moments(z, q)[0] for z, q, c in rounds)
    var = sum(c * _loss_moments(z, q)[1] for z, q, c in rounds)
    width = mean + 10.0 * math.sqrt(var) + max(10.0 / z + 0.5 / z**2 for z, _, _ in rounds)
    step = interval if interval is not None else 0.01 / math.sqrt(total * 30.0 / 2.0)
    if width / step > NUMERIC_MAX_GRID_POINTS:
        raise AccountingRangeError(
            f"the composed privacy loss needs ~{width / step:.2g} grid points in the {name} "
            "accountant; use the 'rdp' accountant",
            parameter="event",
        )


# --------------------------------------------------------------------------- RDP


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _zhu_wang_poisson(q: float, inner: Callable[[int], float], alpha: int) -> float:
    """RDP at integer α ≥ 2 of a Poisson-subsampled mechanism with RDP curve ``inner``.

    Zhu & Wang (ICML 2019), Thm 6 (general upper bound):
    (1/(α−1)) log[(1−q)^{α−1}(αq−q+1) + C(α,2)q²(1−q)^{α−2}e^{ε(2)}
                  + 3 Σ_{ℓ=3}^{α} C(α,ℓ)(1−q)^{α−ℓ}q^ℓ e^{(ℓ−1)ε(ℓ)}].
    """
    log_q, log_1q = math.log(q), math.log1p(-q)  # caller handles q == 1 (no amplification)
    terms = [
        (alpha - 1) * log_1q + math.log(alpha * q - q + 1),
        _log_comb(alpha, 2) + 2 * log_q + (alpha - 2) * log_1q + inner(2),
    ]
    for ell in range(3, alpha + 1):
        terms.append(
            math.log(3.0)
            + _log_comb(alpha, ell)
            + ell * log_q
            + (alpha - ell) * log_1q
            + (ell - 1) * inner(ell)
        )
    if any(math.isinf(t) or math.isnan(t) for t in terms):
        return math.inf
    m = max(terms)
    return (m + math.log(sum(math.exp(t - m) for t in terms))) / (alpha - 1)


class RdpAccountant:
    """Rényi-DP accountant (Opacus curves + dp-accounting where Opacus has no function)."""

    name = "rdp"

    def __init__(
        self, *, neighboring: str = "add_remove", orders: Sequence[float] = RDP_ORDERS
    ) -> None:
        self.neighboring: Neighboring = _check_neighboring(neighboring)
        if not orders or any(not (float(a) > 1.0) for a in orders):
            raise InvalidParameterError("orders must be > 1", parameter="orders")
        self.orders: FloatArray = np.asarray(sorted(float(a) for a in orders), dtype=np.float64)

    # -- RDP curve ------------------------------------------------------------------------
    def rdp(self, event: DpEvent) -> FloatArray:
        """RDP ε(α) at ``self.orders`` (may contain inf)."""
        _require_event(event)
        out: list[FloatArray] = []

        def run() -> float:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                out.append(self._rdp(event, self.orders))
            return 0.0

        _numeric_guard(self.name, run)
        curve = out[0]
        if np.any(np.isnan(curve)):
            raise AccountingRangeError("the RDP curve has NaN entries", parameter="event")
        return curve

    def _rdp(self, event: DpEvent, orders: FloatArray) -> FloatArray:
        if isinstance(event, NoOpEvent):
            return np.zeros_like(orders)
        if isinstance(event, NonPrivateEvent):
            return np.full_like(orders, np.inf)
        if isinstance(event, SelfComposedEvent):
            if event.count == 0:
                return np.zeros_like(orders)
            return event.count * self._rdp(event.event, orders)
        if isinstance(event, ComposedEvent):
            total = np.zeros_like(orders)
            for e in event.events:
                total = total + self._rdp(e, orders)
            return total
        if isinstance(event, GaussianEvent):
            return orders / (2.0 * event.noise_multiplier**2)
        if isinstance(event, DiscreteGaussianEvent):
            rho = event.l2_sensitivity**2 / (2.0 * event.sigma**2)
            return rho * orders
        if isinstance(event, DistributedDiscreteGaussianEvent):
            eps = ddgauss_concentrated_epsilon(event)
            best = 0.5 * eps**2 * orders
            for dom in candidates(event):
                curve = orders / (2.0 * dom.noise_multiplier**2) + _rdp_slack(orders, dom.eta)
                best = np.minimum(best, curve)
            return best
        if isinstance(event, ZCDPEvent | TreeIncrementEvent):  # zCDP growth (§3.2): additive
            return event.rho * orders
        if isinstance(event, PoissonSampledEvent):
            q = event.sampling_probability
            _refuse_sampled_tree(event.event)
            if q == 1.0:  # everyone participates: no sampling, any adjacency
                return self._rdp(event.event, orders)
            self._require("add_remove", event)
            z = _effective_gaussian(event.event)
            if z is not None:
                return _opacus_sgm(q, z, orders)
            general = self._poisson_general(q, event.event, orders)
            if not _has_discrete(event.event):
                return general
            return np.minimum(
                general,
                self._dominated(event.event, orders, lambda z: _opacus_sgm(q, z, orders)),
            )
        if isinstance(event, SampledWithoutReplacementEvent):
            _refuse_sampled_tree(event.event)
            self._require("replace_one", event)
            from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp

            q = event.sample_size / event.source_size

            def wor(z: float) -> FloatArray:
                return np.asarray(
                    dpa_rdp._compute_rdp_sample_wor_gaussian(q, z, orders), dtype=np.float64
                )

            z = _effective_gaussian(event.event)
            if z is not None:
                return wor(z)
            if _has_discrete(event.event):
                return self._dominated(event.event, orders, wor)
            raise UnsupportedEventError(
                "sampling without replacement is supported for (discrete) Gaussian events only",
                parameter="event",
            )
        raise UnsupportedEventError(
            f"no RDP analysis for {type(event).__name__}", parameter="event"
        )

    def _dominated(
        self, inner: DpEvent, orders: FloatArray, sampled: Callable[[float], FloatArray]
    ) -> FloatArray:
        """Per-order minimum over smoothing widths t of the dominating sampled Gaussian's curve
        plus the Rényi slack of the smoothing theorem (``protocols/dp.md`` §3.1): every t gives
        a valid bound at every order, so is their minimum."""
        best = np.full_like(orders, np.inf)
        seen: set[tuple[float, float]] = set()
        for i, choose in enumerate(_choosers()):
            mapped, eta = _gaussianize(inner, choose)
            z = _effective_gaussian(mapped)
            if z is None or not math.isfinite(eta) or (z, eta) in seen:
                continue
            seen.add((z, eta))
            best = np.minimum(best, sampled(z) + _rdp_slack(orders, eta))
            if i == 0 and eta <= _NEGLIGIBLE_ETA and _near_full_noise(inner, z):
                break  # the default already loses < 1e-4 of z and nothing to η
        if not np.any(np.isfinite(best)):
            raise UnsupportedEventError(
                "no smoothing width dominates this discrete event (σ too small) and it is "
                "composed with events that have no RDP curve here",
                parameter="event",
            )
        return best

    def _poisson_general(self, q: float, inner: DpEvent, orders: FloatArray) -> FloatArray:
        int_orders = [int(a) for a in orders if float(a).is_integer() and a >= 2]
        if not int_orders:
            return np.full_like(orders, np.inf)
        grid = np.arange(2, max(int_orders) + 1, dtype=np.float64)
        curve = self._rdp(inner, grid)
        table = {int(a): float(c) for a, c in zip(grid, curve, strict=True)}
        out = np.full_like(orders, np.inf)
        for i, a in enumerate(orders):
            if float(a).is_integer() and a >= 2:
                out[i] = _zhu_wang_poisson(q, table.__getitem__, int(a))
        return out

    def _require(self, relation: Neighboring, event: DpEvent) -> None:
        if self.neighboring != relation:
            raise UnsupportedEventError(
                f"{type(event).__name__} is accounted under {relation} adjacency only, "
                f"this accountant uses {self.neighboring}",
                parameter="neighboring",
            )

    # -- public API -----------------------------------------------------------------------
    def supports(self, event: DpEvent) -> bool:
        _require_event(event)
        try:
            self.rdp(event)
        except UnsupportedEventError:
            return False
        except AccountingRangeError:
            return True  # supported kind, numerically out of range (epsilon/delta say so)
        return True

    def epsilon(self, event: DpEvent, delta: float) -> float:
        import warnings

        from opacus.accountants.analysis import rdp as opacus_rdp

        _require_event(event)
        _check_delta(delta)
        curve = self.rdp(event)
        if not np.any(np.isfinite(curve)):
            return math.inf
        if not np.any(curve > 0):
            return 0.0

        def conv() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with np.errstate(all="ignore"):
                    eps, _ = opacus_rdp.get_privacy_spent(
                        orders=list(self.orders), rdp=list(curve), delta=delta
                    )
            return float(eps)

        eps = _numeric_guard(self.name, conv)
        return max(0.0, eps)

    def delta(self, event: DpEvent, epsilon: float) -> float:
        from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp

        _require_event(event)
        _check_epsilon(epsilon)
        curve = self.rdp(event)
        if not np.any(np.isfinite(curve)):
            return 1.0
        mask = np.isfinite(curve)

        def conv() -> float:
            with np.errstate(all="ignore"):
                d, _ = dpa_rdp.compute_delta(list(self.orders[mask]), list(curve[mask]), epsilon)
            return float(d)

        return min(1.0, max(0.0, _numeric_guard(self.name, conv)))


# --------------------------------------------------------------------------- PLD


#: PLDs one :class:`PldAccountant` keeps for reuse (a run's round events and their prefixes).
_PLD_MEMO_SIZE = 64


class PldAccountant:
    """Privacy-loss-distribution accountant built on ``dp_accounting.pld`` (pessimistic).

    Discrete leaves are accounted through the continuous Gaussian that dominates them up to a
    pointwise e^{±η} (``protocols/dp.md`` §3.1): ε(δ) = ε_PLD(δ·e^{−η}) + 2η. A 1-D discrete
    Gaussian with integer sensitivity uses dp-accounting's exact discrete PLD instead
    (``exact_discrete_1d=False`` forces the smoothing bound, for tests).
    """

    name = "pld"

    def __init__(
        self,
        *,
        neighboring: str = "add_remove",
        value_discretization_interval: float = 1e-3,
        exact_discrete_1d: bool = True,
    ) -> None:
        self.neighboring: Neighboring = _check_neighboring(neighboring)
        self.value_discretization_interval = v.positive(
            "value_discretization_interval", value_discretization_interval
        )
        self.exact_discrete_1d = bool(exact_discrete_1d)
        # PLDs already built by this instance, by (event, grid, adjacency): a run
        # asks for ε after every round and calibration asks for ε of the same round event at
        # each bisection step. dp_accounting's PLDs are immutable values (compose and
        # self_compose return new objects), so reuse gives bit-identical ε.
        self._memo: dict[tuple[DpEvent, float, str], Any] = {}

    def _exact_1d(self, event: DpEvent) -> bool:
        return (
            self.exact_discrete_1d
            and isinstance(event, DiscreteGaussianEvent)
            and event.dimension == 1
            and float(event.l2_sensitivity).is_integer()
        )

    def _choose(self, event: DiscreteLeaf) -> GaussianDomination | None:
        return None if self._exact_1d(event) else default_domination(event)

    def dominating_event(self, event: DpEvent) -> tuple[DpEvent, float]:
        """``event`` with each tree release merged (§3.2), discrete leaves replaced by
        dominating Gaussians, and the slack η."""
        _require_event(event)
        return _gaussianize(merge_tree_releases(event), self._choose)

    def pld(self, event: DpEvent) -> Any:
        """The composed ``PrivacyLossDistribution`` of :meth:`dominating_event` (η not applied)."""
        mapped, _ = self.dominating_event(event)
        return self._pld(mapped)

    def _pld(self, event: DpEvent) -> Any:
        key = (event, self.value_discretization_interval, self.neighboring)
        try:
            hit = self._memo.get(key)
        except TypeError:  # an event with an unhashable field: build it every time
            return self._build_pld(event)
        if hit is not None:
            return hit
        out = self._build_pld(event)
        if len(self._memo) >= _PLD_MEMO_SIZE:
            self._memo.pop(next(iter(self._memo)))  # oldest first
        self._memo[key] = out
        return out

    def _build_pld(self, event: DpEvent) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld_lib

        vdi = self.value_discretization_interval
        if isinstance(event, NoOpEvent):
            return pld_lib.identity(value_discretization_interval=vdi)
        if isinstance(event, SelfComposedEvent):
            if event.count == 0:
                return pld_lib.identity(value_discretization_interval=vdi)
            return self._pld(event.event).self_compose(event.count)
        if isinstance(event, ComposedEvent):
            out = pld_lib.identity(value_discretization_interval=vdi)
            for e in event.events:
                out = out.compose(self._pld(e))
            return out
        q = 1.0
        inner = event
        if isinstance(event, PoissonSampledEvent):
            if event.sampling_probability < 1.0 and self.neighboring != "add_remove":
                raise UnsupportedEventError(
                    "Poisson sampling is accounted under add_remove adjacency only",
                    parameter="neighboring",
                )
            q = event.sampling_probability
            inner = event.event
        z = _effective_gaussian(inner)
        if z is not None:
            return pld_lib.from_gaussian_mechanism(
                standard_deviation=z,
                sensitivity=1.0,
                value_discretization_interval=vdi,
                sampling_prob=q,
            )
        if isinstance(inner, DiscreteGaussianEvent) and self._exact_1d(inner):
            return pld_lib.from_discrete_gaussian_mechanism(
                sigma=inner.sigma,
                sensitivity=int(inner.l2_sensitivity),
                value_discretization_interval=vdi,
                sampling_prob=q,
            )
        if q < 1.0 or inner is not event:
            raise UnsupportedEventError(
                f"no PLD for Poisson-sampled {type(inner).__name__}", parameter="event"
            )
        raise UnsupportedEventError(f"no PLD for {type(event).__name__}", parameter="event")

    def supports(self, event: DpEvent) -> bool:
        try:
            mapped, _ = self.dominating_event(event)
        except UnsupportedEventError:
            return False
        return _structurally(mapped, self._leaf_ok)

    def _leaf_ok(self, event: DpEvent) -> bool:
        if isinstance(event, NoOpEvent | NonPrivateEvent):
            return True
        inner = event
        if isinstance(event, PoissonSampledEvent):
            if event.sampling_probability < 1.0 and self.neighboring != "add_remove":
                return False
            inner = event.event
        if _effective_gaussian(inner) is not None:
            return True
        return self._exact_1d(inner)

    def epsilon(self, event: DpEvent, delta: float) -> float:
        _require_event(event)
        _check_delta(delta)
        self._check(event)
        if _walk_nonprivate(event):
            return math.inf
        mapped, eta = self.dominating_event(event)
        _numeric_limits(self.name, mapped, self.value_discretization_interval)
        target = delta * math.exp(-eta)
        if not target > 0.0:
            return math.inf
        eps = _numeric_guard(self.name, lambda: self._pld(mapped).get_epsilon_for_delta(target))
        return max(0.0, eps + 2.0 * eta)

    def delta(self, event: DpEvent, epsilon: float) -> float:
        _require_event(event)
        _check_epsilon(epsilon)
        self._check(event)
        if _walk_nonprivate(event):
            return 1.0
        mapped, eta = self.dominating_event(event)
        _numeric_limits(self.name, mapped, self.value_discretization_interval)
        if not math.isfinite(eta):
            return 1.0
        d = _numeric_guard(
            self.name, lambda: self._pld(mapped).get_delta_for_epsilon(epsilon - 2.0 * eta)
        )
        return min(1.0, max(0.0, d * math.exp(eta)))

    def _check(self, event: DpEvent) -> None:
        merge_tree_releases(event)  # a sampled tree increment raises its own reason
        if not self.supports(event):
            raise UnsupportedEventError(
                f"the PLD accountant cannot account for {event.to_dict()['type']} "
                "(use 'rdp' for without-replacement or zCDP-only events)",
                parameter="event",
            )


def _structurally(event: DpEvent, leaf_ok: Callable[[DpEvent], bool]) -> bool:
    if isinstance(event, SelfComposedEvent):
        return event.count == 0 or _structurally(event.event, leaf_ok)
    if isinstance(event, ComposedEvent):
        return all(_structurally(e, leaf_ok) for e in event.events)
    return leaf_ok(event)


# --------------------------------------------------------------------------- PRV


class PrvAccountant:
    """Opacus's PRV accountant generalised to our events (Poisson-sampled Gaussians only)."""

    name = "prv"

    def __init__(
        self,
        *,
        neighboring: str = "add_remove",
        eps_error: float = 0.01,
        delta_error_ratio: float = 1e-3,
    ) -> None:
        self.neighboring: Neighboring = _check_neighboring(neighboring)
        self.eps_error = v.positive("eps_error", eps_error)
        self.delta_error_ratio = v.positive("delta_error_ratio", delta_error_ratio)

    def _history(self, event: DpEvent, count: int, out: list[tuple[float, float, int]]) -> None:
        if isinstance(event, NoOpEvent) or count == 0:
            return
        if isinstance(event, SelfComposedEvent):
            self._history(event.event, count * event.count, out)
            return
        if isinstance(event, ComposedEvent):
            for e in event.events:
                self._history(e, count, out)
            return
        q = 1.0
        inner = event
        if isinstance(event, PoissonSampledEvent):
            q = event.sampling_probability
            if q < 1.0 and self.neighboring != "add_remove":
                raise UnsupportedEventError(
                    "Poisson sampling is accounted under add_remove adjacency only",
                    parameter="neighboring",
                )
            inner = event.event
        z = _effective_gaussian(inner)
        if z is None:
            raise UnsupportedEventError(
                f"Opacus PRV supports (Poisson-sampled) Gaussians only, not {type(inner).__name__}",
                parameter="event",
            )
        out.append((z, q, count))

    def supports(self, event: DpEvent) -> bool:
        _require_event(event)
        if _walk_nonprivate(event):
            return True
        try:
            mapped, _ = _gaussianize(merge_tree_releases(event), default_domination)
            self._history(mapped, 1, [])
        except UnsupportedEventError:
            return False
        return True

    def _dprv(self, event: DpEvent, delta_error: float) -> Any:
        from opacus.accountants.analysis import prv as prv_lib

        hist: list[tuple[float, float, int]] = []
        self._history(event, 1, hist)
        if not hist:
            return None
        prvs = [prv_lib.PoissonSubsampledGaussianPRV(q, z) for z, q, _ in hist]
        counts = [c for _, _, c in hist]
        bound = prv_lib.compute_safe_domain_size(
            prvs=prvs,
            max_self_compositions=counts,
            eps_error=self.eps_error,
            delta_error=delta_error,
        )
        mesh = self.eps_error / math.sqrt(sum(counts) * math.log(12 / delta_error) / 2)
        domain = prv_lib.Domain.create_aligned(-bound, bound, mesh)
        tprvs = [
            prv_lib.TruncatedPrivacyRandomVariable(p, domain.t_min, domain.t_max) for p in prvs
        ]
        dprvs = [prv_lib.discretize(t, domain) for t in tprvs]
        return prv_lib.compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)

    def epsilon(self, event: DpEvent, delta: float) -> float:
        """Upper bound ε + eps_error; discrete leaves via ``protocols/dp.md`` §3.1 (+2η)."""
        _require_event(event)
        _check_delta(delta)
        if _walk_nonprivate(event):
            return math.inf
        mapped, eta = _gaussianize(merge_tree_releases(event), default_domination)
        if not self.supports(event):
            self._history(mapped, 1, [])  # raises the precise error
        _numeric_limits(self.name, mapped)
        target = delta * math.exp(-eta)
        if not target > 0.0:
            return math.inf
        delta_error = target * self.delta_error_ratio

        def run() -> float:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                dprv = self._dprv(mapped, delta_error)
                if dprv is None:
                    return 0.0
                _, _, eps_upper = dprv.compute_epsilon(target, delta_error, self.eps_error)
            return float(eps_upper)

        return max(0.0, _numeric_guard(self.name, run) + 2.0 * eta)

    def delta(self, event: DpEvent, epsilon: float) -> float:
        _require_event(event)
        _check_epsilon(epsilon)
        if _walk_nonprivate(event):
            return 1.0
        mapped, eta = _gaussianize(merge_tree_releases(event), default_domination)
        if not self.supports(event):
            self._history(mapped, 1, [])
        _numeric_limits(self.name, mapped)
        if not math.isfinite(eta):
            return 1.0
        delta_error = 1e-12

        def run() -> float:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                dprv = self._dprv(mapped, delta_error)
                if dprv is None:
                    return 0.0
                shifted = epsilon - 2.0 * eta - self.eps_error
                return float(dprv.compute_delta_estimate(shifted))

        est = _numeric_guard(self.name, run)
        return min(1.0, (max(0.0, est) + delta_error) * math.exp(eta))


# --------------------------------------------------------------------------- registry


def _check_neighboring(value: str) -> Neighboring:
    if value == "add_remove":
        return "add_remove"
    if value == "replace_one":
        return "replace_one"
    raise InvalidParameterError(
        f"must be 'add_remove' or 'replace_one', got {value!r}", parameter="neighboring"
    )


ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld")


def get_accountant(name: str, *, neighboring: str = "add_remove", **options: Any) -> Accountant:
    """The accountant called ``name`` ("rdp" | "prv" | "pld"); options go to its constructor."""
    if name == "rdp":
        return RdpAccountant(neighboring=neighboring, **options)
    if name == "prv":
        return PrvAccountant(neighboring=neighboring, **options)
    if name == "pld":
        return PldAccountant(neighboring=neighboring, **options)
    raise InvalidParameterError(
        f"unknown accountant {name!r}; use one of {ACCOUNTANTS}", parameter="accountant"
    )


# --------------------------------------------------------------------------- calibration


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    *,
    rounds: int,
    sampling: Any = None,
    accountant: str = "pld",
    tolerance: float = 1e-3,
    event_for: Callable[[float], DpEvent] | None = None,
    neighboring: str = "add_remove",
    max_noise_multiplier: float = 1e4,
) -> float:
    """Smallest z (to ``tolerance``, absolute) with ε(z) ≤ ``target_epsilon`` at ``delta``.

    Bisection on the monotone map z ↦ ε: the result z satisfies ε(z) ≤ target and
    ε(z − tolerance) > target. ``sampling`` is a
    :class:`securefl.dp.participation.SamplingScheme` (or a float q meaning Poisson, or None
    meaning every unit every round); ``event_for(z)`` builds the per-round mechanism event
    (default ``GaussianEvent(z)``). Raises :class:`InvalidParameterError` if no z ≤
    ``max_noise_multiplier`` meets the target.
    """
    from securefl.dp.participation import PoissonSampling, round_event

    target = v.positive("target_epsilon", target_epsilon)
    _check_delta(delta)
    v.count("rounds", rounds, minimum=1)
    tol = v.positive("tolerance", tolerance)
    acc = get_accountant(accountant, neighboring=neighboring)
    scheme = (
        PoissonSampling(v.probability("sampling", sampling))
        if isinstance(sampling, float | int) and not isinstance(sampling, bool)
        else sampling
    )
    build = event_for if event_for is not None else GaussianEvent

    def eps(z: float) -> float:
        return acc.epsilon(SelfComposedEvent(round_event(scheme, build(z)), rounds), delta)

    hi = 1.0
    while eps(hi) > target:
        hi *= 2.0
        if hi > max_noise_multiplier:
            raise InvalidParameterError(
                f"no noise multiplier <= {max_noise_multiplier} reaches ε={target}",
                parameter="target_epsilon",
            )
    lo = hi / 2.0
    while eps(lo) <= target:
        hi, lo = lo, lo / 2.0
        if lo < 1e-6:
            return hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- discrete vs continuous


def discrete_vs_continuous_eps(
    q: float,
    z: float,
    rounds: int,
    delta: float,
    dimension: int,
    frac_bits: int = 16,
    clip: float = 0.5,
    *,
    accountant: str = "pld",
) -> float:
    """ε charged for the discrete noise the loop records ÷ the continuous Gaussian's PLD ε.

    Numerator: ``accountant``'s ε for T = ``rounds`` Poisson(q)-sampled rounds of the exact
    event central DP-FedAvg records (:meth:`securefl.dp.fedavg.DpFedAvgConfig.round_event`:
    ``DiscreteGaussianEvent(⌈z·Δ_grid⌉, Δ_grid, d)`` with Δ_grid = clip·2^f + √d). Denominator:
    the PLD ε of the Poisson-sampled continuous Gaussian with the same (q, z, T). The target of
    issue 13 is ≤ 1.02 (the default run: q = 0.2, z = 0.942, T = 10, d = 38416, f = 16,
    clip = 0.5, δ = 1e-5).
    """
    from securefl.dp.fedavg import DpFedAvgConfig

    v.count("rounds", rounds, minimum=1)
    sampled_q = v.probability("q", q)
    cfg = DpFedAvgConfig(clip=clip, noise_multiplier=z, expected_cohort=1.0, frac_bits=frac_bits)
    discrete = SelfComposedEvent(PoissonSampledEvent(sampled_q, cfg.round_event(dimension)), rounds)
    continuous = SelfComposedEvent(PoissonSampledEvent(sampled_q, GaussianEvent(z)), rounds)
    num = get_accountant(accountant).epsilon(discrete, delta)
    den = get_accountant("pld").epsilon(continuous, delta)
    if den == 0.0:
        return 1.0 if num == 0.0 else math.inf
    return num / den
