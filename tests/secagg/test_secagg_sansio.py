"""The protocol modules stay sans-I/O and use no non-cryptographic randomness: they import no
clock, socket, thread, async or ``random``/numpy-RNG facility (the driver may read a clock)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import securefl.secagg

PACKAGE = Path(securefl.secagg.__file__).parent
PROTOCOL_MODULES = [
    "client.py",
    "server.py",
    "messages.py",
    "graph.py",
    "config.py",
    "randomness.py",
    "transitions.py",
]
FORBIDDEN_MODULES = {"time", "socket", "threading", "asyncio", "random", "select", "datetime"}
FORBIDDEN_CALLS = {"default_rng", "RandomState", "randint", "sleep"}


@pytest.mark.parametrize("name", PROTOCOL_MODULES)
def test_no_io_clock_or_weak_randomness(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in FORBIDDEN_MODULES, (name, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] not in FORBIDDEN_MODULES, (name, node.module)
        elif isinstance(node, ast.Attribute):
            assert node.attr not in FORBIDDEN_CALLS, (name, node.attr)
        elif isinstance(node, ast.Name):
            assert node.id not in FORBIDDEN_CALLS, (name, node.id)
