"""Distributed discrete Gaussian (DDGauss) inside secure aggregation.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning
with Secure Aggregation" (ICML 2021), Alg. 1–2. Client: clip to L2 norm c, flatten with a
randomized Hadamard rotation HD (signs D from shared randomness; H block-diagonal
Walsh–Hadamard with power-of-two blocks, d padded only to a multiple of the block: see
:func:`rotation_block`), scale by 1/γ, conditional randomized rounding (retry until
‖rounded‖₂ ≤ Δ₂, §4.1), add its own N_Z(0, σ²)^d noise, reduce mod 2^b. The resulting
unsigned vector is the input of the secure aggregation round
(``securefl.secagg.simulate.run_round`` sums mod 2^b), so the server only ever sees a sum
that already carries the noise of every surviving client. Server: read the sum mod 2^b as
signed, multiply by γ, undo the rotation, drop the padding, divide by the fixed denominator.

Accounting (``DistributedDiscreteGaussianEvent``): the sum of n discrete Gaussians with
sensitivity Δ₂ (the rounding bound, in grid units) and Δ₁ = min(Δ₂², √d·Δ₂) (integer vectors:
|vᵢ| ≤ vᵢ²) is ½ε²-concentrated DP (Thm 1 of the paper, formula in
:func:`securefl.dp.accounting.ddgauss_concentrated_epsilon`). n is the WORST case — the
minimum cohort that secure aggregation accepts (``min_cohort``): dropouts remove noise, so we
never count clients that might not reply. Modular reduction is post-processing of the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.dp import _validate as v
from securefl.dp.accounting import _check_neighboring
from securefl.dp.clipping import clip_l2
from securefl.dp.errors import InvalidParameterError
from securefl.dp.events import DistributedDiscreteGaussianEvent
from securefl.dp.sampling import CryptoRandom, discrete_gaussian
from securefl.errors import AbortError

FloatVector = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]

#: KLS §4.1 default: the conditional rounding succeeds with probability ≥ 1 − β.
DEFAULT_BETA = math.exp(-0.5)
MAX_ROUNDING_TRIES = 1000
#: Coordinates per chunk of the rounding's uniforms (bounds the temporaries, stays in cache).
_CHUNK = 1 << 16


#: At most this many Hadamard blocks (rounded up) per vector: zero padding < 2·d/MAX_BLOCKS.
MAX_BLOCKS = 64
#: Vectors up to this size are one block, padded to the next power of two (KLS as written).
MIN_BLOCK = 1024


def rotation_block(d: int) -> int:
    """Block size B of the rotation: next power of two ≥ max(⌈d/64⌉, min(d, 1024)).

    H = I_{d'/B} ⊗ H_B is orthonormal like the full transform, so ‖HDx‖₂ = ‖x‖₂ and every
    privacy bound (Δ₂ enforced by conditional rounding, KLS Thm 1) holds unchanged with d' the
    encoded length; only the flattening that makes modular wrap rare is weaker: a coordinate
    is sub-Gaussian with scale ‖x_block‖/√B ≤ ‖x‖/√B instead of ‖x‖/√d' (at most √64 = 8×,
    which :func:`suggest_bits` budgets for). Padding is < max(1024, 2·d/64) zero coordinates
    instead of up to d (d = 10^5 → 100,352, was 131,072; 10^7 → 10,223,616, was 16,777,216).
    """
    d = v.count("dimension", d, minimum=1)
    want = max(-(-d // MAX_BLOCKS), min(d, MIN_BLOCK))
    return 1 << (want - 1).bit_length()


def padded_dimension(d: int) -> int:
    """Encoded length d': d rounded up to a multiple of :func:`rotation_block` (for d ≤ 1024
    the next power of two, one block)."""
    block = rotation_block(d)
    return -(-d // block) * block


def rotation_signs(seed: bytes, d_pad: int) -> npt.NDArray[np.float64]:
    """±1 diagonal D from a 32-byte shared seed (AES-CTR keystream; public to all parties)."""
    return np.where(_rotation_bits(seed, d_pad), -1.0, 1.0)


def _rotation_bits(seed: bytes, d_pad: int) -> npt.NDArray[np.bool_]:
    """Where D is −1 (one byte per coordinate instead of a float)."""
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise InvalidParameterError("must be 32 bytes", parameter="rotation_seed")
    return CryptoRandom(seed).bits(d_pad)


def _fwht_(y: FloatVector, block: int) -> FloatVector:
    """In place: orthonormal Walsh–Hadamard transform of each contiguous ``block`` of ``y``
    (its own inverse). The butterflies of the full transform stopped at span ``block``."""
    n = y.shape[0]
    if block < 1 or block & (block - 1) or n % block:
        raise InvalidParameterError(
            f"{block} is not a power of two dividing {n}", parameter="block"
        )
    half = np.empty(n // 2, dtype=np.float64)
    h = 1
    while h < block:
        pairs = y.reshape(-1, 2, h)
        top = half.reshape(-1, h)
        np.copyto(top, pairs[:, 0, :])
        pairs[:, 0, :] += pairs[:, 1, :]
        np.subtract(top, pairs[:, 1, :], out=pairs[:, 1, :])
        h *= 2
    y /= math.sqrt(block)
    return y


def rotate(x: FloatVector, signs: FloatVector, block: int | None = None) -> FloatVector:
    """H·D·x with x zero-padded to len(signs) and H block-diagonal with ``block``-sized
    Walsh–Hadamard blocks (default: one block, the whole padded vector)."""
    y = np.zeros(signs.shape[0], dtype=np.float64)
    y[: x.shape[0]] = x
    y *= signs
    return _fwht_(y, signs.shape[0] if block is None else block)


def unrotate(y: FloatVector, signs: FloatVector, d: int, block: int | None = None) -> FloatVector:
    """(H·D)⁻¹·y = D·H·y, truncated to the first d coordinates."""
    out = _fwht_(np.array(y, dtype=np.float64), signs.shape[0] if block is None else block)
    out *= signs
    return out[:d]


@dataclass(frozen=True)
class DDGaussConfig:
    """Public parameters of a DDGauss round (identical at every client and the server)."""

    dimension: int
    clip: float
    granularity: float
    client_sigma: int
    bits: int
    min_contributors: int
    expected_cohort: float
    beta: float = DEFAULT_BETA
    neighboring: str = "add_remove"

    def __post_init__(self) -> None:
        v.count("dimension", self.dimension, minimum=1)
        v.positive("clip", self.clip)
        v.positive("granularity", self.granularity)
        v.count("client_sigma", self.client_sigma, minimum=1)
        v.count("bits", self.bits, minimum=2)
        if self.bits > 64:
            raise InvalidParameterError("must be <= 64", parameter="bits")
        v.count("min_contributors", self.min_contributors, minimum=1)
        v.positive("expected_cohort", self.expected_cohort)
        b = v.finite("beta", self.beta)
        if not 0 < b < 1:
            raise InvalidParameterError("must be in (0, 1)", parameter="beta")
        _check_neighboring(self.neighboring)

    @property
    def padded_dimension(self) -> int:
        """Encoded length d' (a multiple of :attr:`rotation_block`): what clients mask."""
        return padded_dimension(self.dimension)

    @property
    def rotation_block(self) -> int:
        return rotation_block(self.dimension)

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        """Word type of the secure-aggregation input (matches securefl.encoding.RingPlan)."""
        return np.uint32 if self.bits <= 32 else np.uint64

    @property
    def rounding_bound(self) -> float:
        """Δ₂ of one client's rounded vector (KLS §4.1, Thm 2 / eq. for conditional rounding):
        min{ √(c²/γ² + d/4 + √(2 ln(1/β))·(c/γ + √d/2)),  c/γ + √d }."""
        c, g, d = self.clip, self.granularity, self.padded_dimension
        a = math.sqrt(
            c**2 / g**2
            + d / 4
            + math.sqrt(2 * math.log(1 / self.beta)) * (c / g + math.sqrt(d) / 2)
        )
        return min(a, c / g + math.sqrt(d))

    @property
    def l2_sensitivity(self) -> float:
        """Δ₂ of the integer sum (doubled for replace-one adjacency)."""
        return (2.0 if self.neighboring == "replace_one" else 1.0) * self.rounding_bound

    @property
    def l1_sensitivity(self) -> float:
        """Δ₁ = min(Δ₂², √d·Δ₂) (integer vectors), doubled for replace-one."""
        d2 = self.rounding_bound
        base = min(d2 * d2, math.sqrt(self.padded_dimension) * d2)
        return (2.0 if self.neighboring == "replace_one" else 1.0) * base

    def event(self) -> DistributedDiscreteGaussianEvent:
        """One round's mechanism event (wrap it with the sampling actually performed)."""
        return DistributedDiscreteGaussianEvent(
            sigma=float(self.client_sigma),
            min_contributors=self.min_contributors,
            l2_sensitivity=self.l2_sensitivity,
            l1_sensitivity=max(self.l1_sensitivity, self.l2_sensitivity),
            dimension=self.padded_dimension,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mechanism": "ddgauss",
            "dimension": self.dimension,
            "padded_dimension": self.padded_dimension,
            "rotation_block": self.rotation_block,
            "clip": self.clip,
            "granularity": self.granularity,
            "client_sigma": self.client_sigma,
            "bits": self.bits,
            "min_contributors": self.min_contributors,
            "expected_cohort": self.expected_cohort,
            "beta": self.beta,
            "neighboring": self.neighboring,
            "privacy_unit": "client",
            "rounding_bound": self.rounding_bound,
            "l2_sensitivity": self.l2_sensitivity,
            "l1_sensitivity": self.l1_sensitivity,
        }

    @classmethod
    def for_noise_multiplier(
        cls,
        noise_multiplier: float,
        *,
        dimension: int,
        clip: float,
        granularity: float,
        bits: int,
        min_contributors: int,
        expected_cohort: float,
        neighboring: str = "add_remove",
    ) -> DDGaussConfig:
        """σ per client so that n_min clients together give noise z·Δ₂: σ = ⌈z·Δ₂/√n_min⌉."""
        z = v.positive("noise_multiplier", noise_multiplier)
        probe = cls(
            dimension,
            clip,
            granularity,
            1,
            bits,
            min_contributors,
            expected_cohort,
            neighboring=neighboring,
        )
        sigma = max(1, math.ceil(z * probe.l2_sensitivity / math.sqrt(min_contributors)))
        return cls(
            dimension,
            clip,
            granularity,
            sigma,
            bits,
            min_contributors,
            expected_cohort,
            neighboring=neighboring,
        )


def conditional_round(
    x: FloatVector, bound: float, rng: CryptoRandom, *, max_tries: int = MAX_ROUNDING_TRIES
) -> IntVector:
    """Randomized rounding (up w.p. the fractional part), retried until ‖result‖₂ ≤ bound."""
    return _conditional_round_(np.array(x, dtype=np.float64), bound, rng, max_tries=max_tries)


def _conditional_round_(
    x: FloatVector, bound: float, rng: CryptoRandom, *, max_tries: int = MAX_ROUNDING_TRIES
) -> IntVector:
    """:func:`conditional_round` that overwrites ``x`` with its fractional part: three d-vectors
    live (floor, fraction, result) and the uniforms are drawn in chunks (the keystream is read
    in the same order whatever the chunking, so the result is that of one d-sized draw)."""
    n = x.shape[0]
    floor = np.floor(x)
    frac = np.subtract(x, floor, out=x)
    z = np.empty(n, dtype=np.int64)
    for _ in range(max_tries):
        square = 0.0
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            u = (rng.uint64(stop - start) >> np.uint64(11)).astype(np.float64) * 2.0**-53
            part = floor[start:stop] + (u < frac[start:stop])
            square += float(np.dot(part, part))
            z[start:stop] = part
        if math.sqrt(square) <= bound:
            return z
    raise AbortError(f"conditional rounding failed {max_tries} times (bound {bound:.4g})")


def client_encode(
    update: npt.ArrayLike,
    config: DDGaussConfig,
    *,
    rotation_seed: bytes,
    rng: CryptoRandom | None = None,
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """One client's noisy, rotated, rounded vector mod 2^b: the secure-aggregation input.

    Works in place on one padded float vector (signs as bits, not floats): about 4 d'-sized
    words live at the peak (fraction, floor, rounded, noise) besides the caller's update.
    """
    rng = rng or CryptoRandom()
    x = np.asarray(update, dtype=np.float64)
    if x.shape != (config.dimension,):
        raise InvalidParameterError(
            f"expected shape ({config.dimension},), got {x.shape}", parameter="update"
        )
    clipped, _ = clip_l2(x, config.clip)
    y = np.zeros(config.padded_dimension, dtype=np.float64)
    y[: config.dimension] = clipped
    del clipped
    negate = _rotation_bits(rotation_seed, config.padded_dimension)
    np.negative(y, out=y, where=negate)  # D·x
    del negate
    _fwht_(y, config.rotation_block)  # H·D·x
    y /= config.granularity
    noisy = _conditional_round_(y, config.rounding_bound, rng)
    del y
    noisy += discrete_gaussian(config.padded_dimension, config.client_sigma, rng=rng)
    wrapped = noisy.view(np.uint64)  # two's complement, then mod 2^b
    if config.bits < 64:
        wrapped &= np.uint64((1 << config.bits) - 1)
    return wrapped.astype(config.dtype, copy=False)


def server_decode(
    total: npt.NDArray[Any],
    config: DDGaussConfig,
    *,
    rotation_seed: bytes,
    denominator: float | None = None,
) -> FloatVector:
    """Sum mod 2^b → signed → ×γ → inverse rotation → ÷ fixed denominator (expected cohort)."""
    arr = np.asarray(total)
    if arr.shape != (config.padded_dimension,) or arr.dtype.kind != "u":
        raise InvalidParameterError(
            f"expected unsigned shape ({config.padded_dimension},)", parameter="total"
        )
    denom = (
        config.expected_cohort if denominator is None else v.positive("denominator", denominator)
    )
    signed = arr.astype(np.uint64).view(np.int64)
    if config.bits < 64:  # the b-bit two's complement value: (u XOR 2^(b−1)) − 2^(b−1)
        half = np.int64(1 << (config.bits - 1))
        signed ^= half
        signed -= half
    y = signed.astype(np.float64)
    del signed
    y *= config.granularity
    _fwht_(y, config.rotation_block)  # H is its own inverse
    np.negative(y, out=y, where=_rotation_bits(rotation_seed, config.padded_dimension))
    return y[: config.dimension] / denom


def sum_mod(vectors: list[npt.NDArray[Any]], config: DDGaussConfig) -> npt.NDArray[Any]:
    """Plain modular sum (what secure aggregation computes) — for tests and simulations."""
    acc = np.zeros(config.padded_dimension, dtype=np.uint64)
    for vec in vectors:
        acc += vec.astype(np.uint64)
    if config.bits < 64:
        acc &= np.uint64((1 << config.bits) - 1)
    return acc.astype(config.dtype)


def suggest_bits(config_like: DDGaussConfig, n_clients: int, *, tail_sigmas: float = 8.0) -> int:
    """Ring width so a coordinate of the sum of n clients stays within ±2^(b−1) with margin:
    n·(c/(γ√d)·k... ) — KLS §5: |coord| ≲ k·√(n)·√(c²/(γ²d) + σ²) + n·(tail of rotation).
    d is the rotation block B, not d': a block flattens only its own share of the norm, and
    in the worst case one block holds all of it."""
    n = v.count("n_clients", n_clients, minimum=1)
    c, g, d = config_like.clip, config_like.granularity, config_like.rotation_block
    per = math.sqrt(c**2 / (g**2 * d) + config_like.client_sigma**2 + 0.25)
    spread = tail_sigmas * math.sqrt(n) * per + n * tail_sigmas * c / (g * math.sqrt(d))
    return min(64, max(2, math.ceil(math.log2(spread + 1)) + 2))
