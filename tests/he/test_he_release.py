"""What leaves the key holder (issue 12 #2, #4; issue 10 #4).

* Central DP with HE: the key holder adds the DP-FedAvg discrete Gaussian before release, so
  everything the server receives is noisy, with the stated grid σ (χ² test), and the
  noiseless sum appears nowhere the server can look.
* Release rounding is sized from the key holder's own configuration, never a server claim.
* The worker pool is off by default: decrypting starts no process.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from typing import Any

import numpy as np
import pytest
from scipy import stats

from securefl.dp.fedavg import DpFedAvgConfig, release, to_grid
from securefl.errors import ConfigurationError, LocalProtocolError
from securefl.he import (
    CentralNoise,
    HEClient,
    HEServer,
    KeyHolder,
    MalformedCiphertextError,
    wire,
)
from securefl.he.simulate import run_round

from .conftest import parse_envelope

#: χ² test: the probability that a correct implementation fails it (two-sided).
FALSE_FAILURE = 1e-6
N_CLIENTS = 5
D = 2 * 4096 + 100


def _dp(**kw: Any) -> DpFedAvgConfig:
    base: dict[str, Any] = dict(
        clip=1.0, noise_multiplier=1.1, expected_cohort=N_CLIENTS, frac_bits=16
    )
    return DpFedAvgConfig(**(base | kw))


def _cohort(seed: int) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)  # test data only
    out = {}
    for c in range(N_CLIENTS):
        x = rng.normal(size=D)
        out[c] = {"delta": x / np.linalg.norm(x), "count": np.ones(1)}  # clipped to C = 1
    return out


def _reachable_arrays(obj: Any, depth: int = 0) -> list[np.ndarray]:
    """Every numpy array reachable from ``obj`` through attributes, dicts and sequences."""
    if depth > 6:
        return []
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, list | tuple | set | frozenset):
        items = obj
    elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return []
    return [a for item in items for a in _reachable_arrays(item, depth + 1)]


def test_server_receives_only_dp_noised_sum(holders: dict[str, KeyHolder]) -> None:
    """Capture what the server holds after the round: the release differs from the true sum by
    noise whose empirical variance matches the stated σ_grid (χ², false failure 1e-6), and no
    array the server can reach equals the noiseless sum."""
    kh = holders["fast"]
    cfg = _dp()
    noise = CentralNoise(cfg, tensors=("delta",))
    cohort = _cohort(1)
    client = HEClient(kh.public_context_bytes())
    server = HEServer(kh.server_context_bytes())
    aggregate = server.aggregate([client.encrypt(x) for x in cohort.values()])
    received = kh.decrypt_result(aggregate, noise=noise)  # what the key holder sends out

    true_sum = sum(x["delta"] for x in cohort.values())
    sigma = cfg.grid_sigma(D)
    assert received.metadata["noise_grid_sigma"] == sigma
    assert received.grid_sum is not None and received.grid_sum.shape == (D,)
    # CKKS error (≤ 2e-5) moves each grid integer by at most 2 steps: negligible next to σ
    err = (received.grid_sum - to_grid(true_sum, cfg.frac_bits)).astype(np.float64)
    chi2 = float(np.sum(err**2)) / sigma**2
    lo = stats.chi2.ppf(FALSE_FAILURE / 2, D)
    hi = stats.chi2.isf(FALSE_FAILURE / 2, D)
    assert lo < chi2 < hi, (chi2, lo, hi)
    assert abs(float(np.mean(err))) < 6 * sigma / np.sqrt(D)
    np.testing.assert_array_equal(received.tensors["delta"], received.grid_sum * 2.0**-16)
    # the count coordinate is not noised: it is what the server already knows (5 uploads)
    assert received.tensors["count"][0] == pytest.approx(N_CLIENTS, abs=1e-4)

    # nothing the server holds is the noiseless sum (the key holder is the one that saw it)
    for arr in _reachable_arrays(server) + _reachable_arrays(received):
        if arr.shape == true_sum.shape:
            assert float(np.median(np.abs(arr - true_sum))) > 0.1 * sigma * 2.0**-16


def test_run_round_passes_noise_to_key_holder(holders: dict[str, KeyHolder]) -> None:
    """The fl layer's call: run_round(..., noise=…) → noisy total, event check, fixed-denominator
    average via securefl.dp.fedavg.release."""
    cfg = _dp()
    cohort = _cohort(2)
    result = run_round(cohort, holders["fast"], noise=CentralNoise(cfg, tensors=("delta",)))
    true_sum = sum(x["delta"] for x in cohort.values())
    assert result.grid_sum is not None
    dev = np.abs(result.total["delta"] - true_sum)
    assert float(np.median(dev)) > 0.3 * cfg.grid_sigma(D) * 2.0**-16
    meta = result.metadata
    central = meta["central_noise"]
    assert isinstance(central, dict)
    event = cfg.round_event(D)
    assert central["grid_sigma"] == event.sigma
    assert central["grid_sensitivity"] == event.l2_sensitivity
    assert central["dimension"] == event.dimension == D
    assert central["added_by"] == "key_holder"
    assert meta["release"] == "dp_noise+round"
    avg = release(result.grid_sum, cfg)
    np.testing.assert_allclose(avg, result.total["delta"] / cfg.expected_cohort)


def test_configured_noise_cannot_be_skipped_or_replaced(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    cfg = _dp()
    noisy_kh = KeyHolder.from_secret_context_bytes(
        kh.secret_context_bytes(), noise=CentralNoise(cfg)
    )
    client = HEClient(kh.public_context_bytes())
    x = {"a": np.zeros(300)}
    agg = HEServer(kh.server_context_bytes()).aggregate([client.encrypt(x)])
    for released in (noisy_kh.decrypt(agg), noisy_kh.decrypt_result(agg).tensors):
        assert float(np.std(released["a"])) > 0.5 * cfg.grid_sigma(300) * 2.0**-16
    with pytest.raises(LocalProtocolError):
        noisy_kh.decrypt_result(agg, noise=CentralNoise(_dp(noise_multiplier=0.5)))
    with pytest.raises(ConfigurationError, match=r"noise\.tensors"):
        kh.decrypt_result(agg, noise=CentralNoise(cfg, tensors=("missing",)))
    with pytest.raises(ConfigurationError, match="noise"):
        CentralNoise(cfg, tensors=())


def _relabel(kh: KeyHolder, aggregate: bytes, **changes: Any) -> bytes:
    env = parse_envelope(kh, aggregate, wire.KIND_AGGREGATE)
    return dataclasses.replace(env, **changes).pack()


def test_claimed_contributions_do_not_shrink_the_grid(holders: dict[str, KeyHolder]) -> None:
    """Issue 12 #4: a server claiming 1 contribution gets the honest (safe) grid."""
    kh = holders["fast"]
    client = HEClient(kh.public_context_bytes())
    rng = np.random.default_rng(3)
    ups = [client.encrypt({"a": rng.uniform(-1, 1, 500)}) for _ in range(10)]
    honest = HEServer(kh.server_context_bytes()).aggregate(ups)
    lying = _relabel(kh, honest, contributions=1)
    g_honest = kh.decrypt_result(honest).metadata["release_grid"]
    got = kh.decrypt_result(lying).metadata
    assert got["release_grid"] == g_honest
    assert got["rounding_sized_for_contributions"] == kh.max_contributions
    # a key holder configured for a small cohort refuses a larger claim, never trusts a smaller
    small = KeyHolder.from_secret_context_bytes(kh.secret_context_bytes(), max_contributions=10)
    assert (
        small.decrypt_result(lying).metadata["release_grid"]
        == (small.decrypt_result(honest).metadata["release_grid"])
    )
    with pytest.raises(MalformedCiphertextError, match="max_contributions"):
        small.decrypt_result(_relabel(kh, honest, contributions=11))


def test_claimed_server_weights_do_not_shrink_the_grid(holders: dict[str, KeyHolder]) -> None:
    kh = holders["weighted"]
    client = HEClient(kh.public_context_bytes())
    ups = [client.encrypt({"a": np.linspace(-1, 1, 300)}) for _ in range(4)]
    honest = HEServer(kh.server_context_bytes()).aggregate(ups, weights=[1.0, 1.5, 2.0, 0.5])
    tiny = _relabel(kh, honest, server_weight_sum=1e-9, server_weight_sq_sum=1e-18)
    assert (
        kh.decrypt_result(tiny).metadata["release_grid"]
        == kh.decrypt_result(honest).metadata["release_grid"]
    )
    huge = _relabel(kh, honest, server_weight_sum=1e300, server_weight_sq_sum=1e300)
    with pytest.raises(MalformedCiphertextError, match="server weight sums"):
        kh.decrypt_result(huge)


def test_default_starts_no_worker_processes(holders: dict[str, KeyHolder]) -> None:
    """Issue 10 #4: the secret key stays in one process unless the caller opts in."""
    kh = holders["fast"]
    fresh = KeyHolder.from_secret_context_bytes(kh.secret_context_bytes())
    client = HEClient(kh.public_context_bytes())
    before = {p.pid for p in multiprocessing.active_children()}
    x = {"a": np.zeros(20 * 4096)}  # 20 chunks: above the pool's threshold
    agg = HEServer(kh.server_context_bytes()).aggregate([client.encrypt(x)])
    result = fresh.decrypt_result(agg)
    assert {p.pid for p in multiprocessing.active_children()} == before
    assert fresh.workers == 1 and client.workers == 1
    assert result.metadata["decrypt_workers"] == 1
    assert result.metadata["secret_key_processes"] == 1
    with pytest.raises(ConfigurationError, match="workers"):
        KeyHolder.from_secret_context_bytes(kh.secret_context_bytes(), workers=0)
