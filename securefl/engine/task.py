"""What is being aggregated: the pluggable client step and server step of an engine run.

An :class:`EngineTask` supplies the initial global state (opaque bytes), the tensor layout of
every client update, the client step ``update(global_state, node_config, run_config)`` → named
tensors, and the server step ``apply(global_state, sums, n)`` → next global state. The engine
only flattens, encodes, masks and sums; the task never sees another client's update.

:class:`SyntheticTask` (the default) is a deterministic toy whose updates are multiples of 2^−8
in [−1, 1], so fixed-point encoding with ≥ 8 fractional bits is exact and a test can recompute
the expected sum bit for bit. It is *not* secret data: do not use it to judge privacy.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError
from securefl.tensors import TensorLayout

Scalar = int | float | str | bool
DEFAULT_TASK = "securefl.engine.task:SyntheticTask"


@runtime_checkable
class EngineTask(Protocol):
    """Client step and server step of a federated computation (sans-I/O, no clock)."""

    def initial_state(self, run_config: Mapping[str, Scalar]) -> bytes: ...

    def layout(self, run_config: Mapping[str, Scalar]) -> TensorLayout: ...

    def update(
        self,
        global_state: bytes,
        node_config: Mapping[str, Scalar],
        run_config: Mapping[str, Scalar],
    ) -> Mapping[str, npt.NDArray[Any]]: ...

    def apply(
        self,
        global_state: bytes,
        sums: Mapping[str, npt.NDArray[np.float64]],
        n: int,
        run_config: Mapping[str, Scalar],
    ) -> bytes: ...


def load_ref(ref: str, *, parameter: str) -> Any:
    """The object a ``"package.module:name"`` reference names (imported, not called).

    Errors are :class:`ConfigurationError` naming ``parameter`` (the config key it came from)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"{ref!r} must look like 'package.module:name'", parameter=parameter
        )
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {ref!r}: {exc}", parameter=parameter) from None


def load_factory(ref: str, *, parameter: str) -> Callable[..., Any]:
    """:func:`load_ref` of something callable (a class or a factory function)."""
    obj = load_ref(ref, parameter=parameter)
    if not callable(obj):
        raise ConfigurationError(f"{ref!r} is not callable", parameter=parameter)
    factory: Callable[..., Any] = obj
    return factory


def load_task(ref: str) -> EngineTask:
    """Instantiate ``"module:Class"`` (no arguments); it must implement :class:`EngineTask`."""
    factory = load_factory(ref, parameter="task")
    try:
        obj = factory()
    except TypeError as exc:
        raise ConfigurationError(f"cannot load {ref!r}: {exc}", parameter="task") from None
    if not isinstance(obj, EngineTask):
        raise ConfigurationError(f"{ref!r} does not implement EngineTask", parameter="task")
    return obj


def _int(config: Mapping[str, Scalar], key: str, default: int, lo: int, hi: int) -> int:
    value = config.get(key, default)
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigurationError(f"must be an int in {lo}..{hi}", parameter=key)
    return value


class SyntheticTask:
    """Deterministic toy updates: ``layer.weight`` (rows × 8) and ``layer.bias`` (8,).

    Run config: ``synthetic-rows`` (default 8). Node config: ``partition-id`` (default 0).
    The global state is the float64 vector of the layout; ``apply`` adds the mean update.
    """

    def layout(self, run_config: Mapping[str, Scalar]) -> TensorLayout:
        rows = _int(run_config, "synthetic-rows", 8, 1, 1 << 20)
        return TensorLayout.from_tensors(
            {"layer.weight": np.zeros((rows, 8)), "layer.bias": np.zeros(8)}
        )

    def initial_state(self, run_config: Mapping[str, Scalar]) -> bytes:
        return np.zeros(self.layout(run_config).size, dtype="<f8").tobytes()

    def update(
        self,
        global_state: bytes,
        node_config: Mapping[str, Scalar],
        run_config: Mapping[str, Scalar],
    ) -> dict[str, npt.NDArray[Any]]:
        layout = self.layout(run_config)
        if len(global_state) != 8 * layout.size:
            raise ConfigurationError("global state has the wrong size", parameter="global")
        part = _int(node_config, "partition-id", 0, 0, 1 << 31)
        digest = hashlib.sha256(
            b"securefl/engine/synthetic\x00" + part.to_bytes(4, "little") + global_state
        ).digest()
        # toy data, not a secret: a seeded numpy generator is fine here
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        flat = rng.integers(-256, 257, size=layout.size).astype(np.float64) / 256.0
        return layout.unflatten(flat)

    def apply(
        self,
        global_state: bytes,
        sums: Mapping[str, npt.NDArray[np.float64]],
        n: int,
        run_config: Mapping[str, Scalar],
    ) -> bytes:
        layout = self.layout(run_config)
        current = np.frombuffer(global_state, dtype="<f8")
        mean = layout.flatten(sums) / max(n, 1)
        return (current + mean).astype("<f8").tobytes()
