"""Run configuration of a federated fine-tuning simulation (TOML-loadable, validated).

One flat, frozen dataclass: every field is a documented knob, so a config file, the CLI flags and
the ledger's ``run_started`` entry all speak the same names. Validation fails closed with a
:class:`~securefl.errors.ConfigurationError` naming the field; combinations of aggregation and DP
that do not make sense are refused in :func:`check_combination` with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from securefl.errors import ConfigurationError
from securefl.fl.errors import UnsupportedCombinationError
from securefl.fl.server_optim import ServerOptimizer, cosine_lr, make_server_optimizer, with_lr

Aggregation = Literal["plain", "secagg", "secagg+", "he"]
DpMode = Literal["auto", "none", "central", "distributed", "local"]
Sampling = Literal["poisson", "fixed"]
AccountantName = Literal["rdp", "pld", "prv"]
SecAggModel = Literal["semi-honest", "semi-malicious"]
ClipMode = Literal["fixed", "adaptive"]
Mechanism = Literal["fedavg", "ftrl"]

AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
DP_MODES: tuple[str, ...] = get_args(DpMode)
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
ACCOUNTANTS: tuple[str, ...] = get_args(AccountantName)
SECAGG_MODELS: tuple[str, ...] = get_args(SecAggModel)
CLIP_MODES: tuple[str, ...] = get_args(ClipMode)
MECHANISMS: tuple[str, ...] = get_args(Mechanism)


@dataclass(frozen=True)
class RunConfig:
    """All knobs of one simulated federated LoRA fine-tuning run.

    Defaults are the cross-device regime (``cross_device.toml``): MiniLM + LoRA, 160 clients
    (≈32 per round), SecAgg+ with client-level distributed DP (the discrete Gaussian added by
    the clients inside the masking ring, Kairouz, Liu, Steinke 2021) at ε = 8, δ = 1e-5, 10
    rounds. The README's main job is :data:`MAIN_JOB` (cross-silo, example-level DP-SGD).

    ``dp = "auto"`` (the default) resolves when the config is built, so the recorded config
    names the mode that ran: with masking secure aggregation it is ``distributed`` — no single
    party ever holds a noiseless sum; with CKKS it is ``central`` with the noise added by the
    key holder before release (the key holder sees the noiseless sum, the server does not);
    with plaintext aggregation ``central`` (the server sees every clipped update). ``central``
    under SecAgg is available by explicit choice and is flagged in the ledger and report.
    """

    name: str = "default"
    seed: int = 0
    # --- model -----------------------------------------------------------------------------
    model: str = "minilm"  # "minilm" (bundled all-MiniLM-L6-v2), "tiny" (random BERT), or a dir
    max_length: int = 32
    lora_r: int = 4
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ("query", "value", "classifier")
    device: str = "auto"  # "auto" = cuda if available else cpu (as transformers does)
    # --- data ------------------------------------------------------------------------------
    data: str = "synthetic"  # "synthetic" or a CSV/JSONL path
    text_column: str = "text"
    label_column: str = "label"
    synthetic_examples: int = 1000
    test_fraction: float = 0.2
    n_clients: int = 160
    dirichlet_alpha: float = 1.0
    # --- rounds and sampling ---------------------------------------------------------------
    rounds: int = 10
    sampling: Sampling = "poisson"
    sampling_rate: float = 0.2  # q for Poisson sampling
    clients_per_round: int = 8  # m for fixed-size sampling without replacement
    dropout_rate: float = 0.05  # probability a sampled client drops at some protocol stage
    # --- local training --------------------------------------------------------------------
    local_epochs: int = 2
    batch_size: int = 8
    local_lr: float = 1e-2
    server_lr: float | None = None  # None: 2.0 under client-level DP (clipped, small), else 1.0
    # Server optimiser applied to the released (noised) mean update: post-processing, no
    # privacy cost (securefl.fl.server_optim; Reddi et al. 2021). Its lr is server_lr.
    server_optimizer: str = "fedavg"  # fedavg | fedavgm | fedadam | fedyogi
    server_momentum: float = 0.9  # FedAvgM momentum / FedAdam-FedYogi beta1
    # Server learning-rate schedule over the planned rounds (a function of the round index, so
    # a resumed run continues it): "constant", or "cosine" (linear warm-up over
    # server_lr_warmup rounds, then cosine decay to server_lr_final_ratio × the base lr).
    server_lr_schedule: str = "constant"
    server_lr_warmup: int = 0
    server_lr_final_ratio: float = 0.0
    # Frozen-prefix feature cache (securefl.train.frozen, protocols/fl.md §7): when the adapter
    # leaves the bottom of the encoder untouched (e.g. lora_targets = ["classifier"]), its
    # output is computed once per example (eval mode: no dropout below the cut) and local
    # training runs only the part above. No effect when the adapter touches layer 0.
    feature_cache: bool = True
    feature_cache_mb: int = 1024  # memory bound of the cache (LRU eviction beyond it)
    # Train a round's cohort in one batched pass (securefl.train.BatchedClientTrainer) instead
    # of client by client; same updates with dropout off. Not with dp = "local" (per client).
    batched_training: bool = False
    # --- aggregation -----------------------------------------------------------------------
    aggregation: Aggregation = "secagg+"
    frac_bits: int = 16
    corrupt_fraction: float = 0.05  # γ for the SecAgg+ graph solver
    dropout_fraction: float = 0.33  # δ the SecAgg(+) threshold must tolerate
    secagg_model: SecAggModel = "semi-malicious"  # threat model the (k, t) solver targets
    he_preset: str = "fast"  # securefl.he preset: fast | weighted | precise
    # --- differential privacy --------------------------------------------------------------
    dp: DpMode = "auto"  # resolved in __post_init__ (see the class docstring)
    clip: float = 0.5  # client-level L2 clip C (or per-example clip for local DP-SGD)
    # Largest |coordinate| of an update the secure-aggregation ring is sized for when no
    # client-level L2 clip bounds it (dp = none / local). A larger coordinate is refused with
    # a typed error, never clipped silently (protocols/fl.md "encoding range").
    update_bound: float = 1.0
    noise_multiplier: float | None = None  # None = calibrate to target_epsilon over `rounds`
    target_epsilon: float = 8.0
    delta: float = 1e-5
    # δ ≥ 1/population allows a mechanism that publishes one unit's data outright with
    # probability δ (Dwork & Roth 2014 §2.3); refused unless this is set, and then recorded.
    allow_large_delta: bool = False
    # CKKS on an engine (securefl.engine.he_job) without DP: the key holder cannot check that
    # the aggregate it decrypts is the sum of the receipted uploads, so a malicious server can
    # get one individual update per round decrypted. Refused unless set (and the key holder's
    # own node config opts in too); recorded as a weakened threat model. In-process runs hold
    # server and key holder in one trusted process and ignore it.
    allow_he_without_dp: bool = False
    # One-run empirical audit of the trained model (securefl.fl.canary_audit): m canary
    # clients, each included with a secret fair coin; 0 = no audit. Client-level DP or none.
    audit_canaries: int = 0
    accountant: AccountantName = "rdp"
    # Client-level clip: "fixed" (= clip every round) or "adaptive" (Andrew et al. 2021): the
    # clip tracks the clip_target_quantile of update norms, starting at `clip`, stepping
    # geometrically with clip_lr from a noised count of clipped-indicator bits (σ_b =
    # clip_count_noise_std, None: expected cohort / 20) sent inside the secure sum
    # (securefl.fl.mechanisms, protocols/fl.md "Adaptive clipping").
    clip_mode: ClipMode = "fixed"
    clip_target_quantile: float = 0.5
    clip_lr: float = 0.2
    clip_count_noise_std: float | None = None
    # Release mechanism of client-level central DP: "fedavg" (noise on each round's sum,
    # amplified by sampling) or "ftrl" (DP-FTRL, tree-aggregated noise on prefix sums, no
    # sampling amplification: Kairouz et al. 2021). FTRL's participation schedule: each client
    # at most ftrl_max_participations rounds, any two at least ftrl_min_separation apart.
    mechanism: Mechanism = "fedavg"
    ftrl_max_participations: int = 1
    ftrl_min_separation: int = 1
    epsilon_budget: float | None = None  # None = target_epsilon when DP is on, else no budget
    policy: str | None = None  # path of an audit BudgetPolicy (TOML/JSON); overrides the above
    # --- outputs ---------------------------------------------------------------------------
    out: str | None = None
    # Where the ledger signing key, the sampling secret and the anchor log live: never the run
    # directory. None: $SECUREFL_KEY_DIR, else the user's config dir (securefl.audit.keys).
    key_dir: str | None = None
    eval_every: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dp == "auto":
            object.__setattr__(self, "dp", default_dp_mode(self.aggregation))
        validate(self)

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        out["extra"] = dict(self.extra)
        return out

    def digest(self) -> str:
        """SHA-256 of the fields that define the run's results (not where it writes)."""
        where = {"out", "rounds", "name", "key_dir"}
        body = {
            k: v
            for k, v in self.to_dict().items()
            if k not in where and not (k in _ADDED_LATER and v == _ADDED_LATER[k])
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def replace(self, **changes: Any) -> RunConfig:
        return from_mapping({**self.to_dict(), **changes})

    @property
    def client_level_dp(self) -> bool:
        return self.dp in ("central", "distributed")

    @property
    def effective_server_lr(self) -> float:
        """Clipped, fixed-denominator DP means are short steps: default server lr 2 for them
        (DP-FedAvg uses a server step > 1 too, McMahan et al. 2018 §4); plain FedAvg: 1."""
        if self.server_lr is not None:
            return self.server_lr
        return 2.0 if self.client_level_dp else 1.0

    @property
    def effective_budget(self) -> float | None:
        if self.epsilon_budget is not None:
            return self.epsilon_budget
        return self.target_epsilon if self.dp != "none" else None


SERVER_LR_SCHEDULES = ("constant", "cosine")


def check_server_schedule(cfg: RunConfig) -> None:
    """Refuse a schedule that names no known shape or cannot run over ``cfg.rounds``."""
    if cfg.server_lr_schedule not in SERVER_LR_SCHEDULES:
        raise ConfigurationError(
            f"must be one of {SERVER_LR_SCHEDULES}, got {cfg.server_lr_schedule!r}",
            parameter="server_lr_schedule",
        )
    warmup = cfg.server_lr_warmup
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < cfg.rounds:
        raise ConfigurationError(
            f"must be an integer in [0, rounds = {cfg.rounds}), got {warmup!r}",
            parameter="server_lr_warmup",
        )
    ratio = cfg.server_lr_final_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, float) or not 0.0 <= ratio <= 1.0:
        raise ConfigurationError(
            f"must be a number in [0, 1], got {ratio!r}", parameter="server_lr_final_ratio"
        )
    if cfg.server_lr_schedule == "constant" and (warmup or ratio):
        raise ConfigurationError(
            "server_lr_warmup / server_lr_final_ratio only apply to the cosine schedule",
            parameter="server_lr_schedule",
        )


def server_optimizer_at(cfg: RunConfig, opt: ServerOptimizer, round_index: int) -> ServerOptimizer:
    """``opt`` with round ``round_index``'s scheduled learning rate (post-processing: the
    schedule reads only public configuration and the round index)."""
    if cfg.server_lr_schedule == "constant":
        return opt
    lr = cosine_lr(
        opt.lr,
        round_index,
        cfg.rounds,
        warmup=cfg.server_lr_warmup,
        floor=cfg.server_lr_final_ratio * opt.lr,
    )
    return with_lr(opt, lr)


def server_optimizer_of(cfg: RunConfig) -> ServerOptimizer:
    """The validated server optimiser of ``cfg``: lr = ``server_lr`` when set, else
    ``effective_server_lr`` for FedAvg(M) and the paper's 1e-2 for FedAdam/FedYogi."""
    hyper: dict[str, float] = {}
    if cfg.server_optimizer in ("fedadam", "fedyogi"):
        hyper["beta1"] = cfg.server_momentum
        if cfg.server_lr is not None:
            hyper["lr"] = cfg.server_lr
    else:
        hyper["lr"] = cfg.effective_server_lr
        if cfg.server_optimizer == "fedavgm":
            hyper["momentum"] = cfg.server_momentum
    return make_server_optimizer(cfg.server_optimizer, **hyper)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
#: What the bare ``securefl simulate`` runs (the README's main job).
MAIN_JOB = Path(__file__).with_name("default.toml")
# Fields added after run directories existed: at their defaults they leave the digest as it
# was, so a run started by an earlier version still resumes.
_ADDED_LATER: dict[str, Any] = {
    "audit_canaries": 0,
    "server_optimizer": "fedavg",
    "server_momentum": 0.9,
    "server_lr_schedule": "constant",
    "server_lr_warmup": 0,
    "server_lr_final_ratio": 0.0,
    "clip_mode": "fixed",
    "clip_target_quantile": 0.5,
    "clip_lr": 0.2,
    "clip_count_noise_std": None,
    "mechanism": "fedavg",
    "ftrl_max_participations": 1,
    "ftrl_min_separation": 1,
    "feature_cache": True,
    "feature_cache_mb": 1024,
    "batched_training": False,
    "allow_he_without_dp": False,
}


def default_dp_mode(aggregation: str) -> str:
    """The DP mode ``dp = "auto"`` stands for: the one where the fewest parties see a noiseless
    sum with this aggregation (issue: safe by default)."""
    if aggregation in ("secagg", "secagg+"):
        return "distributed"
    return "central"


def noiseless_sum_seen_by(cfg: RunConfig) -> list[str]:
    """Which parties hold the un-noised aggregate (or more) under ``cfg`` — for the ledger.

    Local DP-SGD noises every update inside its site before it leaves: nobody else holds a
    noiseless one (or their sum)."""
    if cfg.dp in ("distributed", "local"):
        return []
    if cfg.aggregation == "plain":
        return ["server"]  # it sees every (clipped) update, hence their sum too
    if cfg.aggregation == "he":
        return ["key holder"]  # it decrypts the sum and adds the noise before release
    return ["server"]  # central noise after SecAgg: the server unmasks the noiseless sum


def _positive(cfg: RunConfig, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and ok):
        raise ConfigurationError(
            f"must be {'≥' if allow_zero else '>'} 0, got {value!r}", parameter=name
        )


def validate(cfg: RunConfig) -> None:
    """Check every field's range and type; raise ConfigurationError naming the field."""
    for name in (
        "max_length",
        "lora_r",
        "synthetic_examples",
        "n_clients",
        "rounds",
        "clients_per_round",
        "local_epochs",
        "batch_size",
        "eval_every",
        "ftrl_max_participations",
        "ftrl_min_separation",
        "feature_cache_mb",
    ):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"must be a positive integer, got {value!r}", parameter=name)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigurationError(f"must be an integer, got {cfg.seed!r}", parameter="seed")
    for name in ("name", "model", "device", "data", "text_column", "label_column", "he_preset"):
        if not isinstance(getattr(cfg, name), str):
            raise ConfigurationError("must be a string", parameter=name)
    for name in ("policy", "out"):
        if not isinstance(getattr(cfg, name), str | None):
            raise ConfigurationError("must be a string or unset", parameter=name)
    if not isinstance(cfg.extra, Mapping):
        raise ConfigurationError("must be a table", parameter="extra")
    if cfg.server_lr is not None:
        _positive(cfg, "server_lr")
    server_optimizer_of(cfg)  # unknown name or bad hyper-parameter: ConfigurationError
    check_server_schedule(cfg)
    for name in (
        "lora_alpha",
        "local_lr",
        "clip",
        "target_epsilon",
        "dirichlet_alpha",
        "update_bound",
    ):
        _positive(cfg, name)
    for name, lo, hi in (
        ("test_fraction", 0.0, 1.0),
        ("sampling_rate", 0.0, 1.0),
        ("delta", 0.0, 1.0),
    ):
        value = getattr(cfg, name)
        if not (
            (isinstance(value, int | float) and lo < value < hi)
            or (name == "sampling_rate" and value == 1.0)
        ):
            raise ConfigurationError(f"must lie in ({lo}, {hi}), got {value!r}", parameter=name)
    for name in ("dropout_rate", "corrupt_fraction", "dropout_fraction"):
        value = getattr(cfg, name)
        if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
            raise ConfigurationError(f"must lie in [0, 1), got {value!r}", parameter=name)
    if not isinstance(cfg.frac_bits, int) or not 1 <= cfg.frac_bits <= 40:
        raise ConfigurationError("must be an integer in [1, 40]", parameter="frac_bits")
    for name, allowed in (
        ("aggregation", AGGREGATIONS),
        ("dp", DP_MODES),
        ("sampling", SAMPLINGS),
        ("accountant", ACCOUNTANTS),
        ("secagg_model", SECAGG_MODELS),
        ("clip_mode", CLIP_MODES),
        ("mechanism", MECHANISMS),
    ):
        if getattr(cfg, name) not in allowed:
            raise ConfigurationError(
                f"must be one of {list(allowed)}, got {getattr(cfg, name)!r}", parameter=name
            )
    if cfg.noise_multiplier is not None:
        # With DP on, z = 0 is no noise at all: refused before anything is recorded.
        _positive(cfg, "noise_multiplier", allow_zero=cfg.dp == "none")
    for name in ("allow_large_delta", "allow_he_without_dp", "feature_cache", "batched_training"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigurationError("must be true or false", parameter=name)
    if cfg.batched_training and cfg.dp == "local":
        raise ConfigurationError(
            "DP-SGD (dp = local) trains client by client; batched training is for dp = none, "
            "central or distributed",
            parameter="batched_training",
        )
    if (
        cfg.dp in ("central", "distributed")
        and not cfg.allow_large_delta
        and cfg.delta >= 1.0 / cfg.n_clients
    ):
        raise ConfigurationError(
            f"δ = {cfg.delta} ≥ 1/n_clients = {1.0 / cfg.n_clients:.3g}: a mechanism may then "
            "publish one client's data outright with probability δ; choose δ ≪ 1/population "
            "(or set allow_large_delta = true, which is recorded)",
            parameter="delta",
        )
    if cfg.epsilon_budget is not None:
        _positive(cfg, "epsilon_budget")
    _positive(cfg, "clip_lr")
    q = cfg.clip_target_quantile
    if not (isinstance(q, int | float) and 0.0 < q < 1.0):
        raise ConfigurationError(f"must lie in (0, 1), got {q!r}", parameter="clip_target_quantile")
    if cfg.clip_count_noise_std is not None:
        _positive(cfg, "clip_count_noise_std")
    m = cfg.audit_canaries
    if not isinstance(m, int) or isinstance(m, bool) or not (m == 0 or 4 <= m <= 100_000):
        raise ConfigurationError(
            f"must be 0 (no audit) or an integer in [4, 100000], got {m!r}",
            parameter="audit_canaries",
        )
    if m and cfg.dp == "local":
        raise UnsupportedCombinationError(
            "the canary audit inserts canary clients and so audits client-level DP (or none);"
            " example-level canaries for local DP-SGD are not implemented",
            parameter="audit_canaries",
        )
    if cfg.sampling == "fixed" and cfg.clients_per_round > cfg.n_clients:
        raise ConfigurationError(
            f"{cfg.clients_per_round} > n_clients={cfg.n_clients}", parameter="clients_per_round"
        )
    if not cfg.lora_targets or not all(isinstance(t, str) and t for t in cfg.lora_targets):
        raise ConfigurationError(
            "must be a non-empty list of module names", parameter="lora_targets"
        )
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith(("cuda", "mps")):
        raise ConfigurationError(f"unknown device {cfg.device!r}", parameter="device")
    if not cfg.name or "/" in cfg.name:
        raise ConfigurationError("must be a non-empty name without '/'", parameter="name")
    check_combination(cfg)


def check_combination(cfg: RunConfig) -> None:
    """Refuse aggregation × DP combinations that do not make sense, saying why.

    - distributed DP (DDGauss, Kairouz et al. 2021) adds integer noise *inside* the masking
      ring: it needs SecAgg/SecAgg+, and is meaningless with plaintext or CKKS aggregation
      (with plain the server sees each partially-noised update; CKKS works over reals and
      the single key holder could decrypt individual ciphertexts).
    - client-level DP with plain aggregation is allowed: the guarantee on the *released model*
      holds, but the server sees individual clipped updates; the ledger records
      ``server_sees_individual_updates: true``.
    - local DP-SGD (example-level) with client sampling composes per client; it is allowed
      with every aggregation.
    """
    if cfg.dp == "distributed" and cfg.aggregation not in ("secagg", "secagg+"):
        raise UnsupportedCombinationError(
            f"distributed DP needs masking secure aggregation (secagg or secagg+), not "
            f"{cfg.aggregation!r}: the noise is split across clients and only protects them "
            "when the server sees nothing but the sum over the integer ring",
            parameter="dp",
        )
    if cfg.dp == "none" and cfg.noise_multiplier not in (None, 0.0):
        raise UnsupportedCombinationError(
            "noise_multiplier given but dp = 'none'", parameter="noise_multiplier"
        )
    check_mechanism(cfg)
    if cfg.aggregation == "secagg+" and cfg.n_clients < 3:
        raise UnsupportedCombinationError(
            "secagg+ needs at least 3 clients for a neighbour graph", parameter="n_clients"
        )


def check_mechanism(cfg: RunConfig) -> None:
    """Refuse adaptive clipping / DP-FTRL where they are not implemented, saying why.

    - Both need client-level DP (``central`` or, for adaptive clipping, ``distributed``): the
      clip and the tree noise protect one client's updates.
    - Adaptive clipping sends the clipped-indicator bit as one extra coordinate of the
      secure sum, noised jointly with the update (central: plain, SecAgg(+), CKKS key holder;
      distributed: DDGauss in the SecAgg(+) ring). It is not combined with DP-FTRL, nor with
      the canary audit (canaries are clipped to the fixed clip).
    - DP-FTRL adds its noise where one party holds the tree's secret state: the server after
      plain or SecAgg(+) aggregation. Under CKKS that party would be the key holder, which
      has no tree hook yet; distributed tree noise is not implemented either. Every
      accountant handles its tree increments (protocols/dp.md §3.2).
    """
    if cfg.clip_mode == "adaptive":
        if not cfg.client_level_dp:
            raise UnsupportedCombinationError(
                f"adaptive clipping needs client-level DP (central or distributed), not "
                f"dp = {cfg.dp!r}",
                parameter="clip_mode",
            )
        if cfg.mechanism != "fedavg":
            raise UnsupportedCombinationError(
                "adaptive clipping with DP-FTRL is not implemented", parameter="clip_mode"
            )
        if cfg.audit_canaries:
            raise UnsupportedCombinationError(
                "the canary audit clips canaries to the fixed clip; use clip_mode = 'fixed'",
                parameter="clip_mode",
            )
    if cfg.mechanism == "ftrl":
        if cfg.dp != "central":
            raise UnsupportedCombinationError(
                f"DP-FTRL needs central noise (dp = 'central'), not dp = {cfg.dp!r}: "
                "distributed tree noise is not implemented",
                parameter="mechanism",
            )
        if cfg.aggregation == "he":
            raise UnsupportedCombinationError(
                "DP-FTRL under CKKS would need the key holder to keep the tree state; not "
                "implemented (use plain or secagg/secagg+ with dp = 'central')",
                parameter="mechanism",
            )
        if cfg.audit_canaries:
            raise UnsupportedCombinationError(
                "the canary audit is not wired into DP-FTRL", parameter="mechanism"
            )


def from_mapping(values: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from a flat mapping (TOML top level or a ``[run]`` table)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key != "extra":
            flat.update(value)  # sections like [model], [dp] are flattened
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(_FIELDS))
    if unknown:
        raise ConfigurationError(f"unknown configuration keys {unknown}", parameter="config")
    if "lora_targets" in flat:
        if isinstance(flat["lora_targets"], str):
            flat["lora_targets"] = tuple(t.strip() for t in flat["lora_targets"].split(","))
        elif isinstance(flat["lora_targets"], list | tuple):
            flat["lora_targets"] = tuple(flat["lora_targets"])
        else:
            raise ConfigurationError("must be a list of module names", parameter="lora_targets")
    for key in (
        "lora_alpha",
        "local_lr",
        "server_lr",
        "server_momentum",
        "server_lr_final_ratio",
        "clip",
        "target_epsilon",
        "delta",
        "sampling_rate",
        "test_fraction",
        "dropout_rate",
        "dirichlet_alpha",
        "corrupt_fraction",
        "dropout_fraction",
        "noise_multiplier",
        "epsilon_budget",
        "update_bound",
        "clip_target_quantile",
        "clip_lr",
        "clip_count_noise_std",
    ):
        if isinstance(flat.get(key), int) and not isinstance(flat.get(key), bool):
            flat[key] = float(flat[key])
    try:
        return RunConfig(**flat)
    except TypeError as exc:
        raise ConfigurationError(str(exc), parameter="config") from exc


def load(path: str | Path, **overrides: Any) -> RunConfig:
    """Load a TOML run config; keyword overrides (CLI flags) win over the file."""
    p = Path(path)
    try:
        values = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"config file {p} not found", parameter="config") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays/tables nested deeper than tomllib's recursion limit
        raise ConfigurationError(f"invalid TOML in {p}: {exc}", parameter="config") from exc
    run = values.get("run", values)
    if not isinstance(run, Mapping):
        raise ConfigurationError("[run] must be a table", parameter="run")
    # Flatten the file's sections first: a flag named like a section (``rounds``, ``model``,
    # ``data``) overrides that field, not the whole section.
    merged: dict[str, Any] = {}
    for key, value in run.items():
        if isinstance(value, Mapping) and key != "extra":
            merged.update(value)
        else:
            merged[key] = value
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(merged)
