"""Named tensors ↔ one flat float64 vector, with a layout both sides can agree on.

Every aggregation backend (masking, CKKS, plaintext) works on one flat vector; clients and the
server must agree on how a dict of named tensors (LoRA adapters, full layers) maps onto it.
The layout is sorted by name so it does not depend on dict order, and its digest is bound into
session ids so that two parties with different layouts cannot silently mix coordinates.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError

FloatVector = npt.NDArray[np.float64]
#: Largest number of values a layout may describe (sizes stay exact in int64 arithmetic).
MAX_LAYOUT_SIZE = 2**62


def _is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch")


def _to_numpy(name: str, value: Any) -> npt.NDArray[Any]:
    if _is_torch(value):
        value = value.detach().to("cpu").double().numpy()
    if not isinstance(value, np.ndarray):
        raise ConfigurationError(
            f"expected a numpy array or torch tensor, got {type(value).__name__}",
            parameter=name,
        )
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise ConfigurationError(f"unsupported dtype {value.dtype}", parameter=name)
    return value


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and container kind of one tensor in a layout."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "numpy" or "torch"

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # Python ints: no int64 wrap-around


@dataclass(frozen=True)
class TensorLayout:
    """The agreed order and shapes of named tensors inside a flat vector."""

    specs: tuple[TensorSpec, ...]

    @classmethod
    def from_tensors(cls, named: Mapping[str, Any]) -> TensorLayout:
        if not named:
            raise ConfigurationError("no tensors given", parameter="named")
        specs = []
        for name in sorted(named):
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    "tensor names must be non-empty strings", parameter="named"
                )
            value = named[name]
            kind = "torch" if _is_torch(value) else "numpy"
            dtype = str(value.dtype).removeprefix("torch.")
            shape = tuple(int(s) for s in value.shape)
            if math.prod(shape) == 0:
                # a zero-size tensor has no coordinates to aggregate; peers refuse it (from_json)
                raise ConfigurationError("zero-size tensor", parameter=name)
            specs.append(TensorSpec(name, shape, dtype, kind))
        return cls(tuple(specs))

    @property
    def size(self) -> int:
        return sum(spec.size for spec in self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def offsets(self) -> list[tuple[TensorSpec, int, int]]:
        out, start = [], 0
        for spec in self.specs:
            out.append((spec, start, start + spec.size))
            start += spec.size
        return out

    def to_json(self) -> str:
        return json.dumps(
            [[s.name, list(s.shape), s.dtype, s.kind] for s in self.specs], separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str) -> TensorLayout:
        """Parse a peer's layout strictly: the canonical form :meth:`to_json` writes.

        Rows ``[name, shape, dtype, kind]``: names non-empty, unique and sorted; shape entries
        ints ≥ 1 (no zero-size tensor, no negative or float dimension); total size ≤ 2^62.
        Every failure (deep nesting, 1e400, huge ints included) is a ``ConfigurationError``.
        """
        if not isinstance(text, str):
            raise ConfigurationError("layout JSON must be a str", parameter="layout")
        try:
            rows = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested input
            raise ConfigurationError(
                f"invalid layout JSON ({type(exc).__name__})", parameter="layout"
            ) from None
        if not isinstance(rows, list) or not rows:
            raise ConfigurationError("must be a non-empty JSON list of tensors", parameter="layout")
        specs: list[TensorSpec] = []
        total = 0
        for i, row in enumerate(rows):
            where = f"layout[{i}]"
            if not isinstance(row, list) or len(row) != 4:
                raise ConfigurationError("must be [name, shape, dtype, kind]", parameter=where)
            name, shape, dtype, kind = row
            if not isinstance(name, str) or not name:
                raise ConfigurationError("name must be a non-empty string", parameter=where)
            if specs and name <= specs[-1].name:
                problem = "duplicate tensor name" if name == specs[-1].name else "names not sorted"
                raise ConfigurationError(f"{problem} ({name!r})", parameter=where)
            if not isinstance(shape, list) or not all(
                type(x) is int and 1 <= x <= MAX_LAYOUT_SIZE for x in shape
            ):
                raise ConfigurationError(
                    "shape must be a list of ints ≥ 1 (no zero-size or negative dimension)",
                    parameter=where,
                )
            if not isinstance(dtype, str) or not isinstance(kind, str):
                raise ConfigurationError("dtype and kind must be strings", parameter=where)
            size = 1
            for x in shape:  # stop as soon as it is too big (no huge products computed)
                size *= x
                if size > MAX_LAYOUT_SIZE:
                    break
            total += size
            if total > MAX_LAYOUT_SIZE:
                raise ConfigurationError(
                    f"layout holds more than 2^62 values (tensor {name!r})", parameter=where
                )
            specs.append(TensorSpec(name, tuple(shape), dtype, kind))
        return cls(tuple(specs))

    def digest(self) -> bytes:
        """SHA-256 over names and shapes (not container kind): bound into session ids."""
        canon = json.dumps([[s.name, list(s.shape)] for s in self.specs], separators=(",", ":"))
        return hashlib.sha256(b"securefl/layout/v1\x00" + canon.encode()).digest()

    def flatten(self, named: Mapping[str, Any]) -> FloatVector:
        """Concatenate tensors in layout order; reject missing/extra names, shapes, NaN/Inf."""
        if set(named) != set(self.names):
            missing = sorted(set(self.names) - set(named))
            extra = sorted(set(named) - set(self.names))
            raise ConfigurationError(
                f"tensor names differ from the layout (missing {missing}, unexpected {extra})",
                parameter="named",
            )
        flat = np.empty(self.size, dtype=np.float64)
        for spec, start, stop in self.offsets():
            array = _to_numpy(spec.name, named[spec.name])
            if tuple(array.shape) != spec.shape:
                raise ConfigurationError(
                    f"shape {tuple(array.shape)} differs from layout shape {spec.shape}",
                    parameter=spec.name,
                )
            flat[start:stop] = array.reshape(-1)
        if not np.all(np.isfinite(flat)):
            bad = [
                spec.name
                for spec, start, stop in self.offsets()
                if not np.all(np.isfinite(flat[start:stop]))
            ]
            raise ConfigurationError("contains NaN or infinite values", parameter=",".join(bad))
        return flat

    def unflatten(self, flat: npt.NDArray[Any]) -> dict[str, Any]:
        """Split a flat vector back into named tensors of the original kind and dtype."""
        if flat.ndim != 1 or flat.shape[0] != self.size:
            raise ConfigurationError(
                f"flat vector has shape {flat.shape}, layout needs ({self.size},)",
                parameter="flat",
            )
        out: dict[str, Any] = {}
        for spec, start, stop in self.offsets():
            part = np.asarray(flat[start:stop]).reshape(spec.shape)
            if spec.kind == "torch":
                import torch

                out[spec.name] = torch.as_tensor(part.astype(np.float64)).to(
                    getattr(torch, spec.dtype)
                )
            else:
                out[spec.name] = part.astype(spec.dtype)
        return out


def flatten(named: Mapping[str, Any]) -> tuple[FloatVector, TensorLayout]:
    """Flatten named tensors; returns the flat float64 vector and its layout."""
    layout = TensorLayout.from_tensors(named)
    return layout.flatten(named), layout
