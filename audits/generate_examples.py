"""Regenerate the sample privacy reports under ``audits/examples/`` from a REAL run's ledger.

Two sources:

* ``--ledger PATH --public-key PUB`` — the ledger of a run of the fine-tuning loop, e.g.
  ``securefl simulate`` writes ``<run dir>/ledger.sqlite`` and
  ``<run dir>/ledger_signing_key.pem.pub``;
* no ``--ledger`` (the default) — a small demonstration run performed here: client-level
  DP-FedAvg (McMahan et al. 2018) of a logistic-regression model over 24 synthetic clients,
  Poisson client sampling, every sum computed by the project's SecAgg+ implementation
  (``securefl.secagg.simulate``) with simulated dropouts, central Gaussian noise σ = z·C, the
  budget policy asked before each round (the last rounds are refused), and a one-run empirical
  audit (Steinke et al. 2023) of a DP-SGD model recorded beside it.

Usage (from the repository root)::

    python audits/generate_examples.py
    python audits/generate_examples.py --ledger runs/default/ledger.sqlite \\
        --public-key runs/default/ledger_signing_key.pem.pub

The ledger (a consistent SQLite backup) and its public key are copied next to the reports, so
``securefl audit verify audits/examples/ledger.sqlite -k audits/examples/ledger.pub`` checks
that the examples come from that ledger; the demo's signing key is discarded.
"""

from __future__ import annotations

import argparse
import math
import secrets
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from securefl.audit.empirical import DemoConfig, _CryptoNormal, record_audit, run_demo
from securefl.audit.keys import write_keypair
from securefl.audit.ledger import Ledger
from securefl.audit.policy import BudgetPolicy, record_policy, record_refusal
from securefl.audit.provenance import code_version
from securefl.audit.report import build_report, write_html, write_json, write_markdown

HERE = Path(__file__).resolve().parent
DEFAULT_POLICY = HERE / "policies" / "client_level_secagg.toml"
N_CLIENTS, DIM, ROUNDS, Q, CLIP, DELTA = 24, 20, 30, 0.5, 0.5, 1e-5


def _client_data(rng: np.random.Generator) -> tuple[list[tuple[Any, Any]], tuple[Any, Any]]:
    """Non-IID synthetic binary classification: each client sees a shifted feature mean."""
    beta = rng.normal(size=DIM)
    clients = []
    for _ in range(N_CLIENTS):
        shift = rng.normal(scale=0.5, size=DIM)
        x = rng.normal(size=(int(rng.integers(40, 120)), DIM)) + shift
        clients.append((x, (x @ beta + rng.normal(scale=0.5, size=len(x)) > 0).astype(float)))
    xt = rng.normal(size=(1000, DIM))
    return clients, (xt, (xt @ beta > 0).astype(float))


def _local_update(w: Any, x: Any, y: Any) -> Any:
    v = w.copy()
    for _ in range(5):
        p = 1 / (1 + np.exp(-(x @ v[:-1] + v[-1])))
        g = np.concatenate([x.T @ (p - y), [np.sum(p - y)]]) / len(y)
        v -= 0.5 * g
    delta = v - w
    norm = float(np.linalg.norm(delta))
    return delta * min(1.0, CLIP / max(norm, 1e-12))  # client-level L2 clip (Δ₂ = C)


def demo_run(ledger: Ledger, policy: BudgetPolicy) -> None:
    from securefl.dp.accounting import calibrate_noise_multiplier, get_accountant
    from securefl.dp.events import GaussianEvent, PoissonSampledEvent, SelfComposedEvent
    from securefl.encoding import plan_ring
    from securefl.secagg.simulate import (
        DropoutPlan,
        SimulatedIdentities,
        secure_sum_named,
        simulation_config,
    )
    from securefl.tensors import TensorLayout

    rng = np.random.default_rng(7)  # data and simulated dropouts only (not secrets)
    clients, (xt, yt) = _client_data(rng)
    z = calibrate_noise_multiplier(
        policy.max_epsilon, DELTA, rounds=ROUNDS - 5, sampling=Q, accountant=policy.accountant
    )
    event = PoissonSampledEvent(Q, GaussianEvent(z))
    noise = _CryptoNormal()
    w = np.zeros(DIM + 1)
    layout = TensorLayout.from_tensors({"w": w})
    agg_base = {"protocol": "secagg+", "degree": 8, "frac_bits": 16}
    ledger.append(
        "run_started",
        {
            "privacy_unit": "client",
            "adjacency": "add-remove",
            "delta": DELTA,
            "mechanism": "dp-fedavg-central-gaussian",
            "clip": CLIP,
            "noise_multiplier": z,
            "accountant": policy.accountant,
            "rounds": ROUNDS,
            "sampling": {
                "scheme": "poisson",
                "rate": Q,
                "population": N_CLIENTS,
                "source": "ChaCha20 keystream (os.urandom key)",
            },
            "denominator": Q * N_CLIENTS,
            "aggregation": agg_base,
            "model": "logistic regression, 21 parameters (demo)",
            "code_version": code_version(),
        },
    )
    ledger.append(
        "model_provenance",
        {
            "base_model": "logistic-regression-demo (zero-initialised, no pretrained weights)",
            "weights_sha256": {"initial": __import__("hashlib").sha256(w.tobytes()).hexdigest()},
            "licence": "n/a (generated)",
            "source": "audits/generate_examples.py",
        },
    )
    record_policy(ledger, policy)
    acct = get_accountant(policy.accountant)
    done = 0
    identities = SimulatedIdentities()  # the population's signing keys, kept across rounds
    for r in range(ROUNDS):
        coins = noise.uniform(N_CLIENTS)
        cohort = [u + 1 for u in range(N_CLIENTS) if coins[u] < Q]
        t = max(2, math.ceil(0.6 * min(len(cohort) - 1, 8)))
        agg = {**agg_base, "threshold": t}
        info = {
            "run_id": ledger.run_id,
            "round_id": r,
            "participants": len(cohort),
            "aggregation": agg,
        }
        decision = policy.check_round(ledger, event, info)
        if not decision.allowed:
            record_refusal(ledger, decision, info, projected_event=event, policy=policy)
            break
        ledger.append(
            "round_projected",
            {
                "dp_event": event.to_dict(),
                "projected_epsilon": decision.projected_epsilon,
                "cohort_size": len(cohort),
                "aggregation": agg,
            },
            round_id=r,
        )
        dropped = frozenset(u for u in cohort if rng.random() < 0.08)
        plan = plan_ring(len(cohort), CLIP, 16)
        cfg = simulation_config(
            cohort,
            threshold=t,
            bits=plan.bits,
            dimension=layout.size,
            degree=8,
            round_index=r,
            layout_digest=layout.digest(),
            identities=identities,
        )
        updates = {u: {"w": _local_update(w, *clients[u - 1])} for u in cohort}
        drop = DropoutPlan(masked_input=dropped)
        res = secure_sum_named(updates, cfg, plan, dropouts=drop, identities=identities)
        total = res.sums["w"] + z * CLIP * noise.normal(DIM + 1)
        w = w + total / (Q * N_CLIENTS)  # fixed denominator (never the reply count)
        done += 1
        logits = xt @ w[:-1] + w[-1]
        acc = float(np.mean((logits > 0) == (yt > 0.5)))
        loss = float(np.mean(np.logaddexp(0, -(2 * yt - 1) * logits)))
        eps = acct.epsilon(SelfComposedEvent(event, done), DELTA)
        ledger.append(
            "round_completed",
            {
                "dp_event": event.to_dict(),
                "participants": len(res.round.survivors),
                "cohort_size": len(cohort),
                "dropouts": len(cohort) - len(res.round.survivors),
                "aggregation": {**agg, "modulus_bits": plan.bits},
                "metrics": {
                    "accuracy": acc,
                    "loss": loss,
                    "bytes_up": float(res.round.total_bytes_up),
                    "bytes_down": float(res.round.total_bytes_down),
                },
                "epsilon": {policy.accountant: eps},
                "accountant": policy.accountant,
            },
            round_id=r,
        )
    ledger.append("run_finished", {"rounds_completed": done})
    audit_cfg = DemoConfig(private=True, noise_multiplier=1.5, sampling_rate=0.1, steps=100)
    result, details = run_demo(audit_cfg)
    record_audit(ledger, result, run_id="empirical-audit-dpsgd", details=details)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ledger", type=Path, help="ledger of a real run (default: demo run)")
    ap.add_argument("--public-key", type=Path, help="the run's public key (with --ledger)")
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    ap.add_argument("--out", type=Path, default=HERE / "examples")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    policy = BudgetPolicy.load(args.policy)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.ledger is None:
            key = Path(tmp) / "demo.pem"
            pub = write_keypair(key)
            path = Path(tmp) / "demo_ledger.sqlite"
            with Ledger(path, key, run_id=f"demo-{secrets.token_hex(4)}") as ledger:
                demo_run(ledger, policy)
            title = args.title or "Privacy report — demo DP-FedAvg over SecAgg+"
        else:
            if args.public_key is None:
                ap.error("--public-key is required with --ledger")
            path, pub = args.ledger, args.public_key
            title = args.title or f"Privacy report — {args.ledger.parent.name}"
        copy = args.out / "ledger.sqlite"
        copy.unlink(missing_ok=True)
        src, dst = (
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True),
            sqlite3.connect(copy),
        )
        src.backup(dst)  # consistent snapshot even while the WAL holds recent commits
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        src.close()
        dst.close()
        shutil.copy(pub, args.out / "ledger.pub")
        label = (
            str(copy.resolve().relative_to(HERE.parent))
            if copy.resolve().is_relative_to(HERE.parent)
            else str(copy)
        )
        report = build_report(copy, policy, public_key=pub, title=title, source_label=label)
    stem = args.out / "privacy_report"
    for writer, ext in ((write_json, "json"), (write_markdown, "md"), (write_html, "html")):
        print(f"wrote {writer(report, stem.with_suffix('.' + ext))}")
    v = report["ledger"]["verification"]
    print(
        f"ledger ok={v['ok']} head={v['head']['anchor'] if v['head'] else None}"
        f" policy ok={report['policy']['ok'] if report['policy'] else None}"
    )


if __name__ == "__main__":
    main()
