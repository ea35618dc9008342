"""Key holders are slow-ish to make (context + keys): one per preset for the whole he suite."""

from __future__ import annotations

import pytest

from securefl.he import KeyHolder


@pytest.fixture(scope="session")
def holders() -> dict[str, KeyHolder]:
    # server weights in the tests go up to 2.0: the key holder sizes rounding for that cap
    return {
        name: KeyHolder(name, max_server_weight=2.0) for name in ("fast", "weighted", "precise")
    }
