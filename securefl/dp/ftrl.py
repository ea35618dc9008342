"""DP-FTRL: tree-aggregated noise on prefix sums of clipped client updates, no sampling needed.

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private (Deep) Learning without
Sampling or Shuffling", ICML 2021 (KMSTTX). Round t's clipped, weighted update sum s_t enters
a binary-tree counter (Dwork et al. 2010; Chan, Shi, Song 2011); the server releases the noisy
prefix sum S̃_t ≈ s_1 + … + s_t and the model moves by S̃_t − S̃_{t−1} (FTRL, §3: θ_t =
θ_0 − η·S̃_t; any function of the released prefix sums is post-processing).

Tree (online form). At round t (1-based within the current tree) one node completes: the
dyadic interval [t − 2^ℓ + 1, t] with ℓ = trailing zeros of t. Its exact sum gets FRESH noise
and is released; S̃_t is the sum of the released nodes of the binary decomposition of [1, t]
(one per set bit of t), so its noise variance is popcount(t)·σ². A tree over R rounds releases
R nodes; ``restart_every=R`` starts a new tree every R rounds (KMSTTX §4, "restarts").

Noise and floating point. As in :mod:`securefl.dp.fedavg`: the round sum lives on the grid
2^−f (rounded float sum, or the exact integer sum of fixed-point encodings from secure
aggregation), every node gets exact discrete Gaussian noise N_Z(0, σ_grid²)^d from the AES-CTR
source, and only the noisy integers are turned back into floats.

Privacy (client level; protocols/dp.md §4.7). Release of all nodes up to round T is an adaptive
composition of discrete Gaussian mechanisms, one per node v, each with L2 sensitivity at most
k_v·Δ where k_v is the number of the unit's participations inside v and Δ = W_max·C·2^f + √d
(× 2 for replace-one) the grid sensitivity of one participation (triangle inequality; tight
when the unit sends the same update each time). zCDP composes additively (Bun & Steinke 2016
Lemma 2.3; CKS 2020 Thm 14 for each node), so the whole release is ρ-zCDP with
ρ = Δ²·Σ_v k_v²/(2σ²): one discrete Gaussian event with l2_sensitivity Δ·√S, S = max Σ_v k_v²
over every participation pattern the schedule allows (at most ``max_participations`` rounds,
any two at least ``min_separation`` apart). For one participation S = ⌊log₂ T⌋ + 1 =
⌈log₂(T + 1)⌉, KMSTTX Thm 4.1's ρ = ⌈lg(T + 1)⌉·L²/(2σ²). For several, :func:`max_node_load`
bounds S level by level (exact for one participation and for the restart-every-epoch
schedule; an upper bound otherwise; checked against brute force in the tests). Assumption,
as in KMSTTX: the participation schedule does not depend on the released values; the server
enforces the schedule (:class:`DpFtrlServer` refuses a round that breaks it).

Who sees what: this is CENTRAL noise. The server (or whoever runs :class:`DpFtrlServer`)
holds the noiseless round sums and node sums; only what :meth:`DpFtrlServer.add` returns is
private. With secure aggregation the server still sees the noiseless round sum.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.errors import InvalidParameterError, SamplingMismatchError
from securefl.dp.events import DiscreteGaussianEvent, NoOpEvent
from securefl.dp.fedavg import check_grid_noise_parameters, to_grid
from securefl.dp.sampling import MAX_FAST_SIGMA, CryptoRandom, discrete_gaussian, round_sigma_up

FloatVector = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]

#: Largest |node sum| on the grid: a prefix adds at most 64 noisy nodes, so 64·2^56 < 2^63.
_MAX_GRID = 1 << 56


def _b64(a: IntVector) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<i8").tobytes()).decode()


def _unb64(text: Any, dimension: int) -> IntVector:
    if not isinstance(text, str):
        raise InvalidParameterError("must be base64 text", parameter="state")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidParameterError("invalid base64", parameter="state") from exc
    if len(raw) != 8 * dimension:
        raise InvalidParameterError("vector of the wrong length", parameter="state")
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


def _ctz(t: int) -> int:
    return (t & -t).bit_length() - 1


def released_nodes(rounds: int, restart_every: int | None = None) -> list[tuple[int, int]]:
    """The intervals [a, b] (global 1-based rounds, inclusive) whose sums get noise, in order."""
    rounds = v.count("rounds", rounds)
    out: list[tuple[int, int]] = []
    for t in range(1, rounds + 1):
        local = t if restart_every is None else (t - 1) % restart_every + 1
        out.append((t - (1 << _ctz(local)) + 1, t))
    return out


def _segments(rounds: int, restart_every: int | None) -> list[int]:
    if restart_every is None or restart_every >= rounds:
        return [rounds] if rounds else []
    full, rest = divmod(rounds, restart_every)
    return [restart_every] * full + ([rest] if rest else [])


def max_node_load(
    rounds: int,
    *,
    min_separation: int,
    max_participations: int,
    restart_every: int | None = None,
) -> int:
    """An upper bound on S = max Σ_v k_v² over the nodes of :func:`released_nodes`.

    Nodes of one level ℓ are disjoint intervals of length 2^ℓ; one of them holds at most
    m_ℓ = min(k, ⌊(2^ℓ − 1)/b⌋ + 1) participations (b = min_separation) and the level holds
    at most k in all, so its Σ k_v² is at most q·m_ℓ² + r² with q = min(N_ℓ, ⌊k/m_ℓ⌋) full
    nodes and the remainder r (N_ℓ = number of level-ℓ nodes). Summing the level bounds gives
    S. It is exact for k = 1 (⌊log₂ T⌋ + 1, or of the longest tree with restarts) and for
    the epoch schedule of KMSTTX §4 (restart every R rounds, min_separation = R, R | T:
    k·(⌊log₂ R⌋ + 1)); otherwise an upper bound (brute-force checked in the tests).
    """
    rounds = v.count("rounds", rounds)
    b = v.count("min_separation", min_separation, minimum=1)
    k = v.count("max_participations", max_participations, minimum=1)
    if rounds == 0:
        return 0
    k = min(k, (rounds - 1) // b + 1)
    segs = _segments(rounds, restart_every)
    total = 0
    level = 0
    while (1 << level) <= max(segs):
        size = 1 << level
        n_nodes = sum(((length // size) + 1) // 2 for length in segs)
        m = min(k, (size - 1) // b + 1)
        q = min(n_nodes, k // m)
        r = k - q * m if q < n_nodes else 0
        total += q * m * m + r * r
        level += 1
    return total


@dataclass(frozen=True)
class DpFtrlConfig:
    """Public parameters of a DP-FTRL run (recorded with its event).

    ``noise_multiplier`` z is per NODE: σ_grid = ⌈z·Δ⌉ for one participation's grid
    sensitivity Δ. The whole release's effective multiplier is σ_grid/(Δ·√S)
    (:meth:`effective_noise_multiplier`); :meth:`node_noise_multiplier` inverts it.
    ``expected_cohort`` is the fixed denominator of the released mean.
    """

    clip: float
    noise_multiplier: float
    expected_cohort: float
    min_separation: int
    max_participations: int
    restart_every: int | None = None
    max_weight: float = 1.0
    frac_bits: int = 16
    neighboring: str = "add_remove"

    def __post_init__(self) -> None:
        check_grid_noise_parameters(self)
        v.count("min_separation", self.min_separation, minimum=1)
        v.count("max_participations", self.max_participations, minimum=1)
        if self.restart_every is not None:
            v.count("restart_every", self.restart_every, minimum=1)

    @property
    def _factor(self) -> float:
        return 2.0 if self.neighboring == "replace_one" else 1.0

    def grid_sensitivity(self, dimension: int) -> float:
        """Δ of one participation on the grid: factor·(W_max·C·2^f + √d) (rounding slack)."""
        d = v.count("dimension", dimension, minimum=1)
        return self._factor * (self.max_weight * self.clip * 2.0**self.frac_bits + math.sqrt(d))

    def grid_sigma(self, dimension: int) -> int:
        sigma = round_sigma_up(self.noise_multiplier * self.grid_sensitivity(dimension))
        if sigma > MAX_FAST_SIGMA:
            raise InvalidParameterError(
                "noise too large for the grid sampler", parameter="frac_bits"
            )
        return sigma

    def node_load(self, rounds: int) -> int:
        """S of :func:`max_node_load` for this schedule after ``rounds`` rounds."""
        return max_node_load(
            rounds,
            min_separation=self.min_separation,
            max_participations=self.max_participations,
            restart_every=self.restart_every,
        )

    def effective_noise_multiplier(self, rounds: int, dimension: int) -> float:
        """σ_grid/(Δ·√S): the z of one Gaussian mechanism equivalent to the whole release."""
        s = self.node_load(rounds)
        if s == 0:
            return math.inf
        return self.grid_sigma(dimension) / (self.grid_sensitivity(dimension) * math.sqrt(s))

    @staticmethod
    def node_noise_multiplier(
        effective: float,
        rounds: int,
        *,
        min_separation: int,
        max_participations: int,
        restart_every: int | None = None,
    ) -> float:
        """Per-node z giving the whole release an effective multiplier ``effective``."""
        z = v.positive("effective", effective)
        s = max_node_load(
            rounds,
            min_separation=min_separation,
            max_participations=max_participations,
            restart_every=restart_every,
        )
        return z * math.sqrt(max(s, 1))

    def event(self, rounds: int, dimension: int) -> DiscreteGaussianEvent | NoOpEvent:
        """The event of releasing every node of the first ``rounds`` rounds (not per round:
        tree nodes overlap, so the run is ONE mechanism; charge it once, or charge the
        difference of cumulative events as they grow)."""
        rounds = v.count("rounds", rounds)
        if rounds == 0:
            return NoOpEvent()
        s = self.node_load(rounds)
        return DiscreteGaussianEvent(
            sigma=float(self.grid_sigma(dimension)),
            l2_sensitivity=self.grid_sensitivity(dimension) * math.sqrt(s),
            dimension=dimension * rounds,  # one node of d coordinates per round
        )

    def to_dict(self, rounds: int | None = None, dimension: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mechanism": "dp_ftrl_tree_central_discrete_gaussian",
            "privacy_unit": "client",
            "noise_location": "central (the server sees the noiseless round sums)",
            "clip": self.clip,
            "noise_multiplier_per_node": self.noise_multiplier,
            "expected_cohort": self.expected_cohort,
            "min_separation": self.min_separation,
            "max_participations": self.max_participations,
            "restart_every": self.restart_every,
            "max_weight": self.max_weight,
            "frac_bits": self.frac_bits,
            "neighboring": self.neighboring,
            "tree": "online binary tree, one fresh node per round (KMSTTX 2021)",
            "denominator": "fixed_expected_cohort",
        }
        if rounds is not None and dimension is not None:
            out |= {
                "rounds": rounds,
                "dimension": dimension,
                "node_load": self.node_load(rounds),
                "grid_sensitivity": self.grid_sensitivity(dimension),
                "grid_sigma": self.grid_sigma(dimension),
                "effective_noise_multiplier": self.effective_noise_multiplier(rounds, dimension),
            }
        return out


class TreeAggregator:
    """Online tree counter over int64 vectors: ``add(x_t)`` → noisy Σ_{τ≤t} x_τ.

    Keeps, per level, the exact and the noisy sum of the node of the current decomposition
    (O(d·log T) integers). ``restart_every`` resets the tree (the prefix restarts at 0).
    """

    def __init__(
        self,
        dimension: int,
        sigma: int,
        *,
        restart_every: int | None = None,
        rng: CryptoRandom | None = None,
    ) -> None:
        self.dimension = v.count("dimension", dimension, minimum=1)
        self.sigma = v.count("sigma", sigma, minimum=1)
        if restart_every is not None:
            v.count("restart_every", restart_every, minimum=1)
        self.restart_every = restart_every
        self._rng = rng if rng is not None else CryptoRandom()
        self.rounds = 0
        self._exact: dict[int, IntVector] = {}
        self._noisy: dict[int, IntVector] = {}

    @property
    def position(self) -> int:
        """Rounds in the current tree."""
        if self.restart_every is None:
            return self.rounds
        return (self.rounds - 1) % self.restart_every + 1 if self.rounds else 0

    def add(self, values: IntVector) -> IntVector:
        x = np.asarray(values)
        if x.shape != (self.dimension,) or x.dtype != np.int64:
            raise InvalidParameterError(
                f"must be an int64 vector of length {self.dimension}", parameter="values"
            )
        if self.restart_every is not None and self.position == self.restart_every:
            self._exact.clear()
            self._noisy.clear()
        self.rounds += 1
        level = _ctz(self.position)
        node = x.copy()
        for lower in range(level):
            node += self._exact.pop(lower)
            del self._noisy[lower]
        if int(np.max(np.abs(node), initial=0)) > _MAX_GRID:
            raise InvalidParameterError("node sum too large for int64", parameter="values")
        self._exact[level] = node
        self._noisy[level] = node + discrete_gaussian(self.dimension, self.sigma, rng=self._rng)
        return self.noisy_prefix()

    def state(self) -> dict[str, Any]:
        """The tree's state (SECRET: exact node sums and their noise) as JSON-able data."""
        return {
            "dimension": self.dimension,
            "sigma": self.sigma,
            "restart_every": self.restart_every,
            "rounds": self.rounds,
            "exact": {str(k): _b64(a) for k, a in self._exact.items()},
            "noisy": {str(k): _b64(a) for k, a in self._noisy.items()},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` into a fresh tree with the same parameters (typed errors)."""
        if self.rounds:
            raise InvalidParameterError("tree already in use", parameter="state")
        for key in ("dimension", "sigma", "restart_every"):
            if state.get(key) != getattr(self, key):
                raise InvalidParameterError(f"{key} differs from the tree's", parameter="state")
        rounds = v.count("rounds", state.get("rounds"))
        exact, noisy = state.get("exact"), state.get("noisy")
        if not isinstance(exact, Mapping) or not isinstance(noisy, Mapping):
            raise InvalidParameterError("exact/noisy must be tables", parameter="state")
        if set(exact) != set(noisy):
            raise InvalidParameterError("exact and noisy levels differ", parameter="state")
        self.rounds = rounds
        levels = {int(k) for k in exact}
        expected = {i for i in range(64) if (self.position >> i) & 1}
        if levels != expected:
            raise InvalidParameterError("levels do not match the round count", parameter="state")
        self._exact = {int(k): _unb64(a, self.dimension) for k, a in exact.items()}
        self._noisy = {int(k): _unb64(a, self.dimension) for k, a in noisy.items()}

    def noisy_prefix(self) -> IntVector:
        out = np.zeros(self.dimension, dtype=np.int64)
        for noisy in self._noisy.values():
            out += noisy
        return out


class DpFtrlServer:
    """Server side of DP-FTRL: ``add(round_sum, participants=...)`` → noisy mean model delta.

    ``round_sum`` is Σᵢ wᵢ·clip_C(Δᵢ) of the round, as floats (rounded to the grid here) or as
    the exact int64 grid sum from secure aggregation (fixed-point scale 2^f). The return value
    is (S̃_t − S̃_{t−1})·2^−f/m (after a restart, S̃ of the new tree): add it, times the server
    learning rate, to the model. ``participants`` are the ids whose updates are in the sum;
    a round that breaks the declared schedule raises :class:`SamplingMismatchError` BEFORE
    anything is released.
    """

    def __init__(
        self, config: DpFtrlConfig, dimension: int, *, rng: CryptoRandom | None = None
    ) -> None:
        self.config = config
        self.dimension = v.count("dimension", dimension, minimum=1)
        self._tree = TreeAggregator(
            self.dimension,
            config.grid_sigma(self.dimension),
            restart_every=config.restart_every,
            rng=rng,
        )
        self._previous = np.zeros(self.dimension, dtype=np.int64)
        self._history: dict[Hashable, list[int]] = {}

    @property
    def rounds(self) -> int:
        return self._tree.rounds

    def _check_schedule(self, participants: Iterable[Hashable]) -> set[Hashable]:
        t = self.rounds + 1
        seen: set[Hashable] = set()
        for pid in participants:
            if pid in seen:
                raise SamplingMismatchError(f"client {pid!r} listed twice in round {t}")
            seen.add(pid)
            past = self._history.get(pid, [])
            if past and t - past[-1] < self.config.min_separation:
                raise SamplingMismatchError(
                    f"client {pid!r} took part in round {past[-1]} and {t}: closer than "
                    f"min_separation={self.config.min_separation}"
                )
            if len(past) >= self.config.max_participations:
                raise SamplingMismatchError(
                    f"client {pid!r} exceeds max_participations={self.config.max_participations}"
                )
        return seen

    def add(self, round_sum: npt.ArrayLike, *, participants: Iterable[Hashable]) -> FloatVector:
        arr = np.asarray(round_sum)
        if arr.shape != (self.dimension,):
            raise InvalidParameterError(
                f"must have shape ({self.dimension},), got {arr.shape}", parameter="round_sum"
            )
        if arr.dtype == np.int64:
            grid = arr
        elif np.issubdtype(arr.dtype, np.floating):
            grid = to_grid(arr.astype(np.float64), self.config.frac_bits)
        else:
            raise InvalidParameterError("must be float or int64", parameter="round_sum")
        seen = self._check_schedule(participants)
        restarting = self._tree.position == self.config.restart_every
        prefix = self._tree.add(grid)
        for pid in seen:
            self._history.setdefault(pid, []).append(self.rounds)
        previous = np.zeros_like(prefix) if restarting else self._previous
        self._previous = prefix
        delta = (prefix - previous).astype(np.float64)
        return delta * (2.0**-self.config.frac_bits / self.config.expected_cohort)

    def noisy_prefix_mean(self) -> FloatVector:
        """S̃_t·2^−f/m of the current tree (FTRL's θ_t = θ_start − η·this)."""
        scale = 2.0**-self.config.frac_bits / self.config.expected_cohort
        return self._tree.noisy_prefix().astype(np.float64) * scale

    def event(self) -> DiscreteGaussianEvent | NoOpEvent:
        """Event of everything released so far (cumulative, see :meth:`DpFtrlConfig.event`)."""
        return self.config.event(self.rounds, self.dimension)

    def params(self) -> dict[str, Any]:
        return self.config.to_dict(self.rounds, self.dimension)

    def eligible(self, pid: Hashable) -> bool:
        """Whether ``pid`` may take part in the next round under the declared schedule."""
        past = self._history.get(pid, [])
        if len(past) >= self.config.max_participations:
            return False
        return not past or self.rounds + 1 - past[-1] >= self.config.min_separation

    def state(self) -> dict[str, Any]:
        """Everything the next round depends on (SECRET: holds the tree's noise)."""
        return {
            "tree": self._tree.state(),
            "previous": _b64(self._previous),
            "history": [[pid, list(r)] for pid, r in self._history.items()],
        }

    @classmethod
    def restore(
        cls,
        config: DpFtrlConfig,
        dimension: int,
        state: Mapping[str, Any],
        *,
        rng: CryptoRandom | None = None,
    ) -> DpFtrlServer:
        """A server continuing from :meth:`state` (same config and dimension)."""
        server = cls(config, dimension, rng=rng)
        tree = state.get("tree")
        history = state.get("history")
        if not isinstance(tree, Mapping) or not isinstance(history, list):
            raise InvalidParameterError("tree/history missing", parameter="state")
        server._tree.load_state(tree)
        server._previous = _unb64(state.get("previous"), server.dimension)
        for item in history:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[1], list)
                or not all(isinstance(r, int) and 1 <= r <= server.rounds for r in item[1])
            ):
                raise InvalidParameterError("malformed participation history", parameter="state")
            server._history[item[0]] = list(item[1])
        return server
