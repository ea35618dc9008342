"""The whole securefl job over an FL engine: the orchestrator at the server, training at the nodes.

The server runs the same :class:`~securefl.fl.orchestrator.Orchestrator` as ``securefl
simulate`` — budget policy, secret-coin sampling, the signed ledger, checkpoints, resume, the
report — but a round's aggregation is a real SecAgg(+) round over engine nodes (the
:class:`~securefl.engine.server.Transport`: Flower's grid, or in-process handlers in tests).
Only the sampled clients' nodes are asked. Each node holds its own data, trains locally,
clips, encodes (with its share of the distributed discrete Gaussian noise under
``dp = "distributed"``) and masks; the server decodes the sum over survivors and closes the
round with :meth:`~securefl.fl.orchestrator.Orchestrator.complete_remote_round`.

What a node is told is the :class:`JobTerms` (bound into the SecAgg session through the model
digest, so every member of a round was told the same). A node does not trust the server's
bookkeeping: it rebuilds the run's backend from the announced configuration, recomputes the
round's DP event and the encoding, and refuses terms whose event, threshold or noise floor
differ from what that configuration implies (and, with a :class:`NodeGuard`, terms its own
policy forbids). Spec: ``protocols/engine-flower.md`` §7.

Client ids: the engine's SecAgg ids start at 1; loop client ``c`` is SecAgg id ``c + 1``, so
a registry of N clients must name exactly 1..N and the run's ``n_clients`` must be N.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.audit.ledger import canonical_json
from securefl.audit.records import NodeRefusal
from securefl.engine.client import SecAggNode
from securefl.engine.identity import NodeIdentity, check_client_id
from securefl.engine.server import NodeStages, Transport
from securefl.engine.wire import ENGINE_WIRE_VERSION, HELLO, encode_config, model_digest
from securefl.engine.wire import field as get_field
from securefl.errors import (
    AbortError,
    ConfigurationError,
    MalformedMessageError,
    SecureFLError,
    UnsafeRequestError,
)
from securefl.fl.aggregation import AggregateOutcome
from securefl.fl.backends import Backend, make_backend
from securefl.fl.client import ClientUpdate
from securefl.fl.config import RunConfig, from_mapping
from securefl.fl.errors import UnsupportedCombinationError
from securefl.fl.orchestrator import (
    Callback,
    Evaluate,
    ModelInfo,
    Orchestrator,
    RoundPlan,
    RunResult,
    sha256_of,
)
from securefl.fl.secure import RingInputs, SecAggAggregator
from securefl.secagg import ClientPolicy, SecAggConfig, ServerProtocol, Stage
from securefl.secagg.driver import drive_round
from securefl.tensors import FloatVector

#: Task name bound into every job round's model digest (engine wire).
JOB_TASK = "securefl.job/v1"
JOB_VERSION = 1
MAX_JOB_BYTES = 1 << 20
MAX_SITES = 100_000
#: Engine stages of the one-exchange aggregations (securefl.engine.he_job): a client's CKKS
#: or plaintext upload, and the key holder's open / decrypt requests.
HE_UPLOAD = 20
PLAIN_UPLOAD = 21
KEYHOLDER_OPEN = 30
KEYHOLDER_DECRYPT = 31
UPLOAD_STAGES = (HE_UPLOAD, PLAIN_UPLOAD)
#: Configuration fields that stay at the server: where it writes, its keys, its policy file.
SERVER_ONLY = ("out", "key_dir", "policy")
#: Aggregations and DP modes the engine job runs (the others are refused, not approximated).
ENGINE_AGGREGATIONS = ("plain", "secagg", "secagg+", "he")
ENGINE_DP = ("none", "central", "distributed", "local")


# ------------------------------------------------------------------------------ the terms
@dataclass(frozen=True)
class JobTerms:
    """What the server announces to every member of one round (the ring plan's slot)."""

    run_id: str
    round_index: int
    config: RunConfig
    noise_multiplier: float | None
    dimension: int
    layout_digest: bytes
    event: dict[str, Any]
    #: Local DP-SGD: the local dataset sizes the operator declared for the sites; the round's
    #: event is the worst of their DP-SGD events (fl.local_dp). None for client-level DP.
    client_examples: tuple[int, ...] | None = None

    def to_text(self) -> str:
        body = {
            "v": JOB_VERSION,
            "run_id": self.run_id,
            "round": self.round_index,
            "config": public_config(self.config),
            "noise_multiplier": self.noise_multiplier,
            "dimension": self.dimension,
            "layout_digest": self.layout_digest.hex(),
            "event": self.event,
            "client_examples": None if self.client_examples is None else list(self.client_examples),
        }
        return canonical_json(body)

    @classmethod
    def from_text(cls, text: str) -> JobTerms:
        """Parse and validate; anything malformed → :class:`MalformedMessageError`."""
        if len(text) > MAX_JOB_BYTES:
            raise MalformedMessageError("job terms exceed the size limit")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedMessageError(f"job terms are not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("v") != JOB_VERSION:
            raise MalformedMessageError("job terms: unsupported version")
        run_id = get_field(doc, "run_id", str)
        r = get_field(doc, "round", int)
        d = get_field(doc, "dimension", int)
        if not (0 < len(run_id) <= 200 and 0 <= r < 1 << 31 and 0 < d < 1 << 34):
            raise MalformedMessageError("job terms: run_id, round or dimension out of range")
        z = doc.get("noise_multiplier")
        if z is not None and not (
            isinstance(z, int | float) and not isinstance(z, bool) and math.isfinite(z) and z > 0
        ):
            raise MalformedMessageError("job terms: noise_multiplier must be positive and finite")
        try:
            digest = bytes.fromhex(get_field(doc, "layout_digest", str))
            config = from_mapping(get_field(doc, "config", dict))
        except (ValueError, ConfigurationError) as exc:
            raise MalformedMessageError(f"job terms: {exc}") from None
        if len(digest) != 32 or not isinstance(doc.get("event"), dict):
            raise MalformedMessageError("job terms: bad layout digest or event")
        m = doc.get("client_examples")
        if m is not None:
            if not (
                isinstance(m, list)
                and 0 < len(m) <= MAX_SITES
                and all(type(x) is int and 0 < x < 1 << 40 for x in m)
            ):
                raise MalformedMessageError(
                    "job terms: client_examples must be a list of positive ints"
                )
            m = tuple(m)
        if (m is None) == (config.dp == "local"):
            raise MalformedMessageError("job terms: client_examples is set exactly for dp local")
        return cls(run_id, r, config, None if z is None else float(z), d, digest, doc["event"], m)


def public_config(cfg: RunConfig) -> dict[str, Any]:
    """The run configuration as nodes see it (no server paths)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in SERVER_ONLY}


def check_engine_config(cfg: RunConfig) -> None:
    """Refuse what the engine job does not run (typed, with the field that is the reason)."""
    if cfg.aggregation not in ENGINE_AGGREGATIONS:
        raise UnsupportedCombinationError(
            f"aggregation {cfg.aggregation!r} does not run on the engine yet (only "
            f"{', '.join(ENGINE_AGGREGATIONS)})",
            parameter="aggregation",
        )
    if cfg.dp not in ENGINE_DP:
        raise UnsupportedCombinationError(
            f"dp {cfg.dp!r} does not run on the engine yet (only {', '.join(ENGINE_DP)})",
            parameter="dp",
        )
    if cfg.audit_canaries:
        raise UnsupportedCombinationError(
            "the canary audit needs the simulated population; run it with securefl simulate",
            parameter="audit_canaries",
        )
    if cfg.clip_mode != "fixed" or cfg.mechanism != "fedavg":  # adaptive clip / DP-FTRL
        raise UnsupportedCombinationError(
            "run adaptive clipping / DP-FTRL with securefl simulate", parameter="mechanism"
        )


def job_backend(
    cfg: RunConfig,
    noise_multiplier: float | None,
    dimension: int,
    client_examples: tuple[int, ...] | None = None,
) -> Backend:
    """The run's backend as both sides build it: same noise, same event, same encoding (local
    DP-SGD: the worst event over the declared ``client_examples``)."""
    return make_backend(
        cfg.replace(noise_multiplier=noise_multiplier),
        dimension=dimension,
        client_sizes=client_examples or (),
    )


def secagg_of(backend: Backend) -> SecAggAggregator:
    agg = backend.aggregator
    if not isinstance(agg, SecAggAggregator):
        raise UnsupportedCombinationError("the engine job needs SecAgg(+)", parameter="aggregation")
    return agg


def ring_encoder(agg: SecAggAggregator) -> Callable[..., RingInputs]:
    """The run's ring encoding (DDGauss under distributed DP, else fixed point)."""
    encoder: Callable[..., RingInputs] = (
        agg.ring_encoder if agg.ring_encoder is not None else agg.fixed_point
    )
    return encoder


def secagg_threat_model(cfg: RunConfig) -> str:
    """The clients' SecAgg threat model for the run's solver model (as fl.secure uses it)."""
    return "malicious" if cfg.secagg_model == "semi-malicious" else "semi-honest"


def round_context(layout_digest: bytes, global_flat: FloatVector) -> bytes:
    """layout digest ‖ SHA-256(global model): what the ring encoding binds (fl.secure)."""
    return layout_digest + bytes.fromhex(sha256_of(global_flat))


# ------------------------------------------------------------------------------ node side
class LocalTraining(Protocol):
    """A node's client step: (run config, global flat state, loop client id, round) → update
    (clipped to ``cfg.clip`` under client-level DP, as :func:`securefl.fl.client.client_step`)."""

    def __call__(
        self,
        cfg: RunConfig,
        global_flat: FloatVector,
        client: int,
        round_index: int,
        *,
        trainer: Any = None,
    ) -> ClientUpdate:
        """``trainer`` (local DP-SGD only) replaces the plain local optimiser, as in
        :func:`securefl.fl.client.client_step`."""
        ...


class Admission(Protocol):
    """A node's own policy gate (``securefl.engine.node_policy.NodeGuard``)."""

    def admit(self, terms: Any) -> object: ...


TermsOf = Callable[[JobTerms, SecAggConfig], Any]
#: (round, stage label) as each SecAgg stage of a round closes at the server.
Progress = Callable[[int, str], None]


class JobNode(SecAggNode):
    """A data holder's node: answers the job's SecAgg(+) requests with its own trained update.

    Before it computes anything it checks the announced terms against the configuration they
    name (event, threshold, noise floor) and, with ``guard``, against its own policy
    (``terms_of`` turns the checked job into what the guard reads). ``key_holder``: the
    fingerprint of the CKKS key holder's public context, for ``aggregation = "he"``."""

    def __init__(
        self,
        identity: NodeIdentity,
        training: LocalTraining,
        *,
        registry: Mapping[int, bytes] | None = None,
        policy: ClientPolicy | None = None,
        guard: Admission | None = None,
        terms_of: TermsOf | None = None,
        key_holder: bytes | None = None,
    ) -> None:
        super().__init__(
            identity,
            None,
            task_name=JOB_TASK,
            node_config={},
            run_config={},
            policy=policy,
            registry=registry,
        )
        self.training = training
        self.guard = guard
        self.terms_of = terms_of
        #: The CKKS key holder's public-context fingerprint this node encrypts to (pinned out
        #: of band); without it the node refuses CKKS rounds: it could not tell the key
        #: holder's public key from one the server made (securefl.engine.he_job).
        self.key_holder = key_holder
        self._backends: BackendCache = {}

    def _backend(self, job: JobTerms) -> Backend:
        return verified_backend(job, self._backends)

    def check_job(self, job: JobTerms, global_state: bytes) -> CheckedJob:
        """The checks every aggregation shares (SecAgg(+), CKKS, plain): the configuration
        runs on the engine, the announced event is the configuration's, the model has the
        announced size."""
        backend = self._backend(job)
        if len(global_state) != 8 * job.dimension:
            raise MalformedMessageError("global model has the wrong size")
        global_flat = np.frombuffer(global_state, dtype="<f8").astype(np.float64)
        return CheckedJob(job, backend, backend.round_event().to_dict(), global_flat)

    def local_update(self, checked: CheckedJob) -> ClientUpdate:
        """This node's trained (clipped) update for a checked job (after its guard admitted)."""
        job = checked.job
        client = self.identity.client_id - 1
        if job.config.dp == "local":
            trainer = WorstCaseDpSgd(checked.backend.trainer, job.config, checked.event)
            update = self.training(
                job.config, checked.global_flat, client, job.round_index, trainer=trainer
            )
        else:
            update = self.training(job.config, checked.global_flat, client, job.round_index)
        update.validate(job.layout_digest, job.dimension)
        return update

    def handle(self, request: Mapping[str, Any], store: MutableMapping[str, Any]) -> dict[str, Any]:
        """SecAgg(+) stages as :class:`SecAggNode`; a CKKS or plain upload request
        (:mod:`securefl.engine.he_job`) is one stateless exchange."""
        stage = request.get("stage")
        if type(stage) is int and stage in UPLOAD_STAGES:
            if get_field(request, "v", int) != ENGINE_WIRE_VERSION:
                raise MalformedMessageError("unsupported engine wire version")
            store.clear()
            from securefl.engine.he_job import answer_upload

            return answer_upload(self, request)
        return super().handle(request, store)

    def round_input(
        self, config: SecAggConfig, plan_text: str, global_state: bytes
    ) -> npt.NDArray[np.unsignedinteger[Any]]:
        job = JobTerms.from_text(plan_text)
        if job.round_index != config.round_index:
            raise UnsafeRequestError("job terms name another round than the session")
        if job.layout_digest != config.layout_digest:
            raise UnsafeRequestError("job terms name another layout than the session")
        checked = self.check_job(job, global_state)
        agg = secagg_of(checked.backend)
        degree, threshold, _info = agg.parameters(config.n)
        if config.threshold < threshold:
            raise UnsafeRequestError(
                f"threshold {config.threshold} is below the {threshold} the run's threat model "
                f"needs for {config.n} clients"
            )
        if config.degree != degree:
            raise UnsafeRequestError("the neighbour graph degree is not the run's")
        context = round_context(config.layout_digest, checked.global_flat)
        encoder = ring_encoder(agg)
        probe = encoder({}, {}, config.n, context, config.round_index)
        if config.bits != probe.bits or config.dimension != probe.dimension:
            raise UnsafeRequestError("ring width or dimension is not the run's encoding")
        if config.min_cohort < min(probe.min_cohort, config.n):
            raise UnsafeRequestError(
                f"minimum cohort {config.min_cohort} is below the {probe.min_cohort} "
                "contributors whose noise the DP event counts on"
            )
        if self.guard is not None:
            terms = self.terms_of(job, config) if self.terms_of is not None else job
            self.guard.admit(terms)  # records the contribution or the refusal
        update = self.local_update(checked)
        client = self.identity.client_id - 1
        ring = encoder({client: update.delta}, {client: 1.0}, config.n, context, job.round_index)
        values: npt.NDArray[np.unsignedinteger[Any]] = ring.values[client]
        return values


@dataclass(frozen=True)
class CheckedJob:
    """Terms a node (or the key holder) verified, with the backend rebuilt from them."""

    job: JobTerms
    backend: Backend
    event: dict[str, Any]
    global_flat: FloatVector


BackendCache = dict[tuple[str, float | None, int, Any], Backend]


def verified_backend(job: JobTerms, cache: BackendCache | None = None) -> Backend:
    """The run's backend rebuilt from the announced configuration, after checking the
    configuration runs on the engine and the announced DP event is the one it implies.

    Every party that acts on terms (client nodes, the CKKS key holder) calls this; none
    trusts the event or noise the server states alone."""
    check_engine_config(job.config)
    key = (job.config.digest(), job.noise_multiplier, job.dimension, job.client_examples)
    backend = None if cache is None else cache.get(key)
    if backend is None:
        backend = job_backend(job.config, job.noise_multiplier, job.dimension, job.client_examples)
        if cache is not None:
            cache[key] = backend
    event = backend.round_event().to_dict()
    if json.loads(canonical_json(event)) != json.loads(canonical_json(job.event)):
        raise UnsafeRequestError(
            "the announced DP event is not the event of the announced configuration"
        )
    return backend


class WorstCaseDpSgd:
    """The run's DP-SGD trainer behind the node's own check that the announced event covers
    its dataset: its own per-round ε (its q = 1/⌈n/B⌉ and step count) must not exceed the
    announced worst case's. ε is not monotone in n (more examples, more steps), so the
    check is on ε, not on the size."""

    def __init__(self, inner: Any, cfg: RunConfig, announced: Mapping[str, Any]) -> None:
        self.inner = inner
        self.cfg = cfg
        self.announced = announced

    def __call__(self, model: Any, data: Any, spec: Any, *, seed: int) -> Any:
        from securefl.dp.events import event_from_dict
        from securefl.fl import privacy
        from securefl.fl.local_dp import client_event

        n = len(data)
        z = self.inner.noise_multiplier
        own = client_event(n, self.cfg.local_epochs, self.cfg.batch_size, z)
        worst = event_from_dict(self.announced)
        if privacy.epsilon_of(self.cfg, [own]) > privacy.epsilon_of(self.cfg, [worst]) * (1 + 1e-9):
            raise UnsafeRequestError(
                f"DP-SGD on this node's {n} examples spends more than the announced event "
                "(the worst of the declared dataset sizes)"
            )
        return self.inner(model, data, spec, seed=seed)


# ------------------------------------------------------------------------------ server side
class CohortTransport:
    """Restricts a transport to the nodes that claimed this round's cohort (HELLO hints; the
    binding step still authenticates each claim, engine-flower.md §3)."""

    def __init__(self, inner: Transport, nodes: list[int]) -> None:
        self.inner = inner
        self.nodes = sorted(nodes)

    def node_ids(self) -> list[int]:
        live = set(self.inner.node_ids())
        return [n for n in self.nodes if n in live]

    def exchange(
        self, requests: Mapping[int, Mapping[str, Any]], *, timeout: float, round_index: int
    ) -> dict[int, Mapping[str, Any]]:
        return self.inner.exchange(
            {n: r for n, r in requests.items() if n in self.nodes},
            timeout=timeout,
            round_index=round_index,
        )


def discover_nodes(transport: Transport, *, timeout: float) -> dict[int, int]:
    """SecAgg client id → engine node id, from the nodes' HELLO claims (hints only)."""
    replies = transport.exchange(
        {n: {"v": ENGINE_WIRE_VERSION, "stage": HELLO} for n in transport.node_ids()},
        timeout=timeout,
        round_index=0,
    )
    out: dict[int, int] = {}
    for node, rep in sorted(replies.items()):
        try:
            u = check_client_id(get_field(rep, "client", int))
        except SecureFLError:
            continue
        out.setdefault(u, node)
    return out


@dataclass(frozen=True)
class RemoteRound:
    """What one engine round gave the server: the decoded outcome or why it aborted."""

    outcome: AggregateOutcome | None
    abort_reason: str
    rejected: dict[int, str]
    node_errors: dict[int, str]


def job_terms(orch: Orchestrator, plan: RoundPlan) -> JobTerms:
    """What the server announces for ``plan`` (the same for every aggregation)."""
    layout = orch.model.layout
    return JobTerms(
        run_id=orch.run_id,
        round_index=plan.index,
        config=orch.cfg,
        noise_multiplier=orch.noise_multiplier,
        dimension=layout.size,
        layout_digest=layout.digest(),
        event=plan.event.to_dict(),
        client_examples=tuple(orch.client_sizes) if orch.cfg.dp == "local" else None,
    )


def run_remote_round(
    orch: Orchestrator,
    plan: RoundPlan,
    transport: Transport,
    *,
    registry: Mapping[int, bytes],
    node_of: Mapping[int, int],
    stage_timeout: float,
    train_timeout: float | None = None,
    progress: Progress | None = None,
) -> RemoteRound:
    """One SecAgg(+) round of the cohort over ``transport``; never raises AbortError."""
    backend = orch.backend
    agg = secagg_of(backend)
    members = sorted(plan.members)
    n = len(members)
    layout = orch.model.layout
    errors_before = dict(getattr(transport, "errors", {}))
    try:
        degree, threshold, _info = agg.parameters(n)
        context = round_context(layout.digest(), plan.global_flat)
        encoder = ring_encoder(agg)
        ring = encoder({}, {}, n, context, plan.index)
        text = job_terms(orch, plan).to_text()
        global_state = np.ascontiguousarray(plan.global_flat, dtype="<f8").tobytes()
        ids = {c + 1: registry[c + 1] for c in members}
        config = SecAggConfig.create(
            ids,
            threshold=threshold,
            bits=ring.bits,
            dimension=ring.dimension,
            degree=degree,
            min_cohort=min(ring.min_cohort, n),
            round_index=plan.index,
            layout_digest=layout.digest(),
            model_digest=model_digest(global_state, text, plan.index, JOB_TASK),
            nonce=secrets.token_bytes(16),
            threat_model=secagg_threat_model(orch.cfg),
            corrupt_fraction=orch.cfg.corrupt_fraction,
        )
        server = ServerProtocol(config)
        stages = NodeStages(
            CohortTransport(transport, [node_of[u] for u in ids if u in node_of]),
            config,
            first_request={
                "v": ENGINE_WIRE_VERSION,
                "stage": int(Stage.ADVERTISE_KEYS),
                "session": config.session_id,
                "config": encode_config(config),
                "plan": text,
                "global": global_state,
            },
            timeout=stage_timeout,
            round_index=plan.index,
            advertise_timeout=train_timeout,
        )
        t0 = time.perf_counter()
        result = drive_round(
            server,
            stages,
            on_stage=None
            if progress is None
            else lambda stage, _outbox: progress(plan.index, stage.label),
        )
        t_round = time.perf_counter() - t0
    except AbortError as exc:
        errors = new_node_errors(transport, errors_before)
        return RemoteRound(None, str(exc), {}, errors)
    t1 = time.perf_counter()
    total, weight_total = ring.decode(result.total)
    timings = dict(result.timings)
    unmask = timings.get("unmask", 0.0)
    outcome = AggregateOutcome(
        total=total,
        weight_total=weight_total,
        survivors=frozenset(u - 1 for u in result.survivors),
        dropped={k: sorted(u - 1 for u in v) for k, v in result.dropped.items() if v},
        bytes_up=stages.bytes_up,
        bytes_down=stages.bytes_down,
        timings={
            "encode": 0.0,  # on the nodes
            "aggregate": t_round - unmask,
            "unmask": unmask + time.perf_counter() - t1,
            "secagg": timings,
        },
        protocol={**agg.info(), **_info, "bits": ring.bits, "engine": True, **ring.info},
    )
    return RemoteRound(
        outcome, "", dict(stages.rejected), new_node_errors(transport, errors_before)
    )


def new_node_errors(transport: Transport, before: Mapping[int, str]) -> dict[int, str]:
    """The nodes whose transport error changed since ``before`` (this round's errors)."""
    now = dict(getattr(transport, "errors", {}))
    return {n: why for n, why in now.items() if before.get(n) != why}


def close_remote_round(
    orch: Orchestrator, plan: RoundPlan, res: RemoteRound, *, train_s: float
) -> None:
    """Record each node's error of the round as ``node_refusal``, then close the round with
    what the engine computed (or its abort)."""
    for node, why in sorted(res.node_errors.items()):
        orch.ledger.append_record(
            NodeRefusal(node=node, reason=why, stage=None, error=None), round_id=plan.index
        )
    orch.complete_remote_round(plan, res.outcome, abort_reason=res.abort_reason, train_s=train_s)


def run_job(
    transport: Transport,
    cfg: RunConfig,
    model: ModelInfo,
    *,
    registry: Mapping[int, bytes],
    evaluate: Evaluate | None = None,
    stage_timeout: float = 60.0,
    train_timeout: float | None = None,
    client_examples: tuple[int, ...] | None = None,
    resume: bool = True,
    callback: Callback | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run (or resume) ``cfg`` with every round's aggregation on the engine's nodes.

    ``client_examples`` (local DP-SGD only): the local dataset sizes the operator declares
    for the sites; the round's event is the worst of their DP-SGD events, and a node whose own
    DP-SGD would spend more refuses.
    ``train_timeout`` bounds the first stage (the nodes train before they answer it; default
    ``stage_timeout``); a node that answers later drops out of the round like any other.

    Simulated dropouts are off (``dropout_rate`` is forced to 0: the engine's dropouts are
    real). A node's refusal is recorded in the server's ledger as ``node_refusal``.
    ``aggregation = "he"`` needs a key-holder node on the transport (its own process; the
    server never holds the secret key) and ``"plain"`` is the recorded weak mode in which the
    server sees every update (:mod:`securefl.engine.he_job`)."""
    check_engine_config(cfg)
    if (cfg.dp == "local") != (client_examples is not None):
        raise ConfigurationError(
            "local DP-SGD on the engine needs client_examples (the declared local dataset "
            "sizes whose worst DP-SGD event is accounted), and only it does",
            parameter="client_examples",
        )
    cfg = cfg.replace(dropout_rate=0.0)
    if sorted(registry) != list(range(1, cfg.n_clients + 1)):
        raise ConfigurationError(
            f"the registry must name clients 1..{cfg.n_clients} (n_clients), "
            f"not {len(registry)} ids",
            parameter="registry",
        )
    node_of = discover_nodes(transport, timeout=stage_timeout)
    key_holder = None
    if cfg.aggregation == "he":
        from securefl.engine.he_job import find_key_holder

        key_holder = find_key_holder(transport, timeout=stage_timeout)
    sizes = tuple(client_examples) if client_examples is not None else ()
    with Orchestrator(
        cfg, model, client_sizes=sizes, evaluate=evaluate, resume=resume, callback=callback
    ) as orch:
        while (plan := orch.next_round()) is not None:
            if any(c + 1 not in node_of for c in plan.members):
                node_of = {**node_of, **discover_nodes(transport, timeout=stage_timeout)}
            t0 = time.perf_counter()
            if cfg.aggregation in ("he", "plain"):
                from securefl.engine.he_job import run_upload_round

                res = run_upload_round(
                    orch,
                    plan,
                    transport,
                    registry=registry,
                    node_of=node_of,
                    key_holder=key_holder,
                    stage_timeout=stage_timeout,
                    train_timeout=train_timeout,
                    progress=progress,
                )
            else:
                res = run_remote_round(
                    orch,
                    plan,
                    transport,
                    registry=registry,
                    node_of=node_of,
                    stage_timeout=stage_timeout,
                    train_timeout=train_timeout,
                    progress=progress,
                )
            close_remote_round(orch, plan, res, train_s=time.perf_counter() - t0)
        return orch.finish()
