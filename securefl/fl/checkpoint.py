"""Atomic per-round checkpoints: a run killed mid-way resumes from its last finished round.

One JSON file replaced atomically (write temp, fsync, ``os.replace``, fsync the directory), so a
reader sees either the previous or the new checkpoint, never a torn one. It holds everything
the next round depends on: the global adapter vector (with its SHA-256), the round index, the
accountant state (the list of DP events), the config digest, and the ledger payload of the
round it closes (so a crash between checkpoint and ledger append can be reconciled).
Data order needs no saved RNG state: every round derives its generator from (seed, round).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from securefl.fl.errors import ResumeError
from securefl.fl.server_optim import ServerState
from securefl.tensors import FloatVector

CHECKPOINT_NAME = "checkpoint.json"
FORMAT = "securefl.fl.checkpoint.v1"


@dataclass(frozen=True)
class Checkpoint:
    rounds_done: int  # number of finished rounds (the next round index)
    global_flat: FloatVector
    layout_digest: str
    config_digest: str
    run_id: str
    noise_multiplier: float | None
    events: list[dict[str, Any]]
    last_round_entry: dict[str, Any] | None  # ledger payload of round rounds_done-1
    rng: dict[str, Any]
    metrics: list[dict[str, Any]]
    server_state: ServerState | None = None  # the server optimiser's memory (absent: restart)
    # Public state of the release mechanism (adaptive clip; DP-FTRL tree position and the
    # SHA-256 of its secret state kept in the key directory): securefl.fl.mechanisms.
    mechanism_state: dict[str, Any] | None = None

    def to_json(self) -> str:
        raw = np.ascontiguousarray(self.global_flat, dtype="<f8").tobytes()
        return json.dumps(
            {
                "format": FORMAT,
                "rounds_done": self.rounds_done,
                "global_flat_b64": base64.b64encode(raw).decode(),
                "global_flat_sha256": hashlib.sha256(raw).hexdigest(),
                "layout_digest": self.layout_digest,
                "config_digest": self.config_digest,
                "run_id": self.run_id,
                "noise_multiplier": self.noise_multiplier,
                "events": self.events,
                "last_round_entry": self.last_round_entry,
                "rng": self.rng,
                "metrics": self.metrics,
                **(
                    {} if self.server_state is None else {"server_state": _state(self.server_state)}
                ),
                **(
                    {}
                    if self.mechanism_state is None
                    else {"mechanism_state": self.mechanism_state}
                ),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse and type-check a checkpoint; anything damaged raises :class:`ResumeError`."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ResumeError(f"checkpoint is a JSON {type(d).__name__}, not an object")
            if d.get("format") != FORMAT:
                raise ResumeError(f"unknown checkpoint format {d.get('format')!r}")
            raw = base64.b64decode(_typed(d, "global_flat_b64", str), validate=True)
            if hashlib.sha256(raw).hexdigest() != d["global_flat_sha256"]:
                raise ResumeError("checkpoint global state does not match its SHA-256")
            flat = np.frombuffer(raw, dtype="<f8").astype(np.float64)
            rounds_done = _typed(d, "rounds_done", int)
            if rounds_done < 0:
                raise ResumeError(f"rounds_done {rounds_done} is negative")
            noise = d["noise_multiplier"]
            if noise is not None and not (
                type(noise) in (int, float) and math.isfinite(noise) and noise >= 0
            ):
                raise ResumeError("noise_multiplier must be null or a finite number ≥ 0")
            last = d["last_round_entry"]
            if last is not None and not isinstance(last, dict):
                raise ResumeError("last_round_entry must be null or an object")
            mech = d.get("mechanism_state")
            if mech is not None and not isinstance(mech, dict):
                raise ResumeError("mechanism_state must be null or an object")
            return cls(
                rounds_done=rounds_done,
                global_flat=flat,
                layout_digest=_typed(d, "layout_digest", str),
                config_digest=_typed(d, "config_digest", str),
                run_id=_typed(d, "run_id", str),
                noise_multiplier=noise,
                events=_objects(d, "events"),
                last_round_entry=last,
                rng=_typed(d, "rng", dict),
                metrics=_objects(d, "metrics"),
                server_state=_read_state(d.get("server_state"), len(flat)),
                mechanism_state=mech,
            )
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser's limit
            raise ResumeError(f"damaged checkpoint ({type(exc).__name__}: {exc})") from None


def _vec(x: FloatVector | None) -> str | None:
    return (
        None if x is None else base64.b64encode(np.ascontiguousarray(x, "<f8").tobytes()).decode()
    )


def _state(state: ServerState) -> dict[str, Any]:
    return {"step": state.step, "m_b64": _vec(state.m), "v_b64": _vec(state.v)}


def _read_state(raw: Any, dimension: int) -> ServerState | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ResumeError("server_state must be an object")
    step = _typed(raw, "step", int)
    vectors: list[FloatVector | None] = []
    for key in ("m_b64", "v_b64"):
        text = raw.get(key)
        if text is None:
            vectors.append(None)
            continue
        v = np.frombuffer(base64.b64decode(_typed(raw, key, str), validate=True), "<f8")
        if v.shape != (dimension,) or not np.all(np.isfinite(v)):
            raise ResumeError(f"server_state {key} must be {dimension} finite numbers")
        vectors.append(v.astype(np.float64))
    if step < 0:
        raise ResumeError("server_state step is negative")
    return ServerState(step, vectors[0], vectors[1])


def _typed(d: dict[str, Any], key: str, kind: type) -> Any:
    value = d[key]
    if type(value) is not kind:
        raise ResumeError(f"checkpoint field {key!r} must be {kind.__name__}")
    return value


def _objects(d: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = _typed(d, key, list)
    if not all(isinstance(v, dict) for v in value):
        raise ResumeError(f"checkpoint field {key!r} must be a list of objects")
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(run_dir: Path, ckpt: Checkpoint) -> None:
    atomic_write_text(run_dir / CHECKPOINT_NAME, ckpt.to_json())


def load(run_dir: Path) -> Checkpoint | None:
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return Checkpoint.from_json(path.read_text(encoding="utf-8"))
