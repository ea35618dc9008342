"""Federated LoRA fine-tuning: config, data, model, client/server steps, in-process engine.

Public entry points: :class:`securefl.fl.config.RunConfig` and
:func:`securefl.fl.run.run_simulation` (imported lazily: torch/transformers are heavy).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunConfig", "RunResult", "run_simulation"]


def __getattr__(name: str) -> Any:
    if name == "RunConfig":
        from securefl.fl.config import RunConfig

        return RunConfig
    if name in ("RunResult", "run_simulation"):
        from securefl.fl import run

        return getattr(run, name)
    raise AttributeError(name)
