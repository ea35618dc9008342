"""In-process simulation of federated LoRA fine-tuning: the embedded default engine.

One round (Bonawitz et al. 2019 "Towards FL at scale", §2; DP-FedAvg of McMahan et al. 2018):

1. budget check — the projected round event against the ledger/policy; refused ⇒ not started;
2. ``round_projected`` to the ledger; sample the cohort (secret keyed coins);
3. client steps (local training, client-side clipping) → update messages;
4. aggregation backend (plain / SecAgg / SecAgg+ / CKKS, optional distributed noise);
5. server step: + central noise, ÷ fixed denominator (DP) or weight total, apply to global;
6. held-out evaluation; atomic checkpoint; ``round_completed`` to the ledger; metrics.jsonl.

A killed run resumes from its checkpoint and reconciles the ledger (see :func:`_reconcile`).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from securefl.audit.ledger import Ledger
from securefl.dp.events import DpEvent
from securefl.errors import AbortError, ConfigurationError
from securefl.fl import checkpoint as ckpt_mod
from securefl.fl import ledger as ledger_mod
from securefl.fl.aggregation import AggregateOutcome, WireObserver
from securefl.fl.backends import Backend, make_backend
from securefl.fl.client import ClientUpdate, TrainSpec, client_step, evaluate
from securefl.fl.config import RunConfig
from securefl.fl.data import (
    TextDataset,
    dirichlet_partition,
    load_text_dataset,
    synthetic_topics,
    train_test_split,
)
from securefl.fl.errors import ResumeError
from securefl.fl.model import AdapterModel
from securefl.fl.privacy import PrivacyAccount
from securefl.fl.sampling import load_or_create_secret, sample_clients, simulate_dropouts
from securefl.tensors import FloatVector

Callback = Callable[[str, dict[str, Any]], None]
METRICS_NAME = "metrics.jsonl"


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
    provenance: dict[str, str]
    bytes_per_round_up: float = 0.0
    report_paths: dict[str, str] = field(default_factory=dict)

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
                "adapter_parameters": int(self.global_flat.shape[0]),
                "report": self.report_paths,
            }
        )


def load_data(cfg: RunConfig) -> tuple[list[TextDataset], TextDataset]:
    """Client datasets (Dirichlet label skew) and the held-out evaluation set."""
    if cfg.data == "synthetic":
        full = synthetic_topics(cfg.synthetic_examples, seed=cfg.seed)
    else:
        full = load_text_dataset(
            cfg.data, text_column=cfg.text_column, label_column=cfg.label_column
        )
    train, test = train_test_split(full, cfg.test_fraction, seed=cfg.seed)
    parts = dirichlet_partition(train.labels, cfg.n_clients, cfg.dirichlet_alpha, seed=cfg.seed)
    return [train.subset(p) for p in parts], test


def _emit(cb: Callback | None, kind: str, **info: Any) -> None:
    if cb is not None:
        cb(kind, info)


def _run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / cfg.name


def _reconcile(ledger: Ledger, run_id: str, ck: ckpt_mod.Checkpoint | None) -> list[dict[str, Any]]:
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
        ledger.append(
            "round_aborted",
            {"released": False, "reason": "run stopped before the round finished; re-run"},
            round_id=r,
        )
        actions.append({"aborted_in_flight_round": r})
    return actions


def run_simulation(
    cfg: RunConfig,
    *,
    callback: Callback | None = None,
    resume: bool = True,
    wire_observer: WireObserver | None = None,
) -> RunResult:
    """Run (or resume) the simulation described by ``cfg``; see the module docstring.

    ``wire_observer`` sees every plaintext / SecAgg(+) wire message (who-sees-what tests).
    """
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_setup = time.perf_counter()
    clients, test = load_data(cfg)
    if cfg.dp == "local" and not cfg.allow_large_delta:
        population = sum(len(c) for c in clients)
        if cfg.delta >= 1.0 / population:
            raise ConfigurationError(
                f"δ = {cfg.delta} ≥ 1/{population} training examples (the privacy unit of "
                "local DP-SGD): choose δ ≪ 1/population or set allow_large_delta = true",
                parameter="delta",
            )
    _emit(callback, "loading_model", model=cfg.model)
    model = AdapterModel(
        cfg.model,
        num_labels=len(test.label_names),
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_targets=cfg.lora_targets,
        max_length=cfg.max_length,
        seed=cfg.seed,
        device=cfg.device,
    )
    d = model.layout.size
    layout_digest = model.layout.digest().hex()
    max_n = max(len(c) for c in clients)
    existing = ckpt_mod.load(run_dir) if resume else None
    if existing is None and (run_dir / ckpt_mod.CHECKPOINT_NAME).exists():
        raise ResumeError(f"{run_dir} holds a checkpoint; pass resume=True or use a new --out")
    sizes = tuple(len(c) for c in clients)
    if existing is not None:
        if existing.config_digest != cfg.digest():
            raise ResumeError("the run directory was written with a different configuration")
        if existing.layout_digest != layout_digest:
            raise ResumeError("the adapter layout differs from the checkpoint's")
    # A resumed run keeps the noise multiplier it started with, even if `rounds` grew: the
    # budget check (not a silent recalibration) decides whether more rounds may run.
    backend_cfg = cfg
    if existing is not None and existing.noise_multiplier is not None:
        backend_cfg = cfg.replace(noise_multiplier=existing.noise_multiplier)
    backend: Backend = make_backend(
        backend_cfg, dimension=d, client_sizes=sizes, observer=wire_observer
    )
    noise_multiplier = backend.noise_multiplier
    policy = ledger_mod.load_policy(cfg)
    if existing is not None:
        run_id = existing.run_id
        global_flat = existing.global_flat.copy()
        account = PrivacyAccount.from_list(cfg, existing.events)
        start = existing.rounds_done
        metrics = list(existing.metrics)
        _write_metrics(run_dir, metrics)
    else:
        run_id = f"{cfg.name}-{secrets.token_hex(6)}"
        global_flat = model.get_flat()
        account = PrivacyAccount(cfg, [])
        start = 0
        metrics = []
    key = load_or_create_secret(run_dir)
    ledger = ledger_mod.open_ledger(run_dir, run_id)
    try:
        if existing is None:
            ledger.append("run_started", _run_started_payload(cfg, model, backend, policy))
            if policy is not None:
                from securefl.audit.policy import record_policy

                record_policy(ledger, policy, run_id=run_id)
        else:
            actions = _reconcile(ledger, run_id, existing)
            ledger.append("run_resumed", {"from_round": start, "reconciled": actions})
        _emit(
            callback,
            "started",
            run_id=run_id,
            start=start,
            rounds=cfg.rounds,
            setup_s=time.perf_counter() - t_setup,
            parameters=d,
            noise_multiplier=noise_multiplier,
        )
        refused: list[dict[str, Any]] = []
        spec = TrainSpec(
            cfg.local_epochs,
            cfg.batch_size,
            cfg.local_lr,
            clip=cfg.clip if cfg.client_level_dp else None,
        )
        acc, loss = (
            (metrics[-1]["accuracy"], metrics[-1]["loss"]) if metrics else (math.nan, math.nan)
        )
        for r in range(start, cfg.rounds):
            event = backend.round_event()
            round_info = _round_info(cfg, backend, run_id, r)
            if policy is not None:
                decision = policy.check_round(ledger, event, round_info)
                if not decision.allowed:
                    payload = ledger_mod.jsonable(
                        {
                            "reasons": decision.reasons,
                            "projected_epsilon": decision.projected_epsilon,
                            "dp_event": event.to_dict(),
                            "policy": policy.name,
                            **round_info,
                        }
                    )
                    ledger.append("round_refused", payload, round_id=r)
                    refused.append({"round": r, "reasons": decision.reasons})
                    _emit(callback, "refused", round=r, reasons=decision.reasons)
                    break
            projected = account.epsilon([event])
            ledger.append(
                "round_projected",
                ledger_mod.jsonable(
                    {"dp_event": event.to_dict(), "projected_epsilon": projected, **round_info}
                ),
                round_id=r,
            )
            record, global_flat = _one_round(
                cfg,
                r,
                model,
                backend,
                clients,
                test,
                global_flat,
                spec,
                key,
                max_n,
                callback,
                declared=event,
            )
            account.events.append(event)
            record["epsilon"] = account.epsilon()
            acc, loss = record.get("accuracy", acc), record.get("loss", loss)
            record["accuracy"], record["loss"] = acc, loss
            entry = ledger_mod.jsonable(
                {
                    "dp_event": event.to_dict(),
                    "epsilon": record["epsilon"],
                    "delta": cfg.delta,
                    "participants": record["participants"],
                    "cohort_size": record["cohort_size"],
                    "dropped": record["dropped"],
                    "metrics": {
                        k: record[k] for k in ("accuracy", "loss", "bytes_up", "bytes_down")
                    },
                    "timings": record["timings"],
                    **round_info,
                    "aggregation": {**round_info["aggregation"], **record.pop("protocol")},
                }
            )
            metrics.append(record)
            ckpt_mod.save(
                run_dir,
                ckpt_mod.Checkpoint(
                    rounds_done=r + 1,
                    global_flat=global_flat,
                    layout_digest=layout_digest,
                    config_digest=cfg.digest(),
                    run_id=run_id,
                    noise_multiplier=noise_multiplier,
                    events=account.to_list(),
                    last_round_entry=entry,
                    rng={"scheme": "numpy.default_rng([seed, round, purpose])", "seed": cfg.seed},
                    metrics=[ledger_mod.jsonable(m) for m in metrics],
                ),
            )
            ledger.append("round_completed", entry, round_id=r)
            _write_metrics(run_dir, metrics)
            _emit(callback, "round", **record)
        eps = account.epsilon()
        result = RunResult(
            run_dir=run_dir,
            run_id=run_id,
            rounds_completed=len(metrics),
            resumed_from=start,
            refused=refused,
            epsilon=eps,
            delta=cfg.delta,
            noise_multiplier=noise_multiplier,
            accuracy=float(acc),
            loss=float(loss),
            metrics=metrics,
            global_flat=global_flat,
            provenance=model.provenance.to_dict(),
            bytes_per_round_up=float(np.mean([m["bytes_up"] for m in metrics])) if metrics else 0.0,
        )
        ledger.append(
            "run_finished",
            ledger_mod.jsonable(
                {
                    "rounds_completed": result.rounds_completed,
                    "epsilon": eps,
                    "delta": cfg.delta,
                    "accuracy": result.accuracy,
                    "loss": result.loss,
                    "refused": refused,
                    "global_adapter_sha256": _sha256(global_flat),
                }
            ),
        )
        result.report_paths = _write_reports(run_dir, ledger, policy, metrics, cfg.delta)
    finally:
        ledger.close()
    (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2), "utf-8")
    _emit(callback, "finished", **result.summary())
    return result


def _sha256(flat: FloatVector) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(flat, dtype="<f8").tobytes()).hexdigest()


def _one_round(
    cfg: RunConfig,
    r: int,
    model: AdapterModel,
    backend: Backend,
    clients: list[TextDataset],
    test: TextDataset,
    global_flat: FloatVector,
    spec: TrainSpec,
    key: bytes,
    max_n: int,
    callback: Callback | None,
    *,
    declared: DpEvent | None = None,
) -> tuple[dict[str, Any], FloatVector]:
    t_round = time.perf_counter()
    cohort, performed = sample_clients(cfg, key, r)
    if cfg.client_level_dp and declared is not None:  # local DP-SGD: no client sampling claimed
        from securefl.dp.participation import assert_sampling_matches

        assert_sampling_matches(declared, performed)
    dropouts = simulate_dropouts(cfg, cohort, r, backend.stages)
    _emit(callback, "round_started", round=r, cohort=len(cohort))
    updates: dict[int, ClientUpdate] = {}
    t0 = time.perf_counter()
    for cid in cohort:
        updates[cid] = client_step(
            model,
            global_flat,
            clients[cid],
            spec,
            client_id=cid,
            round_index=r,
            seed=cfg.seed,
            trainer=backend.trainer,
        )
        _emit(callback, "client_done", round=r, client=cid)
    t_train = time.perf_counter() - t0
    digest = model.layout.digest()
    for u in updates.values():
        u.validate(digest, model.layout.size)
    weights = {
        cid: (1.0 if cfg.client_level_dp else u.num_examples / max_n) for cid, u in updates.items()
    }
    context = digest + bytes.fromhex(_sha256(global_flat))  # layout ‖ model digests
    try:
        outcome: AggregateOutcome | None = backend.aggregate(
            {c: u.delta for c, u in updates.items()},
            weights,
            dropouts=dropouts,
            round_index=r,
            context=context,
        )
    except AbortError as exc:
        outcome = None
        abort_reason = str(exc)
    t1 = time.perf_counter()
    new_flat, noise_s = backend.server_update(global_flat, outcome, cfg)
    t_server = time.perf_counter() - t1
    model.set_flat(new_flat)
    record: dict[str, Any] = {"round": r}
    t2 = time.perf_counter()
    if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
        accuracy, loss = evaluate(model, test)
        record["accuracy"], record["loss"] = accuracy, loss
    t_eval = time.perf_counter() - t2
    down = len(cohort) * (4 * model.layout.size)
    if outcome is None:
        record.update(
            participants=[],
            dropped={"aborted": cohort},
            bytes_up=0,
            bytes_down=down,
            protocol={"aborted": abort_reason},
            clipped_coordinates=0,
        )
        timings = {"encode": 0.0, "aggregate": 0.0, "unmask": 0.0}
    else:
        record.update(
            participants=sorted(outcome.survivors),
            dropped=outcome.dropped,
            bytes_up=outcome.bytes_up,
            bytes_down=down + outcome.bytes_down,
            protocol=outcome.protocol,
            clipped_coordinates=outcome.clipped_coordinates,
        )
        timings = dict(outcome.timings)
    timings.update(
        local_training=t_train,
        server_update=t_server,
        central_noise=noise_s,
        evaluate=t_eval,
        round=time.perf_counter() - t_round,
    )
    record.update(
        cohort_size=len(cohort),
        n_participants=len(record["participants"]),
        n_dropped=sum(len(v) for v in record["dropped"].values()),
        train_loss=float(np.mean([u.train_loss for u in updates.values()])) if updates else None,
        timings=timings,
    )
    return record, new_flat


def _round_info(cfg: RunConfig, backend: Backend, run_id: str, r: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "round_id": r,
        "privacy_unit": ledger_mod.privacy_unit(cfg),
        "adjacency": ledger_mod.adjacency(cfg),
        "aggregation": backend.protocol_info(),
    }


def _run_started_payload(
    cfg: RunConfig, model: AdapterModel, backend: Backend, policy: Any
) -> dict[str, Any]:
    return ledger_mod.jsonable(
        {
            "config": cfg.to_dict(),
            "config_sha256": cfg.digest(),
            "model": model.provenance.to_dict(),
            "adapter": {
                "parameters": model.layout.size,
                "layout_sha256": model.layout.digest().hex(),
                "lora_r": cfg.lora_r,
                "lora_alpha": cfg.lora_alpha,
                "targets": list(cfg.lora_targets),
                "bytes_per_update_fp32": 4 * model.layout.size,
            },
            "privacy_unit": ledger_mod.privacy_unit(cfg),
            "adjacency": ledger_mod.adjacency(cfg),
            "aggregation": backend.protocol_info(),
            "dp": backend.dp_info(),
            "sampling": {
                "scheme": cfg.sampling,
                "q": cfg.sampling_rate,
                "m": cfg.clients_per_round,
                "n": cfg.n_clients,
                "source": "HMAC-SHA256 keyed with a per-run secret",
            },
            "policy": None if policy is None else policy.name,
            "device": model.device,
        }
    )


def _write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(ledger_mod.jsonable(m), sort_keys=True) + "\n" for m in metrics)
    ckpt_mod.atomic_write_text(run_dir / METRICS_NAME, text)


def _write_reports(
    run_dir: Path, ledger: Ledger, policy: Any, metrics: list[dict[str, Any]], delta: float
) -> dict[str, str]:
    """Audit report (JSON/MD/HTML) when :mod:`securefl.audit.report` is available."""
    try:
        from securefl.audit import report as report_mod
    except ImportError:
        return {}
    out: dict[str, str] = {}
    report = report_mod.build_report(
        ledger,
        policy=policy,
        metrics={int(m["round"]): m for m in metrics},
        public_key=run_dir / (ledger_mod.KEY_NAME + ".pub"),
        delta=delta,
    )
    for fmt, writer_name in (
        ("json", "write_json"),
        ("md", "write_markdown"),
        ("html", "write_html"),
    ):
        writer = getattr(report_mod, writer_name, None)
        if writer is None:
            continue
        path = run_dir / f"report.{fmt}"
        try:
            writer(report, path)
        except ImportError:  # a renderer not available in this install
            continue
        out[fmt] = str(path)
    return out


__all__ = ["RunResult", "load_data", "run_simulation"]
