"""The one round orchestrator: budget check → projection → cohort → (client updates) →
aggregation → server step → checkpoint → ledger. Used by ``securefl simulate`` and by the
public :class:`securefl.api.Federation` alike; it knows nothing of the model or the data.

One round (Bonawitz et al. 2019 "Towards FL at scale", §2; DP-FedAvg of McMahan et al. 2018):

1. :meth:`Orchestrator.next_round` — the projected round event is checked against the ledger
   and policy (refused ⇒ the run stops, ``round_refused`` recorded); ``round_projected`` is
   written; the cohort is drawn with secret keyed coins and checked against the sampling the
   accountant was told; simulated dropouts are drawn.
2. The caller trains the cohort however it likes and hands in each client's update (a flat
   vector in the agreed :class:`~securefl.tensors.TensorLayout`).
3. :meth:`Orchestrator.complete_round` — aggregation backend (plain / SecAgg / SecAgg+ / CKKS,
   optional distributed noise), server step (central noise; fixed denominator under DP),
   evaluation, atomic checkpoint, ``round_completed``, ``metrics.jsonl``.

A killed run resumes from its checkpoint and reconciles the ledger (:func:`reconcile`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from securefl.audit.keys import default_key_dir, default_signer, ensure_key_dir
from securefl.audit.ledger import Ledger
from securefl.audit.records import (
    RoundAborted,
    RoundCompleted,
    RoundProjected,
    RoundRefused,
    RunFinished,
    RunResumed,
    RunStarted,
)
from securefl.dp.events import DpEvent
from securefl.errors import AbortError, ConfigurationError
from securefl.fl import checkpoint as ckpt_mod
from securefl.fl import ledger as ledger_mod
from securefl.fl.aggregation import AggregateOutcome, WireObserver
from securefl.fl.backends import Backend, make_backend
from securefl.fl.canary_audit import CanaryAudit
from securefl.fl.client import ClientUpdate
from securefl.fl.config import RunConfig, server_optimizer_at, server_optimizer_of
from securefl.fl.errors import ResumeError, UnsupportedCombinationError
from securefl.fl.mechanisms import (
    AdaptiveClipLoop,
    FtrlLoop,
    adaptive_noise_multiplier,
    ftrl_noise_multiplier,
    mechanism_config,
)
from securefl.fl.privacy import PrivacyAccount
from securefl.fl.sampling import load_or_create_secret, sample_clients, simulate_dropouts
from securefl.fl.server_optim import ServerState, init_state, server_step
from securefl.tensors import FloatVector, TensorLayout

Callback = Callable[[str, dict[str, Any]], None]
Evaluate = Callable[[FloatVector], Mapping[str, float]]
METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class ModelInfo:
    """What the orchestrator needs to know of the model: the wire layout, the initial state,
    and what the ledger records about it (provenance, adapter description, device)."""

    layout: TensorLayout
    initial: FloatVector
    provenance: Mapping[str, Any]
    adapter: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    run_id: str
    rounds_completed: int
    resumed_from: int
    refused: list[dict[str, Any]]
    epsilon: float
    delta: float
    noise_multiplier: float | None
    accuracy: float
    loss: float
    metrics: list[dict[str, Any]]
    global_flat: FloatVector
    provenance: dict[str, Any]
    bytes_per_round_up: float = 0.0
    report_paths: dict[str, str] = field(default_factory=dict)
    anchor: str | None = None  # published head SEQ:HASH (verify with --expect-head)
    public_key: str | None = None  # the ledger's verification key (outside the run dir)
    empirical_audit: dict[str, Any] | None = None  # the canary audit (audit_canaries > 0)

    def summary(self) -> dict[str, Any]:
        return ledger_mod.jsonable(
            {
                "run_dir": str(self.run_dir),
                "run_id": self.run_id,
                "rounds_completed": self.rounds_completed,
                "resumed_from": self.resumed_from,
                "refused": self.refused,
                "epsilon": self.epsilon,
                "delta": self.delta,
                "noise_multiplier": self.noise_multiplier,
                "accuracy": self.accuracy,
                "loss": self.loss,
                "model": self.provenance,
                "parameters": int(self.global_flat.shape[0]),
                "report": self.report_paths,
                "ledger_public_key": self.public_key,
                "ledger_anchor": self.anchor,
                "empirical_audit": self.empirical_audit,
            }
        )


@dataclass(frozen=True)
class RoundPlan:
    """A started round: who trains, who will drop, and the event the ledger was told."""

    index: int
    cohort: tuple[int, ...]
    dropouts: Mapping[int, str]
    event: DpEvent
    global_flat: FloatVector
    started_at: float
    canaries: tuple[int, ...] = ()  # sampled canary clients (audit runs; they train nothing)
    clip: float | None = None  # this round's client-level clip (announced; adaptive clipping)

    @property
    def members(self) -> tuple[int, ...]:
        """Everyone in the secure aggregation this round: the cohort and the canaries."""
        return self.cohort + self.canaries


def _finite(x: Any) -> float | None:
    """A float for a record field, or None for NaN/∞ (not representable in canonical JSON:
    an infinite ε is stated by the recorded non-private event itself)."""
    if x is None or isinstance(x, bool):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _emit(cb: Callback | None, kind: str, **info: Any) -> None:
    if cb is not None:
        cb(kind, info)


def sha256_of(flat: FloatVector) -> str:
    return hashlib.sha256(np.ascontiguousarray(flat, dtype="<f8").tobytes()).hexdigest()


def reconcile(ledger: Ledger, run_id: str, ck: ckpt_mod.Checkpoint | None) -> list[dict[str, Any]]:
    """Make the ledger agree with the checkpoint after a crash; returns what was done.

    - the checkpoint's last round but no ``round_completed`` (killed between the two writes):
      append the saved entry — the round happened and its model is in the checkpoint;
    - ``round_projected`` with no completion (killed mid-round): append ``round_aborted`` with
      ``released: false`` — its aggregate never left the process and the round is re-run.
    """
    actions: list[dict[str, Any]] = []
    entries = ledger_mod.entries_of(ledger, run_id)
    done = ledger_mod.completed_rounds(entries)
    if ck is not None and ck.rounds_done > 0 and (ck.rounds_done - 1) not in done:
        if ck.last_round_entry is None:
            raise ResumeError("checkpoint lacks the ledger entry of its last round")
        ledger.append("round_completed", ck.last_round_entry, round_id=ck.rounds_done - 1)
        actions.append({"appended_round_completed": ck.rounds_done - 1})
        entries = ledger_mod.entries_of(ledger, run_id)
    finished = ck.rounds_done if ck is not None else 0
    extra = [r for r in ledger_mod.completed_rounds(entries) if r >= finished]
    if extra:
        raise ResumeError(f"ledger has completed rounds {extra} beyond the checkpoint")
    for r in ledger_mod.open_projections(entries):
        ledger.append_record(
            RoundAborted(released=False, reason="run stopped before the round finished; re-run"),
            round_id=r,
        )
        actions.append({"aborted_in_flight_round": r})
    return actions


class Orchestrator:
    """One federated run over a ledger, a checkpoint and an aggregation backend.

    Use as a context manager (the ledger is closed on exit). ``evaluate`` maps the global flat
    state to metrics (``accuracy``/``loss`` are shown in reports); ``client_sizes`` (examples
    per client) weight plain FedAvg and bound example-level δ; ``observer`` sees every wire
    message of plaintext and SecAgg(+) rounds.
    """

    def __init__(
        self,
        cfg: RunConfig,
        model: ModelInfo,
        *,
        client_sizes: tuple[int, ...] = (),
        evaluate: Evaluate | None = None,
        resume: bool = True,
        observer: WireObserver | None = None,
        callback: Callback | None = None,
    ) -> None:
        t_setup = time.perf_counter()
        self.cfg = cfg
        self.model = model
        self.evaluate = evaluate
        self.callback = callback
        self.client_sizes = client_sizes
        self.max_examples = max(client_sizes) if client_sizes else None
        if cfg.dp == "local" and not cfg.allow_large_delta and client_sizes:
            population = sum(client_sizes)
            if cfg.delta >= 1.0 / population:
                raise ConfigurationError(
                    f"δ = {cfg.delta} ≥ 1/{population} training examples (the privacy unit of "
                    "local DP-SGD): choose δ ≪ 1/population or set allow_large_delta = true",
                    parameter="delta",
                )
        self.run_dir = Path(cfg.out) if cfg.out else Path("runs") / cfg.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.layout_digest = model.layout.digest().hex()
        existing = ckpt_mod.load(self.run_dir) if resume else None
        if existing is None and (self.run_dir / ckpt_mod.CHECKPOINT_NAME).exists():
            raise ResumeError(
                f"{self.run_dir} holds a checkpoint; pass resume=True or use a new --out"
            )
        if existing is not None:
            if existing.config_digest != cfg.digest():
                raise ResumeError("the run directory was written with a different configuration")
            if existing.layout_digest != self.layout_digest:
                raise ResumeError("the adapter layout differs from the checkpoint's")
        self.run_id = (
            existing.run_id if existing is not None else f"{cfg.name}-{secrets.token_hex(6)}"
        )
        key_dir = ensure_key_dir(Path(cfg.key_dir) if cfg.key_dir else default_key_dir())
        self.key_dir = key_dir
        # Who may be sampled: the real clients and, in an audit run, the included canaries
        # (clients like any other: same coins, same aggregation, same noise).
        self.canaries: CanaryAudit | None = None
        self.population_cfg = cfg
        sizes = client_sizes
        if cfg.audit_canaries:
            self.canaries = CanaryAudit.load_or_create(
                key_dir, self.run_id, cfg.audit_canaries, model.layout.size, cfg.clip, cfg.n_clients
            )
            extra = len(self.canaries.client_ids)
            self.population_cfg = cfg.replace(n_clients=cfg.n_clients + extra)
            sizes = client_sizes + (self.max_examples or 1,) * extra if client_sizes else ()
        # A resumed run keeps the noise multiplier it started with, even if `rounds` grew: the
        # budget check (not a silent recalibration) decides whether more rounds may run.
        backend_cfg = self.population_cfg
        if existing is not None and existing.noise_multiplier is not None:
            backend_cfg = backend_cfg.replace(noise_multiplier=existing.noise_multiplier)
        # Adaptive clipping: the mechanism runs on the joint (d+1)-vector with clip c_J;
        # DP-FTRL: the tree's per-node z (securefl.fl.mechanisms).
        dimension = model.layout.size
        mech_state = existing.mechanism_state if existing is not None else None
        self.adaptive: AdaptiveClipLoop | None = None
        self.ftrl: FtrlLoop | None = None
        if cfg.clip_mode == "adaptive":
            z = adaptive_noise_multiplier(backend_cfg, dimension)
            saved_clip = (mech_state or {}).get("adaptive_clip")
            self.adaptive = AdaptiveClipLoop(backend_cfg, dimension, z, clip=saved_clip)
            self.adaptive.tracker.rounds = int((mech_state or {}).get("adaptive_rounds", 0))
            backend_cfg = mechanism_config(backend_cfg, z)
            dimension += 1
        elif cfg.mechanism == "ftrl":
            z = ftrl_noise_multiplier(backend_cfg, dimension)
            backend_cfg = backend_cfg.replace(noise_multiplier=z)
            self.ftrl = FtrlLoop(
                backend_cfg,
                dimension,
                z,
                key_dir=key_dir,
                run_id=self.run_id,
                checkpoint_state=mech_state,
            )
        self.backend: Backend = make_backend(
            backend_cfg, dimension=dimension, client_sizes=sizes, observer=observer
        )
        self.noise_multiplier = self.backend.noise_multiplier
        self.policy = ledger_mod.load_policy(cfg)
        self.refused: list[dict[str, Any]] = []
        if existing is not None:
            self.global_flat = existing.global_flat.copy()
            self.account = PrivacyAccount.from_list(cfg, existing.events)
            self.start = existing.rounds_done
            self.metrics: list[dict[str, Any]] = list(existing.metrics)
            self._write_metrics()
        else:
            self.global_flat = np.asarray(model.initial, dtype=np.float64).copy()
            self.account = PrivacyAccount(cfg, [])
            self.start = 0
            self.metrics = []
        # The server optimiser steps from the released (noised) mean: post-processing. Its
        # memory (momentum, second moments) is checkpointed so a resumed run continues it.
        self.server_optimizer = server_optimizer_of(cfg)
        self.server_state: ServerState = init_state(self.server_optimizer, model.layout.size)
        if existing is not None and existing.server_state is not None:
            self.server_state = existing.server_state
        self.next_index = self.start
        self._stopped = False
        self._key = load_or_create_secret(key_dir, f"{self.run_id}.sampling.key")
        # The signing key lives in the key directory, never under the run directory (issue
        # 14: whoever holds the run directory must not be able to re-sign its history).
        self.signer = default_signer(self.run_id, run_dir=self.run_dir, key_dir=key_dir)
        self.public_key_path: Path = self.signer.public_key_path
        self.ledger = Ledger(self.run_dir / ledger_mod.LEDGER_NAME, self.signer, run_id=self.run_id)
        try:
            if existing is None:
                self.ledger.append_record(self._run_started())
                if self.policy is not None:
                    from securefl.audit.policy import record_policy

                    record_policy(self.ledger, self.policy, run_id=self.run_id)
            else:
                actions = reconcile(self.ledger, self.run_id, existing)
                self.ledger.append_record(RunResumed(from_round=self.start, reconciled=actions))
        except BaseException:
            self.ledger.close()
            raise
        _emit(
            callback,
            "started",
            run_id=self.run_id,
            start=self.start,
            rounds=cfg.rounds,
            setup_s=time.perf_counter() - t_setup,
            parameters=model.layout.size,
            noise_multiplier=self.noise_multiplier,
        )

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ledger.close()

    @property
    def local_trainer(self) -> Any:
        """The DP-SGD training hook of ``dp = "local"`` (None otherwise)."""
        return self.backend.trainer

    @property
    def finished(self) -> bool:
        return self._stopped or self.next_index >= self.cfg.rounds

    # -- one round ---------------------------------------------------------------------------
    def _round_info(self, r: int, aggregation: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "round_id": r,
            "privacy_unit": ledger_mod.privacy_unit(self.cfg),
            "adjacency": ledger_mod.adjacency(self.cfg),
            "aggregation": dict(aggregation or self.backend.protocol_info()),
        }

    def next_round(self) -> RoundPlan | None:
        """Draw the next cohort, check the policy, record the projection; None when the run is
        over (all rounds done, or the budget refused the next round).

        A round the policy refuses for its own shape — a cohort below ``min_cohort``, a
        SecAgg threshold below ``min_secagg_threshold`` — is recorded as refused and skipped
        (nothing was computed or released, nothing is charged); a round that would exceed the
        budget stops the run."""
        while not self.finished:
            plan = self._try_round()
            if plan is not None:
                return plan
        return None

    def _try_round(self) -> RoundPlan | None:
        r = self.next_index
        event = self.ftrl.round_event() if self.ftrl is not None else self.backend.round_event()
        # The cohort is drawn first (secret keyed coins; nothing is computed or released yet)
        # so that the policy sees this round's real secure-aggregation threshold and cohort.
        t_round = time.perf_counter()
        cohort, performed = sample_clients(self.population_cfg, self._key, r)
        if self.ftrl is not None:  # no amplification claimed: the schedule bounds the rest
            cohort = self.ftrl.eligible(cohort)
        elif self.cfg.client_level_dp:  # local DP-SGD claims no client sampling
            from securefl.dp.participation import assert_sampling_matches

            assert_sampling_matches(event, performed)
        round_info = {
            **self._round_info(r, self.backend.planned_protocol_info(len(cohort))),
            "cohort_size": len(cohort),
        }
        if self.adaptive is not None:  # the round's terms announce its clip
            round_info["aggregation"]["adaptive_clip"] = {"clip": self.adaptive.clip}
        if self.ftrl is not None:
            round_info["aggregation"]["dp_ftrl"] = {"tree_round": self.ftrl.rounds + 1}
        if self.policy is not None:
            decision = self.policy.check_round(self.ledger, event, round_info)
            if not decision.allowed:
                self.ledger.append_record(
                    RoundRefused(
                        reasons=list(decision.reasons),
                        projected_epsilon=_finite(decision.projected_epsilon),
                        dp_event=event.to_dict(),
                        policy=self.policy.name,
                        round_info=ledger_mod.jsonable(round_info),
                    ),
                    round_id=r,
                )
                self.refused.append({"round": r, "reasons": decision.reasons})
                _emit(self.callback, "refused", round=r, reasons=decision.reasons)
                eps = decision.projected_epsilon
                if eps is not None and eps <= self.policy.max_epsilon:
                    self.next_index = r + 1  # this round's shape, not the budget: skip it
                else:
                    self._stopped = True
                return None
        projected = self.account.epsilon([event])
        self.ledger.append_record(
            RoundProjected(
                dp_event=event.to_dict(),
                projected_epsilon=_finite(projected),
                privacy_unit=round_info["privacy_unit"],
                adjacency=round_info["adjacency"],
                aggregation=ledger_mod.jsonable(round_info["aggregation"]),
                expected_cohort=len(cohort),
            ),
            round_id=r,
        )
        dropouts = simulate_dropouts(self.population_cfg, cohort, r, self.backend.stages)
        _emit(self.callback, "round_started", round=r, cohort=len(cohort))
        n_real = self.cfg.n_clients
        return RoundPlan(
            r,
            tuple(c for c in cohort if c < n_real),
            dropouts,
            event,
            self.global_flat.copy(),
            t_round,
            canaries=tuple(c for c in cohort if c >= n_real),
            clip=self.adaptive.clip if self.adaptive is not None else None,
        )

    def weight(self, update: ClientUpdate) -> float:
        """Client-level DP: 1 (sensitivity C); otherwise n_k / max n (plain FedAvg)."""
        if self.cfg.client_level_dp or self.max_examples is None:
            return 1.0
        return update.num_examples / self.max_examples

    def complete_round(
        self, plan: RoundPlan, updates: Mapping[int, ClientUpdate], *, train_s: float = 0.0
    ) -> dict[str, Any]:
        """Aggregate the cohort's updates, step the global state, checkpoint and record."""
        if plan.index != self.next_index:
            raise ConfigurationError(
                f"round {plan.index} is not the open round {self.next_index}", parameter="plan"
            )
        unknown = sorted(set(updates) - set(plan.cohort))
        if unknown:
            raise ConfigurationError(
                f"clients {unknown} are not in the cohort", parameter="updates"
            )
        layout = self.model.layout
        digest = layout.digest()
        losses = [u.train_loss for u in updates.values()]
        if self.canaries is not None and plan.canaries:
            canary_updates = self.canaries.updates(
                plan.canaries,
                round_index=plan.index,
                layout_digest=digest,
                num_examples=self.max_examples or 1,
            )
            updates = {**updates, **canary_updates}
        for u in updates.values():
            u.validate(digest, layout.size)
        r = plan.index
        weights = {cid: self.weight(u) for cid, u in updates.items()}
        context = digest + bytes.fromhex(sha256_of(plan.global_flat))  # layout ‖ model
        outcome: AggregateOutcome | None
        abort_reason = ""
        # A sampled client that sent nothing dropped before uploading.
        missing = {c: "advertise_keys" for c in plan.members if c not in updates}
        dropouts = {c: s for c, s in plan.dropouts.items() if c in updates}
        try:
            if not updates:
                raise AbortError("no client of the cohort sent an update")
            inputs = {c: u.delta for c, u in updates.items()}
            if self.adaptive is not None:  # the client's side: [Δ/C_t, 2κ(b − ½)]
                inputs = {
                    c: self.adaptive.encode(c, u.delta, u.clip_indicator)
                    for c, u in updates.items()
                }
            outcome = self.backend.aggregate(
                inputs,
                weights,
                dropouts=dropouts,
                round_index=r,
                context=context,
            )
        except AbortError as exc:
            outcome = None
            abort_reason = str(exc)
        return self._close_round(
            plan, outcome, abort_reason, losses=losses, missing=missing, train_s=train_s
        )

    def complete_remote_round(
        self,
        plan: RoundPlan,
        outcome: AggregateOutcome | None,
        *,
        abort_reason: str = "",
        train_s: float = 0.0,
    ) -> dict[str, Any]:
        """Close a round whose aggregation ran elsewhere (an engine's SecAgg(+) over real
        nodes, :mod:`securefl.engine.job`): ``outcome`` is the decoded sum over survivors, or
        None with ``abort_reason``. Release, server step, checkpoint and ledger are the same
        as :meth:`complete_round`'s; cohort members outside ``outcome.survivors`` are
        recorded as dropped by the outcome itself."""
        if plan.index != self.next_index:
            raise ConfigurationError(
                f"round {plan.index} is not the open round {self.next_index}", parameter="plan"
            )
        if self.adaptive is not None:
            raise UnsupportedCombinationError(
                "adaptive clipping is not wired into remote aggregation", parameter="clip_mode"
            )
        if outcome is not None:
            if outcome.total.shape != (self.model.layout.size,):
                raise ConfigurationError("aggregate has the wrong shape", parameter="outcome")
            stray = sorted(set(outcome.survivors) - set(plan.members))
            if stray:
                raise ConfigurationError(
                    f"survivors {stray} were not sampled this round", parameter="outcome"
                )
        return self._close_round(
            plan, outcome, abort_reason, losses=[], missing={}, train_s=train_s
        )

    def skip_remote_round(self, plan: RoundPlan, reason: str) -> None:
        """Close a projected round an engine could not start, before it asked anyone or
        computed anything (a CKKS cohort below the key holder's minimum): ``round_aborted``
        with ``released: false``, not charged, the model unchanged; the run goes on with the
        next round. Re-run after a resume, it is skipped again (the same secret coins)."""
        if plan.index != self.next_index:
            raise ConfigurationError(
                f"round {plan.index} is not the open round {self.next_index}", parameter="plan"
            )
        self.ledger.append_record(RoundAborted(released=False, reason=reason), round_id=plan.index)
        self.next_index = plan.index + 1
        _emit(self.callback, "refused", round=plan.index, reasons=[reason])

    def _close_round(
        self,
        plan: RoundPlan,
        outcome: AggregateOutcome | None,
        abort_reason: str,
        *,
        losses: list[float],
        missing: Mapping[int, str],
        train_s: float,
    ) -> dict[str, Any]:
        cfg, layout = self.cfg, self.model.layout
        r = plan.index
        t1 = time.perf_counter()
        mech_record: dict[str, Any] = {}
        if self.ftrl is not None:  # the tree adds the noise (zeros for an aborted round)
            t_noise = time.perf_counter()
            mean = self.ftrl.release(
                None if outcome is None else outcome.total,
                () if outcome is None else sorted(outcome.survivors),
            )
            noise_s = time.perf_counter() - t_noise
            mech_record["dp_ftrl"] = self.ftrl.round_record(released=mean is not None)
        else:
            mean, noise_s = self.backend.release_mean(outcome, cfg)
        if self.adaptive is not None:
            if mean is not None:
                mean, clip_info = self.adaptive.release(mean)
            else:
                clip_info = {"clip": self.adaptive.clip, "next_clip": self.adaptive.clip}
            mech_record["adaptive_clip"] = clip_info
        new_flat = plan.global_flat.copy()
        if mean is not None:  # an aborted round releases nothing and moves nothing
            opt = server_optimizer_at(cfg, self.server_optimizer, r)
            new_flat, self.server_state = server_step(
                opt, plan.global_flat, mean, self.server_state
            )
        t_server = time.perf_counter() - t1
        record: dict[str, Any] = {"round": r, **mech_record}
        t2 = time.perf_counter()
        prev = self.metrics[-1] if self.metrics else {}
        accuracy, loss = prev.get("accuracy", math.nan), prev.get("loss", math.nan)
        if self.evaluate is not None and ((r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds):
            scores = dict(self.evaluate(new_flat))
            accuracy = scores.get("accuracy", accuracy)
            loss = scores.get("loss", loss)
        record["accuracy"], record["loss"] = accuracy, loss
        t_eval = time.perf_counter() - t2
        down = len(plan.members) * (4 * layout.size)
        if outcome is None:
            record.update(
                participants=[],
                dropped={"aborted": list(plan.members)},
                bytes_up=0,
                bytes_down=down,
                protocol={"aborted": abort_reason},
                clipped_coordinates=0,
            )
            timings = {"encode": 0.0, "aggregate": 0.0, "unmask": 0.0}
        else:
            dropped = dict(outcome.dropped)
            if missing:
                dropped["before_upload"] = sorted(missing)
            record.update(
                participants=sorted(outcome.survivors),
                dropped=dropped,
                bytes_up=outcome.bytes_up,
                bytes_down=down + outcome.bytes_down,
                protocol=outcome.protocol,
                clipped_coordinates=outcome.clipped_coordinates,
            )
            timings = dict(outcome.timings)
        timings.update(
            local_training=train_s,
            server_update=t_server,
            central_noise=noise_s,
            evaluate=t_eval,
            round=time.perf_counter() - plan.started_at,
        )
        record.update(
            cohort_size=len(plan.members),
            n_participants=len(record["participants"]),
            n_dropped=sum(len(v) for v in record["dropped"].values()),
            train_loss=float(np.mean(losses)) if losses else None,
            timings=timings,
        )
        self.account.events.append(plan.event)
        record["epsilon"] = self.account.epsilon()
        round_info = self._round_info(r)
        completed = RoundCompleted(
            dp_event=plan.event.to_dict(),
            participants=len(record["participants"]),
            participant_ids=list(record["participants"]),
            cohort_size=record["cohort_size"],
            dropouts=record["n_dropped"],
            dropped=ledger_mod.jsonable(record["dropped"]),
            epsilon=_finite(record["epsilon"]),
            delta=cfg.delta,
            accountant=cfg.accountant,
            privacy_unit=round_info["privacy_unit"],
            adjacency=round_info["adjacency"],
            aggregation=ledger_mod.jsonable(
                {**round_info["aggregation"], **record.pop("protocol"), **mech_record}
            ),
            accuracy=_finite(record["accuracy"]),
            loss=_finite(record["loss"]),
            bytes_up=_finite(record["bytes_up"]),
            bytes_down=_finite(record["bytes_down"]),
            timings=ledger_mod.jsonable(record["timings"]),
        )
        entry = completed.to_payload()
        self.metrics.append(record)
        self.global_flat = new_flat
        mechanism_state: dict[str, Any] | None = None
        if self.adaptive is not None:
            mechanism_state = self.adaptive.state()
        if self.ftrl is not None:  # the secret tree first, then the checkpoint naming it
            mechanism_state = self.ftrl.save(ckpt_mod.atomic_write_text)
        ckpt_mod.save(
            self.run_dir,
            ckpt_mod.Checkpoint(
                rounds_done=r + 1,
                global_flat=new_flat,
                layout_digest=self.layout_digest,
                config_digest=cfg.digest(),
                run_id=self.run_id,
                noise_multiplier=self.noise_multiplier,
                events=self.account.to_list(),
                last_round_entry=entry,
                rng={"scheme": "numpy.default_rng([seed, round, purpose])", "seed": cfg.seed},
                metrics=[ledger_mod.jsonable(m) for m in self.metrics],
                server_state=self.server_state,
                mechanism_state=mechanism_state,
            ),
        )
        self.ledger.append_record(completed, round_id=r)
        self._write_metrics()
        self.next_index = r + 1
        _emit(self.callback, "round", **record)
        return record

    # -- end of run -----------------------------------------------------------------------
    def finish(self) -> RunResult:
        """Record ``run_finished``, write the reports and ``summary.json``."""
        eps = self.account.epsilon()
        last = self.metrics[-1] if self.metrics else {}
        result = RunResult(
            run_dir=self.run_dir,
            run_id=self.run_id,
            rounds_completed=len(self.metrics),
            resumed_from=self.start,
            refused=self.refused,
            epsilon=eps,
            delta=self.cfg.delta,
            noise_multiplier=self.noise_multiplier,
            accuracy=float(last.get("accuracy", math.nan)),
            loss=float(last.get("loss", math.nan)),
            metrics=self.metrics,
            global_flat=self.global_flat,
            provenance=dict(self.model.provenance),
            bytes_per_round_up=float(np.mean([m["bytes_up"] for m in self.metrics]))
            if self.metrics
            else 0.0,
        )
        if self.canaries is not None and self.metrics:
            result.empirical_audit = self._record_canary_audit(eps)
        self.ledger.append_record(
            RunFinished(
                rounds_completed=result.rounds_completed,
                epsilon=_finite(eps),
                delta=self.cfg.delta,
                accuracy=_finite(result.accuracy),
                loss=_finite(result.loss),
                refused=ledger_mod.jsonable({"r": self.refused})["r"],
                global_adapter_sha256=sha256_of(self.global_flat),
            )
        )
        # Publish the head anchor outside the run directory (rollback detection by default)
        # and fold the WAL into one self-contained ledger file.
        from securefl.audit.anchors import finish_ledger

        anchor = finish_ledger(self.ledger, run_dir=self.run_dir, key_dir=self.key_dir)
        result.anchor = anchor.text
        result.public_key = str(self.public_key_path)
        result.report_paths = self._write_reports(anchor.text)
        (self.run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2), "utf-8")
        _emit(self.callback, "finished", **result.summary())
        return result

    # -- helpers --------------------------------------------------------------------------
    def _record_canary_audit(self, eps: float) -> dict[str, Any]:
        """Score the canaries on the released model delta and record the one-run test."""
        from securefl.audit.empirical import record_audit

        assert self.canaries is not None
        cfg = self.cfg
        released = self.global_flat - np.asarray(self.model.initial, dtype=np.float64)
        dp = {
            "none": "FedAvg without differential privacy",
            "central": "client-level DP-FedAvg, central noise",
            "distributed": "client-level DP-FedAvg, distributed discrete Gaussian noise",
        }[cfg.dp]
        z = "" if self.noise_multiplier is None else f", z = {self.noise_multiplier:.4g}"
        mechanism = (
            f"{dp}, {cfg.aggregation} aggregation, {cfg.sampling} sampling{z}, "
            f"{len(self.metrics)} rounds; released: final − initial trainable state "
            f"(d = {self.model.layout.size})"
        )
        result = self.canaries.audit(
            released,
            cfg.delta,
            epsilon=None if cfg.dp == "none" else eps,
            mechanism=mechanism,
        )
        record_audit(self.ledger, result, details=self.canaries.describe())
        return result.to_dict()

    def _run_started(self) -> RunStarted:
        from securefl.audit.provenance import code_version

        cfg = self.cfg
        j = ledger_mod.jsonable
        return RunStarted(
            privacy_unit=ledger_mod.privacy_unit(cfg),
            adjacency=ledger_mod.adjacency(cfg),
            planned_rounds=cfg.rounds,
            code_version=j(code_version()),
            aggregation=j(self.backend.protocol_info()),
            dp=None if cfg.dp == "none" else j(self._dp_info()),
            delta=cfg.delta,
            accountant=cfg.accountant,
            sampling={
                "scheme": cfg.sampling,
                "q": cfg.sampling_rate,
                "m": cfg.clients_per_round,
                "n": self.population_cfg.n_clients,
                **({"canary_clients": len(self.canaries.client_ids)} if self.canaries else {}),
                "source": "HMAC-SHA256 keyed with a per-run secret kept in the key directory",
            },
            model=j(dict(self.model.provenance)),
            config=j(cfg.to_dict()),
            config_sha256=cfg.digest(),
            policy=None if self.policy is None else self.policy.name,
            extra=j(
                {
                    "adapter": {
                        "parameters": self.model.layout.size,
                        "layout_sha256": self.layout_digest,
                        "bytes_per_update_fp32": 4 * self.model.layout.size,
                        **self.model.adapter,
                    },
                    "device": self.model.device,
                    **({"canary_audit": self.canaries.describe()} if self.canaries else {}),
                }
            ),
        )

    def _dp_info(self) -> dict[str, Any]:
        """The backend's DP description, with what adaptive clipping / DP-FTRL change."""
        info = self.backend.dp_info()
        if self.adaptive is not None:
            info["adaptive_clipping"] = self.adaptive.info()
            info["clip"] = self.cfg.clip  # initial clip; the mechanism's clip is joint_clip
        if self.ftrl is not None:
            info["mechanism"] = self.ftrl.info(self.cfg.rounds)
            info["denominator"] = self.ftrl.config.expected_cohort
        return info

    def _write_metrics(self) -> None:
        text = "".join(
            json.dumps(ledger_mod.jsonable(m), sort_keys=True) + "\n" for m in self.metrics
        )
        ckpt_mod.atomic_write_text(self.run_dir / METRICS_NAME, text)

    def _write_reports(self, anchor: str | None = None) -> dict[str, str]:
        """Audit report (JSON / Markdown / HTML, and PDF where a Chromium is installed) of this
        run's ledger, verified against its key and the head anchor just published."""
        from securefl.audit import report as report_mod
        from securefl.audit.render_pdf import PdfRenderError

        report = report_mod.build_report(
            self.ledger,
            policy=self.policy,
            metrics={int(m["round"]): m for m in self.metrics},
            public_key=self.public_key_path,
            expected_head=anchor,
            delta=self.cfg.delta,
        )
        stem = self.run_dir / "report"
        out = {
            fmt: str(path)
            for fmt, path in report_mod.write_report(report, stem, ("json", "md", "html")).items()
        }
        # No headless Chromium here: no PDF (the HTML report is the same page).
        with contextlib.suppress(PdfRenderError):
            out["pdf"] = str(report_mod.write_pdf(report, stem.with_suffix(".pdf")))
        return out


__all__ = [
    "METRICS_NAME",
    "ModelInfo",
    "Orchestrator",
    "RoundPlan",
    "RunResult",
    "reconcile",
    "sha256_of",
]
