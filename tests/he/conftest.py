"""Key holders are slow-ish to make (context + keys): one per preset for the whole he suite."""

from __future__ import annotations

import pytest

from securefl.he import KeyHolder


@pytest.fixture(scope="session")
def holders() -> dict[str, KeyHolder]:
    return {name: KeyHolder(name, workers=1) for name in ("fast", "weighted", "precise")}
