"""No hidden state: importing securefl changes no environment variable, simulated rounds leave
no module-level container larger than before, and the graph cache is bounded and read-only."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from securefl.crypto import keys
from securefl.errors import ConfigurationError
from securefl.secagg import (
    ClientPolicy,
    DropoutPlan,
    SimulatedIdentities,
    run_round,
    simulation_config,
)
from securefl.secagg.graph import GRAPH_CACHE_SIZE, graph_cache_info, neighbours
from securefl.vocabulary import ThreatModel

# Third-party packages that change os.environ on their own import (flwr sets GRPC_VERBOSITY)
# are imported first: the test is about securefl's code, which must not add to that.
_IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
for dep in ("flwr.app", "flwr.clientapp", "flwr.serverapp"):
    try:
        importlib.import_module(dep)
    except ImportError:
        pass
before = dict(os.environ)
import securefl
failed = []
for info in pkgutil.walk_packages(securefl.__path__, "securefl."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional extra that is not installed
        failed.append(info.name)
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print(json.dumps({"changed": changed, "failed": failed}))
"""

#: These tests are about hidden state, not threat models: an explicit semi-honest opt-in.
_SH = ThreatModel.SEMI_HONEST
_WEAK = ClientPolicy(threat_model=_SH)


def test_importing_every_module_leaves_os_environ_unchanged() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_"))
    }
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["changed"] == []


def test_hf_loading_env_is_scoped_and_keeps_the_callers_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from securefl.fl.model import HF_LOADING_ENV, hf_loading_env

    for k in HF_LOADING_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the caller's explicit choice
    with hf_loading_env():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert "HF_HUB_OFFLINE" not in os.environ
    assert "TRANSFORMERS_OFFLINE" not in os.environ
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def _module_containers() -> dict[str, int]:
    """Size of every module-level dict/list/set in loaded securefl modules."""
    sizes: dict[str, int] = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("securefl") or not isinstance(mod, ModuleType):
            continue
        for attr, value in vars(mod).items():
            if isinstance(value, dict | list | set | bytearray) and not attr.startswith("__"):
                sizes[f"{name}.{attr}"] = len(value)
    return sizes


def _one_round(identities: SimulatedIdentities, round_index: int, degree: int | None) -> None:
    ids = list(range(1, 9))
    cfg = simulation_config(
        ids,
        threshold=4,
        bits=16,
        dimension=6,
        degree=degree,
        round_index=round_index,
        identities=identities,
        threat_model=ThreatModel.SEMI_HONEST,  # not a threat-model test: explicit opt-in
    )
    inputs = {u: np.full(6, u, dtype=np.uint32) for u in ids}
    res = run_round(
        inputs,
        cfg,
        dropouts=DropoutPlan(masked_input=frozenset({3})),
        identities=identities,
        policy=_WEAK,
    )
    assert res.total.tolist() == [sum(ids) - 3] * 6


def test_repeated_rounds_grow_no_module_level_container() -> None:
    for pkg in ("securefl.secagg", "securefl.crypto", "securefl.encoding"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            importlib.import_module(info.name)
    identities = SimulatedIdentities()
    _one_round(identities, 0, None)
    _one_round(identities, 1, 6)
    before = _module_containers()
    for r in range(2, 14):
        _one_round(SimulatedIdentities(), r, 6 if r % 2 else None)
    after = _module_containers()
    grown = {k: (before.get(k), n) for k, n in after.items() if n > before.get(k, 0)}
    assert grown == {}
    assert graph_cache_info().currsize <= GRAPH_CACHE_SIZE
    assert len(identities) == 8  # the caller's store holds exactly its population


def test_graph_cache_is_bounded_and_read_only() -> None:
    ids = list(range(1, 13))
    graphs: list[Mapping[int, tuple[int, ...]]] = []
    for r in range(3 * GRAPH_CACHE_SIZE):
        cfg = simulation_config(
            ids, threshold=3, bits=8, dimension=1, degree=4, round_index=r, threat_model=_SH
        )
        graphs.append(neighbours(cfg))
        assert neighbours(cfg) is graphs[-1]  # memoised
        assert graph_cache_info().currsize <= GRAPH_CACHE_SIZE
    with pytest.raises(TypeError):
        graphs[0][1] = ()  # type: ignore[index]


def test_a_round_needs_the_callers_identities() -> None:
    ids = [1, 2, 3]
    cfg = simulation_config(ids, threshold=2, bits=8, dimension=2, threat_model=_SH)
    inputs = {u: np.zeros(2, dtype=np.uint32) for u in ids}
    with pytest.raises(ConfigurationError) as err:
        run_round(inputs, cfg, policy=_WEAK)
    assert err.value.parameter == "identities"
    wrong = SimulatedIdentities.generate(ids)  # keys that are not the config's
    with pytest.raises(ConfigurationError, match="matching the config"):
        run_round(inputs, cfg, identities=wrong, policy=_WEAK)


def test_simulated_identities_are_the_callers_store() -> None:
    given: dict[int, Any] = {1: keys.generate_ed25519()}
    store = SimulatedIdentities(given)
    cfg = simulation_config(
        [1, 2, 3], threshold=2, bits=8, dimension=1, identities=store, threat_model=_SH
    )
    assert sorted(store) == [1, 2, 3]
    assert store.public_keys([1, 2, 3]) == dict(zip(cfg.client_ids, cfg.identity_keys, strict=True))
    assert store[1] is given[1]
    with pytest.raises(ConfigurationError, match="no identity key"):
        simulation_config(
            [1, 4, 5], threshold=2, bits=8, dimension=1, identities=given, threat_model=_SH
        )
