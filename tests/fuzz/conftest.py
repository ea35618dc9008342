"""Fuzz targets are built once per session (HE key holders, a SecAgg round, an engine round)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from securefl.testing.fuzz import Target
from securefl.testing.fuzz_targets import BUILDERS


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Target]:
    built: dict[str, Target] = {}

    def get(name: str) -> Target:
        if name not in built:
            built[name] = BUILDERS[name](Path(tmp_path_factory.mktemp(name)))
        return built[name]

    return get
