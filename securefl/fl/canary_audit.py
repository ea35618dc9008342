"""The one-run canary audit run inside a federated job (issue 14: audit the model that was
trained, not a side demo).

``audit_canaries = m`` adds the canary clients of :class:`securefl.audit.canaries.CanaryDesign`
to the population: each of the ``m`` canaries is included with a secret fair coin, the
included ones become clients with ids ``n_real, n_real + 1, …`` and are sampled like any other
client (same secret coins, same rate), and each sends ``C · u_i`` — the largest update
client-level DP admits — through the same aggregation and DP path as the real clients. At the
end the released model delta (final − initial global state) scores every canary and the
one-run test (Steinke et al. 2023) turns the guesses into an ε lower bound, recorded in the
ledger beside the design's public facts and the highest bound this design could show.

Who sees what: the design (directions seed and inclusion bits) is the auditor's secret and is
kept in the key directory beside the sampling secret, never in the run directory; the server
learns only which client ids took part in a round, as for every client (an id does not say
which canary direction it carries). Canary clients cost utility (they are random directions of
norm ``C`` added to the aggregate): run the audit on an audit run, not on the model you ship.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from securefl.audit.canaries import CanaryDesign
from securefl.audit.empirical import AuditResult
from securefl.errors import ConfigurationError
from securefl.fl.client import ClientUpdate
from securefl.fl.errors import ResumeError
from securefl.tensors import FloatVector

DESIGN_SUFFIX = ".canaries.json"


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _design_to_json(design: CanaryDesign) -> str:
    return json.dumps(
        {
            "version": 1,
            "dimension": design.dimension,
            "clip": design.clip,
            "seed": design.seed.hex(),
            "inclusion": "".join("1" if b else "0" for b in design.inclusion),
            "k_pos": design.k_pos,
            "k_neg": design.k_neg,
        }
    )


def _design_from_json(text: str, path: Path) -> CanaryDesign:
    try:
        raw = json.loads(text)
        bits = str(raw["inclusion"])
        if set(bits) - {"0", "1"}:
            raise ValueError("inclusion must be a string of 0/1")
        return CanaryDesign(
            dimension=int(raw["dimension"]),
            clip=float(raw["clip"]),
            seed=bytes.fromhex(str(raw["seed"])),
            inclusion=tuple(b == "1" for b in bits),
            k_pos=int(raw["k_pos"]),
            k_neg=int(raw["k_neg"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{path} is not a canary design: {exc}", parameter="audit_canaries"
        ) from exc


@dataclass(frozen=True)
class CanaryAudit:
    """A run's canary design and the client ids its included canaries use."""

    design: CanaryDesign
    first_id: int  # the real clients are 0 .. first_id − 1

    @classmethod
    def load_or_create(
        cls, key_dir: Path, run_id: str, m: int, dimension: int, clip: float, n_real: int
    ) -> CanaryAudit:
        """The run's design from the key directory (a resumed run keeps its secret coins),
        or a fresh one written there with mode 0600."""
        path = key_dir / f"{run_id}{DESIGN_SUFFIX}"
        if path.is_file():
            design = _design_from_json(path.read_text("utf-8"), path)
            if (design.m, design.dimension, design.clip) != (m, dimension, float(clip)):
                raise ResumeError(
                    f"{path} was made for {design.m} canaries of dimension {design.dimension}"
                    f" and norm {design.clip}, not {m}, {dimension}, {clip}"
                )
        else:
            design = CanaryDesign.create(m, dimension, clip)
            _write_secret(path, _design_to_json(design))
        return cls(design, n_real)

    @property
    def client_ids(self) -> tuple[int, ...]:
        return tuple(range(self.first_id, self.first_id + len(self.design.included_ids())))

    def is_canary(self, client: int) -> bool:
        return client >= self.first_id

    def updates(
        self,
        members: Iterable[int],
        *,
        round_index: int,
        layout_digest: bytes,
        num_examples: int,
    ) -> dict[int, ClientUpdate]:
        """What the sampled canary clients send this round (``C · u_i``, exactly at the clip
        norm, so client-side clipping leaves it unchanged)."""
        included = self.design.included_ids()
        out: dict[int, ClientUpdate] = {}
        for client in members:
            canary = included[client - self.first_id]
            out[client] = ClientUpdate(
                client_id=client,
                round_index=round_index,
                layout_digest=layout_digest,
                delta=self.design.canary_update(canary),
                num_examples=num_examples,
                train_loss=float("nan"),
                local_steps=0,
            )
        return out

    def audit(
        self,
        released: FloatVector,
        delta: float,
        *,
        epsilon: float | None,
        mechanism: str,
    ) -> AuditResult:
        finite = epsilon if epsilon is not None and np.isfinite(epsilon) else None
        return self.design.audit(
            np.asarray(released, dtype=np.float64),
            delta,
            epsilon_theoretical=finite,
            mechanism=mechanism,
        )

    def describe(self) -> dict[str, Any]:
        return {**self.design.describe(), "canary_client_ids_from": self.first_id}


__all__ = ["DESIGN_SUFFIX", "CanaryAudit"]
