"""``Federation``: secure aggregation + DP + budget policy + signed ledger + report for a team's
own model, data and training loop.

Two ways to drive it, as Opacus and Flower users expect:

- a round loop you write (``for rnd in fed.rounds(state): … rnd.submit(client, update) …
  state = rnd.finish()``), where ``update`` is a mapping of named tensors (the change of your
  trainable parameters, numpy or torch);
- ``fed.run(trainer, clients)`` with a :class:`Trainer` (``train(state, data, ctx)`` returns the
  update; optional ``evaluate(state)``).

Both go through the same orchestrator as ``securefl simulate`` (:mod:`securefl.fl.orchestrator`):
the budget is checked and the projected round recorded before the cohort is drawn, the
privacy mechanism adds the noise whose event the ledger records, and the run ends with a
report. Everything a client does — clipping (client-level DP), DP-SGD (example-level DP),
encoding and masking — happens in ``submit`` / ``make_private`` on the client's side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from securefl.api.specs import (
    Aggregation,
    LocalDPSGD,
    Poisson,
    Privacy,
    Sampling,
    SecAggPlus,
)
from securefl.errors import ConfigurationError
from securefl.fl.client import ClientUpdate, clip_l2
from securefl.fl.config import RunConfig, from_mapping
from securefl.fl.orchestrator import ModelInfo, Orchestrator, RoundPlan, RunResult
from securefl.tensors import TensorLayout


@dataclass(frozen=True)
class TrainContext:
    """What a client's training step may use: where it is, and the DP-SGD wrapper."""

    round_index: int
    client: int
    seed: int  # for data order only (never noise: that comes from a CSPRNG)
    _round: Round

    def make_private(self, module: Any, optimizer: Any, data_loader: Any) -> Any:
        """Opacus DP-SGD objects for this client (``LocalDPSGD`` federations only)."""
        return self._round.make_private(self.client, module, optimizer, data_loader)


@runtime_checkable
class Trainer(Protocol):
    """A team's local training: from the global state and one client's data, the update."""

    def train(
        self, state: Mapping[str, Any], data: Any, ctx: TrainContext
    ) -> Mapping[str, Any]: ...


class Round:
    """One open round: its cohort, the global state to start from, and ``submit``/``finish``."""

    def __init__(self, fed: Federation, plan: RoundPlan) -> None:
        self._fed = fed
        self._plan = plan
        self._updates: dict[int, ClientUpdate] = {}
        self._sessions: dict[int, Any] = {}
        self._t0 = time.perf_counter()
        self.index = plan.index
        self.cohort: tuple[int, ...] = plan.cohort
        self.state: dict[str, Any] = fed.layout.unflatten(plan.global_flat)
        #: This round's client-level clip (adaptive clipping moves it; else the fixed clip).
        self.clip: float | None = (
            plan.clip
            if plan.clip is not None
            else fed.cfg.clip
            if fed.cfg.client_level_dp
            else None
        )

    def make_private(self, client: int, module: Any, optimizer: Any, data_loader: Any) -> Any:
        """Wrap a client's torch objects for DP-SGD (Opacus); returns the session whose
        ``module``, ``optimizer`` and ``data_loader`` the training loop must use."""
        privacy = self._fed.privacy
        if not isinstance(privacy, LocalDPSGD):
            raise ConfigurationError(
                "make_private needs privacy=LocalDPSGD(...)", parameter="privacy"
            )
        self._check_member(client)
        from securefl.dp.local import make_private

        orch = self._fed._orchestrator
        assert orch is not None
        z = orch.noise_multiplier
        assert z is not None
        session = make_private(
            module, optimizer, data_loader, noise_multiplier=z, max_grad_norm=privacy.max_grad_norm
        )
        self._sessions[client] = session
        return session

    def _check_member(self, client: int) -> None:
        if client not in self.cohort:
            raise ConfigurationError(
                f"client {client} is not in round {self.index}'s cohort", parameter="client"
            )

    def submit(
        self,
        client: int,
        update: Mapping[str, Any],
        *,
        num_examples: int = 1,
        train_loss: float = math.nan,
    ) -> None:
        """Hand in one client's update (named tensors: new − global of the trainable state).

        Runs on the client's side of the protocol: under client-level DP the update is clipped
        to L2 norm ``clip`` here, before it is encoded; under ``LocalDPSGD`` the DP-SGD steps
        the client performed are checked against the accounted event.
        """
        self._check_member(client)
        if client in self._updates:
            raise ConfigurationError(f"client {client} already submitted", parameter="client")
        fed = self._fed
        flat = fed.layout.flatten(update)
        privacy = fed.privacy
        if isinstance(privacy, LocalDPSGD):
            self._check_dp_sgd(client, num_examples)
        indicator: int | None = None
        if fed.cfg.client_level_dp:  # this round's clip (adaptive clipping announces it)
            clip = self._plan.clip if self._plan.clip is not None else fed.cfg.clip
            flat, norm = clip_l2(flat, clip)
            indicator = int(norm <= clip)
        self._updates[client] = ClientUpdate(
            client_id=client,
            round_index=self.index,
            layout_digest=fed.layout.digest(),
            delta=flat,
            num_examples=int(num_examples),
            train_loss=float(train_loss),
            local_steps=0,
            clip_indicator=indicator,
        )

    def _check_dp_sgd(self, client: int, num_examples: int) -> None:
        from securefl.fl.local_dp import client_event

        session = self._sessions.get(client)
        if session is None:
            raise ConfigurationError(
                f"client {client} trained without round.make_private under LocalDPSGD",
                parameter="privacy",
            )
        cfg = self._fed.cfg
        orch = self._fed._orchestrator
        assert orch is not None and orch.noise_multiplier is not None
        declared = client_event(
            num_examples, cfg.local_epochs, cfg.batch_size, orch.noise_multiplier
        )
        performed = session.event()
        if performed != declared:  # every declared step, an empty batch's too
            raise ConfigurationError(
                f"client {client} performed DP-SGD {performed.to_dict()} but the accounted "
                f"event is {declared.to_dict()}: train {cfg.local_epochs} epoch(s) over the "
                "session's data_loader",
                parameter="privacy",
            )

    def finish(self) -> dict[str, Any]:
        """Aggregate what was submitted (clients that submitted nothing count as dropped),
        step the global state, record the round; returns the new global state."""
        orch = self._fed._orchestrator
        assert orch is not None
        self.record = orch.complete_round(
            self._plan, self._updates, train_s=time.perf_counter() - self._t0
        )
        return self._fed.layout.unflatten(orch.global_flat)


class Federation:
    """A federated run with secure aggregation, DP, a budget policy and a signed ledger.

    ``population`` is the number of clients (ids 0..population−1); ``client_sizes`` their
    example counts (needed for ``LocalDPSGD`` accounting and δ ≤ 1/population checks, and for
    example-weighted FedAvg without client-level DP). ``policy`` is a budget policy file
    (``audits/policies/*.toml``); without one the privacy target is the budget.
    ``server_optimizer`` (``fedavg`` | ``fedavgm`` | ``fedadam`` | ``fedyogi``, learning rate
    ``server_lr``) steps from the released, already noised mean: post-processing, no privacy
    cost (Reddi et al. 2021); its memory is checkpointed with the model.
    ``audit_canaries = m`` runs the one-run canary audit of the trained model
    (:mod:`securefl.fl.canary_audit`): canary clients join the cohorts (``Round.cohort`` lists
    only your clients) and the ledger records the ε lower bound at the end.
    """

    def __init__(
        self,
        *,
        population: int,
        rounds: int,
        run_dir: str | Path,
        aggregation: Aggregation | None = None,
        privacy: Privacy | None = None,
        sampling: Sampling | None = None,
        policy: str | Path | None = None,
        client_sizes: Sequence[int] | None = None,
        server_lr: float | None = None,
        server_optimizer: str = "fedavg",
        server_momentum: float = 0.9,
        server_lr_schedule: str = "constant",
        server_lr_warmup: int = 0,
        server_lr_final_ratio: float = 0.0,
        simulated_dropout_rate: float = 0.0,
        eval_every: int = 1,
        seed: int = 0,
        name: str = "federation",
        model_name: str = "user model",
        allow_large_delta: bool = False,
        audit_canaries: int = 0,
    ) -> None:
        self.aggregation = aggregation if aggregation is not None else SecAggPlus()
        if privacy is None:
            raise ConfigurationError(
                "choose a privacy mechanism explicitly (e.g. DistributedDP(clip=…, epsilon=…) "
                "or NoDP())",
                parameter="privacy",
            )
        self.privacy = privacy
        self.sampling = sampling if sampling is not None else Poisson(1.0)
        self.client_sizes = tuple(int(n) for n in client_sizes) if client_sizes else ()
        if self.client_sizes and len(self.client_sizes) != population:
            raise ConfigurationError(
                f"{len(self.client_sizes)} sizes for a population of {population}",
                parameter="client_sizes",
            )
        if isinstance(privacy, LocalDPSGD) and not self.client_sizes:
            raise ConfigurationError(
                "LocalDPSGD needs client_sizes (examples per client) for its accounting",
                parameter="client_sizes",
            )
        fields: dict[str, Any] = {
            "name": name,
            "seed": seed,
            "model": model_name,
            "data": "user",
            "n_clients": population,
            "rounds": rounds,
            "out": str(run_dir),
            "dropout_rate": simulated_dropout_rate,
            "eval_every": eval_every,
            "server_lr": server_lr,
            "server_optimizer": server_optimizer,
            "server_momentum": server_momentum,
            "server_lr_schedule": server_lr_schedule,
            "server_lr_warmup": server_lr_warmup,
            "server_lr_final_ratio": server_lr_final_ratio,
            "policy": None if policy is None else str(policy),
            "allow_large_delta": allow_large_delta,
            "audit_canaries": audit_canaries,
            **self.aggregation.fields(),
            **self.privacy.fields(),
            **self.sampling.fields(),
        }
        self.cfg: RunConfig = from_mapping({k: v for k, v in fields.items() if v is not None})
        self.model_name = model_name
        self.layout: TensorLayout
        self._orchestrator: Orchestrator | None = None
        self.result: RunResult | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out or ".")

    def rounds(
        self,
        initial_state: Mapping[str, Any],
        *,
        evaluate: Any = None,
        resume: bool = True,
    ) -> Iterator[Round]:
        """Yield one :class:`Round` after another until the planned rounds are done or the
        policy refuses the next; the report is written when the loop ends.

        ``initial_state``: the trainable tensors every party starts from (e.g. the LoRA
        parameters); ``evaluate(state) -> {"accuracy": …, "loss": …}`` is optional.
        """
        self.layout = TensorLayout.from_tensors(initial_state)
        initial = self.layout.flatten(initial_state)
        layout = self.layout

        def score(flat: np.ndarray) -> Mapping[str, float]:
            return dict(evaluate(layout.unflatten(flat)))

        info = ModelInfo(
            layout=layout,
            initial=initial,
            provenance={"name": self.model_name, "trainable_parameters": layout.size},
        )
        with Orchestrator(
            self.cfg,
            info,
            client_sizes=self.client_sizes,
            evaluate=score if evaluate is not None else None,
            resume=resume,
        ) as orch:
            self._orchestrator = orch
            while (plan := orch.next_round()) is not None:
                rnd = Round(self, plan)
                yield rnd
                if orch.next_index == plan.index:  # the loop body did not finish it
                    rnd.finish()
            self.result = orch.finish()
        self._orchestrator = None

    def run(
        self, trainer: Trainer, clients: Sequence[Any], initial_state: Mapping[str, Any]
    ) -> RunResult:
        """Every round: each cohort client runs ``trainer.train`` on its data; returns the
        run's result (ε, metrics, report paths)."""
        if len(clients) != self.cfg.n_clients:
            raise ConfigurationError(
                f"{len(clients)} client datasets for a population of {self.cfg.n_clients}",
                parameter="clients",
            )
        evaluate = getattr(trainer, "evaluate", None)
        # A trainer that trains a whole cohort in one pass (securefl.train.BatchedTrainer)
        # streams (client, update) pairs; DP-SGD needs each client's own make_private session.
        cohort_fn = getattr(trainer, "iter_cohort", None)
        if isinstance(self.privacy, LocalDPSGD):
            cohort_fn = None
        for rnd in self.rounds(initial_state, evaluate=evaluate):
            ctxs = [TrainContext(rnd.index, c, self.cfg.seed, rnd) for c in rnd.cohort]
            pairs: Iterable[tuple[int, Mapping[str, Any]]]
            if cohort_fn is not None and ctxs:
                pairs = cohort_fn(rnd.state, [clients[c.client] for c in ctxs], ctxs)
            else:
                pairs = ((c.client, trainer.train(rnd.state, clients[c.client], c)) for c in ctxs)
            for client, update in pairs:
                size = len(clients[client]) if hasattr(clients[client], "__len__") else 1
                rnd.submit(client, update, num_examples=size)
            rnd.finish()
        assert self.result is not None
        return self.result


__all__ = ["Federation", "Round", "TrainContext", "Trainer"]
