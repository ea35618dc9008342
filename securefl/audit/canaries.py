"""Client-level canaries that audit the federated model that was actually trained.

Design (Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar, ICLR 2024, "One-shot empirical
privacy estimation for federated learning", §3): ``m`` canary clients join the population.
Canary ``i``'s update, every round it is sampled, is a fixed random unit direction ``u_i``
scaled to the clip norm ``C`` — the largest contribution client-level DP admits, and, in high
dimension, nearly orthogonal to every real update and to the other canaries. After training,
canary ``i`` is scored by the cosine between ``u_i`` and the released model delta (with every
round's delta released, by the largest cosine over rounds, as in the paper's all-iterates
variant).

Test (Steinke, Nasr, Jagielski, NeurIPS 2023, one training run): each canary is included in
the population independently with probability 1/2, with fresh bits from :mod:`secrets`; the
auditor guesses "in" for the ``k_pos`` highest scores and "out" for the ``k_neg`` lowest, fixed
before training, and :func:`securefl.audit.empirical.audit` turns the number of correct guesses
into an ε lower bound at the stated confidence. A bound above the theoretical ε refutes the
claim (a bug in clipping, noise, sampling or accounting); a bound below it is consistent with
the claim but is not evidence of privacy. :func:`max_provable_lower_bound` states the highest
bound the design could ever show (every guess correct): an audit whose maximum is below the
claimed ε cannot refute that claim, and the report says so.

Directions are derived from a secret 32-byte seed (HKDF-SHA256 → ChaCha20 keystream →
Box–Muller), so they are recomputed on demand instead of holding ``m × dimension`` floats.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefl.audit.empirical import AuditResult, _CryptoNormal, audit, epsilon_lower_bound
from securefl.errors import ConfigurationError

FloatArray = npt.NDArray[np.float64]
METHOD = "client-level canaries (Andrew et al. 2024) + one-run test (Steinke et al. 2023)"
_INFO = b"securefl.audit.canary.v1.direction"
_MAX_CANARIES = 1_000_000


def max_provable_lower_bound(m: int, guesses: int, delta: float, confidence: float = 0.95) -> float:
    """The highest ε lower bound a design with ``m`` canaries and ``guesses`` guesses can
    show at ``delta`` and ``confidence``: the bound when every guess is correct."""
    if not 0 < guesses <= m:
        raise ConfigurationError("need 0 < guesses <= m", parameter="guesses")
    return epsilon_lower_bound(m, guesses, guesses, delta=delta, confidence=confidence)


@dataclass(frozen=True)
class CanaryDesign:
    """The audit's secret choices, fixed before training: directions seed, inclusion bits and
    how many guesses will be made. Keep it away from everything the audited run can read."""

    dimension: int
    clip: float
    seed: bytes = field(repr=False)
    inclusion: tuple[bool, ...] = field(repr=False)
    k_pos: int
    k_neg: int

    def __post_init__(self) -> None:
        m = len(self.inclusion)
        if not 1 <= m <= _MAX_CANARIES:
            raise ConfigurationError(f"need 1..{_MAX_CANARIES} canaries", parameter="m")
        if self.dimension < 2:
            raise ConfigurationError("must be at least 2", parameter="dimension")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("must be finite and > 0", parameter="clip")
        if len(self.seed) != 32:
            raise ConfigurationError("must be 32 bytes", parameter="seed")
        if self.k_pos < 0 or self.k_neg < 0 or not 0 < self.k_pos + self.k_neg <= m:
            raise ConfigurationError("need 0 < k_pos + k_neg <= m", parameter="k_pos")

    @classmethod
    def create(
        cls,
        m: int,
        dimension: int,
        clip: float,
        *,
        k_pos: int | None = None,
        k_neg: int | None = None,
    ) -> CanaryDesign:
        """``m`` canaries with fresh secret directions and inclusion bits (each 1/2).

        By default a quarter of the canaries are guessed "in" and a quarter "out"."""
        if not 1 <= m <= _MAX_CANARIES:
            raise ConfigurationError(f"need 1..{_MAX_CANARIES} canaries", parameter="m")
        bits = int.from_bytes(secrets.token_bytes((m + 7) // 8), "little")
        inclusion = tuple(bool((bits >> i) & 1) for i in range(m))
        k = max(1, m // 4)
        return cls(
            dimension=dimension,
            clip=float(clip),
            seed=secrets.token_bytes(32),
            inclusion=inclusion,
            k_pos=k if k_pos is None else k_pos,
            k_neg=k if k_neg is None else k_neg,
        )

    @property
    def m(self) -> int:
        return len(self.inclusion)

    @property
    def guesses(self) -> int:
        return self.k_pos + self.k_neg

    def _check(self, i: int) -> None:
        if not 0 <= i < self.m:
            raise ConfigurationError(f"canary index must be in [0, {self.m})", parameter="i")

    def included(self, i: int) -> bool:
        """Whether canary ``i`` takes part in training (the secret coin of the test)."""
        self._check(i)
        return self.inclusion[i]

    def included_ids(self) -> list[int]:
        return [i for i, inc in enumerate(self.inclusion) if inc]

    def direction(self, i: int) -> FloatArray:
        """Unit vector ``u_i`` (isotropic: normalised Gaussian from the seed's keystream)."""
        self._check(i)
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + i.to_bytes(8, "big")
        ).derive(self.seed)
        z = _CryptoNormal(key).normal(self.dimension)
        return z / float(np.linalg.norm(z))

    def canary_update(self, i: int) -> FloatArray:
        """The update canary ``i`` sends every round it is sampled: ``clip · u_i``."""
        return self.clip * self.direction(i)

    def scores(self, released: npt.ArrayLike) -> FloatArray:
        """Cosine of each canary direction with the released model delta (1-D), or the largest
        cosine over rounds when every round's delta is given (2-D: rounds × dimension)."""
        x = np.asarray(released, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ConfigurationError(
                f"expected a delta of dimension {self.dimension} (or rounds × dimension),"
                f" got shape {np.asarray(released).shape}",
                parameter="released",
            )
        if not np.all(np.isfinite(x)):
            raise ConfigurationError("released delta has NaN or Inf", parameter="released")
        norms = np.linalg.norm(x, axis=1)
        rows = x[norms > 0] / norms[norms > 0, None]
        if rows.shape[0] == 0:
            return np.zeros(self.m)
        return np.array([float(np.max(rows @ self.direction(i))) for i in range(self.m)])

    def max_provable_lower_bound(self, delta: float, confidence: float = 0.95) -> float:
        return max_provable_lower_bound(self.m, self.guesses, delta, confidence)

    def audit(
        self,
        released: npt.ArrayLike | Sequence[npt.ArrayLike],
        delta: float,
        *,
        confidence: float = 0.95,
        epsilon_theoretical: float | None = None,
        mechanism: str | None = None,
    ) -> AuditResult:
        """Score the canaries on the released delta(s) and run the one-run test.

        ``released`` is the final model minus the initial one, or every round's released
        delta stacked (rounds × dimension). ``epsilon_theoretical`` is the run's claimed ε at
        ``delta`` (for the verdict); ``mechanism`` says in words what was audited."""
        scores = self.scores(np.asarray(released, dtype=np.float64))
        result = audit(
            scores,
            np.array(self.inclusion, dtype=bool),
            k_pos=self.k_pos,
            k_neg=self.k_neg,
            delta=delta,
            confidence=confidence,
            epsilon_theoretical=epsilon_theoretical,
        )
        return AuditResult(
            canaries=result.canaries,
            guesses=result.guesses,
            correct=result.correct,
            confidence=result.confidence,
            delta=result.delta,
            epsilon_lower_bound=result.epsilon_lower_bound,
            epsilon_theoretical=result.epsilon_theoretical,
            method=METHOD,
            mechanism=mechanism,
            max_provable_lower_bound=self.max_provable_lower_bound(delta, confidence),
        )

    def describe(self) -> dict[str, Any]:
        """Public facts of the design for the ledger (no seed, no inclusion bits)."""
        return {
            "canaries": self.m,
            "canaries_included": sum(self.inclusion),
            "k_pos": self.k_pos,
            "k_neg": self.k_neg,
            "dimension": self.dimension,
            "canary_update_norm": self.clip,
            "score": "cosine with the released model delta (max over rounds if per round)",
        }
