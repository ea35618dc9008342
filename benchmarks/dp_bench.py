"""DP benchmarks: PLD accounting speed, exact discrete Gaussian vs numpy normal, PLD accuracy.

Usage: ``python benchmarks/dp_bench.py --quick`` (last line: one JSON object).

* ``pld_eps_T10000_s``: PLD ε of 10,000 Poisson-subsampled Gaussian rounds (q = 0.01, σ = 1,
  δ = 1e-5) with our default value_discretization_interval 1e-3 (median of repeats; the
  first call also pays the imports). ``pld_eps_T10000`` is that ε, ``pld_eps_T10000_ref`` the
  dp-accounting reference at interval 1e-4.
* ``discrete_gaussian_vs_numpy_normal``: min time of 2^20 exact N_Z(0, 100²) samples from
  the AES-CTR source ÷ min time of numpy ``Generator.normal`` for 2^20 (same run, interleaved).
* ``pld_vs_reference_rel_err``: largest |ε_ours − ε_ref|/ε_ref over the test grid of
  ``tests/dp/test_dp_accounting.py`` (reference: dp-accounting PLD at interval 1e-4).
* ``discrete_vs_continuous_eps``: ε charged (``pld``) for the discrete noise the loop records
  ÷ the continuous Gaussian's PLD ε at the default run (q = 0.2, z = 0.942, T = 10,
  d = 38,416, frac_bits = 16, clip = 0.5, δ = 1e-5); target ≤ 1.02 (protocols/dp.md §3.1).
  ``discrete_vs_continuous_eps_max`` is the largest of that ratio over the three (q, z, T)
  points of issue 13, ``discrete_rdp_vs_continuous_rdp_max`` the same for RDP ÷ RDP.
* ``ftrl_eps_{rdp,pld,prv}``: ε of the default DP-FTRL run (T = 10, one participation,
  d = 38,416, clip 0.5, f = 16, δ = 1e-5) at the per-node z that RDP calibrates to ε = 8
  (``ftrl_z_rdp``); ``ftrl_z_pld`` is the per-node z PLD calibrates to the same ε (less noise
  for the same guarantee; protocols/dp.md §3.2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

GRID = [
    (0.01, 0.8, 10, 1e-5),
    (0.01, 0.8, 500, 1e-5),
    (0.01, 2.0, 500, 1e-5),
    (0.2, 0.8, 10, 1e-5),
    (0.2, 2.0, 10, 1e-5),
    (0.2, 2.0, 500, 1e-5),
    (1.0, 2.0, 1, 1e-5),
    (1.0, 5.0, 100, 1e-5),
    (0.05, 1.0, 200, 1e-7),
    (0.01, 1.0, 2000, 1e-6),
]


def _pld_speed(repeats: int) -> tuple[float, float, float]:
    import dp_accounting as dpa

    from securefl.dp.accounting import get_accountant
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

    event = SelfComposedEvent(PoissonSampledEvent(0.01, GaussianEvent(1.0)), 10_000)
    acc = get_accountant("pld")
    acc.epsilon(SelfComposedEvent(PoissonSampledEvent(0.01, GaussianEvent(1.0)), 10), 1e-5)
    times, eps = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        eps = acc.epsilon(event, 1e-5)
        times.append(time.perf_counter() - t0)
    ref = dpa.pld.PLDAccountant(value_discretization_interval=1e-4)
    ref.compose(
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.0)), 10_000)
    )
    return statistics.median(times), eps, float(ref.get_epsilon(1e-5))


def _sampler_ratio(repeats: int) -> tuple[float, float, float]:
    from securefl.dp.sampling import CryptoRandom, discrete_gaussian

    n = 1 << 20
    rng = CryptoRandom()
    gen = np.random.default_rng()
    discrete_gaussian(1 << 12, 100, rng=rng)  # builds the per-σ tables once
    ours, theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        discrete_gaussian(n, 100, rng=rng)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gen.normal(0.0, 100.0, n)
        theirs.append(time.perf_counter() - t0)
    return min(ours) / min(theirs), min(ours), min(theirs)


def _pld_accuracy() -> float:
    import dp_accounting as dpa

    from securefl.dp.accounting import get_accountant
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent

    acc = get_accountant("pld")
    worst = 0.0
    for q, sigma, t, delta in GRID:
        ref = dpa.pld.PLDAccountant(value_discretization_interval=1e-4)
        ref.compose(
            dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), t)
        )
        r = float(ref.get_epsilon(delta))
        ours = acc.epsilon(
            SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(sigma)), t), delta
        )
        worst = max(worst, abs(ours - r) / r)
    return worst


#: (q, z, T) points of issue 13 (the first is the default run).
DISCRETE_POINTS = [(0.2, 0.942, 10), (0.1, 3.0, 50), (0.01, 1.0, 1000)]


def _discrete_vs_continuous() -> tuple[float, float, float]:
    from securefl.dp.accounting import discrete_vs_continuous_eps, get_accountant
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent
    from securefl.dp.fedavg import DpFedAvgConfig

    ratios, rdp_ratios = [], []
    rdp = get_accountant("rdp")
    for q, z, t in DISCRETE_POINTS:
        ratios.append(discrete_vs_continuous_eps(q, z, t, 1e-5, dimension=38_416))
        cfg = DpFedAvgConfig(clip=0.5, noise_multiplier=z, expected_cohort=1.0, frac_bits=16)
        disc = SelfComposedEvent(PoissonSampledEvent(q, cfg.round_event(38_416)), t)
        cont = SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(z)), t)
        rdp_ratios.append(rdp.epsilon(disc, 1e-5) / rdp.epsilon(cont, 1e-5))
    return ratios[0], max(ratios), max(rdp_ratios)


def _ftrl_default() -> dict[str, float]:
    from securefl.dp.accounting import calibrate_noise_multiplier, get_accountant
    from securefl.dp.events import DpEvent
    from securefl.dp.ftrl import DpFtrlConfig
    from securefl.fl.mechanisms import ftrl_events
    from securefl.fl.privacy import compose

    def run(z: float) -> DpEvent:
        conf = DpFtrlConfig(
            clip=0.5,
            noise_multiplier=z,
            expected_cohort=32.0,
            min_separation=1,
            max_participations=1,
        )
        return compose(ftrl_events(conf, 38_416, 10))

    out: dict[str, float] = {}
    for name in ("rdp", "pld"):
        z = calibrate_noise_multiplier(8.0, 1e-5, rounds=1, accountant=name, event_for=run)
        out[f"ftrl_z_{name}"] = round(z, 4)
    for name in ("rdp", "pld", "prv"):
        eps = get_accountant(name).epsilon(run(out["ftrl_z_rdp"]), 1e-5)
        out[f"ftrl_eps_{name}"] = round(eps, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    pld_s, eps, eps_ref = _pld_speed(repeats)
    ratio, ours_s, numpy_s = _sampler_ratio(5 if args.quick else 15)
    print(f"PLD ε(T=10000, q=0.01, σ=1, δ=1e-5) = {eps:.4f} (ref {eps_ref:.4f}) in {pld_s:.3f} s")
    print(f"discrete Gaussian 2^20 @σ=100: {ours_s * 1e3:.1f} ms, numpy {numpy_s * 1e3:.1f} ms")
    rel = _pld_accuracy()
    print(f"PLD vs dp-accounting (1e-4) on the test grid: max rel err {rel:.2e}")
    dvc, dvc_max, rdp_max = _discrete_vs_continuous()
    print(f"discrete ÷ continuous PLD ε: default run {dvc:.5f}, max over points {dvc_max:.5f}")
    ftrl = _ftrl_default()
    print(f"DP-FTRL default run: {ftrl}")
    result = {
        "pld_eps_T10000_s": round(pld_s, 4),
        "pld_eps_T10000": round(eps, 5),
        "pld_eps_T10000_ref": round(eps_ref, 5),
        "pld_value_discretization_interval": 1e-3,
        "discrete_gaussian_vs_numpy_normal": round(ratio, 3),
        "discrete_gaussian_2p20_s": round(ours_s, 4),
        "numpy_normal_2p20_s": round(numpy_s, 4),
        "pld_vs_reference_rel_err": float(f"{rel:.3e}"),
        "discrete_vs_continuous_eps": round(dvc, 5),
        "discrete_vs_continuous_eps_max": round(dvc_max, 5),
        "discrete_rdp_vs_continuous_rdp_max": round(rdp_max, 6),
        **ftrl,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
