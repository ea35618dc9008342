"""Each untyped escape the fuzz harness found in the engine records, identity files, checkpoints
and run configs, as a plain reproducer: only a typed SecureFLError may come out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securefl.engine.identity import load_identity, load_registry
from securefl.engine.wire import decode_config, decode_plan, field
from securefl.errors import ConfigurationError, MalformedMessageError, SecureFLError
from securefl.fl import config
from securefl.fl.checkpoint import Checkpoint
from securefl.fl.errors import ResumeError
from securefl.testing.fuzz_targets import _checkpoint_seed

DEEP = "[" * 50000 + "]" * 50000
PLAN = '{"bits":20,"clip":1.0,"frac_bits":16,"max_weight":1.0,"n_clients":4}'


def _config_doc() -> dict[str, Any]:
    from securefl.engine.wire import encode_config
    from securefl.testing.fuzz_targets import _secagg_round

    doc: dict[str, Any] = json.loads(encode_config(_secagg_round()[0]))
    return doc


@pytest.mark.parametrize(
    "make",
    [
        lambda doc: DEEP.encode(),
        lambda doc: b"[1, 2]",
        lambda doc: json.dumps({**doc, "threshold": "X"}).replace('"X"', "1e400").encode(),
        lambda doc: json.dumps({**doc, "client_ids": ["X"]}).replace('"X"', "-Infinity").encode(),
        lambda doc: json.dumps({**doc, "bits": "X"}).replace('"X"', "NaN").encode(),
    ],
    ids=["deep", "list", "threshold-1e400", "id-minus-inf", "bits-nan"],
)
def test_engine_config_escapes_are_typed(make: Callable[[dict[str, Any]], bytes]) -> None:
    with pytest.raises(MalformedMessageError):
        decode_config(make(_config_doc()))


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        PLAN.replace('"bits":20', '"bits":Infinity'),
        PLAN.replace('"n_clients":4', '"n_clients":-Infinity'),
        PLAN.replace('"frac_bits":16', '"frac_bits":1e400'),
        "[]",
    ],
)
def test_engine_plan_escapes_are_typed(text: str) -> None:
    with pytest.raises(MalformedMessageError):
        decode_plan(text)


def test_engine_field_of_a_non_record_is_typed() -> None:
    with pytest.raises(MalformedMessageError):
        field(b"\x00" * 33, "stage", int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        '"just a string"',
        '{"format": "securefl-registry-v1", "keys": ' + DEEP + "}",
        '{"format": "securefl-registry-v1", "keys": [1, 2]}',
    ],
)
def test_registry_escapes_are_typed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        load_registry(path)


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        '"AAAA"',
        '{"format": "securefl-ed25519-identity-v1", "client_id": ' + DEEP + "}",
        b'{"format": "\xff"}'.decode("latin-1"),
    ],
)
def test_identity_escapes_are_typed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "identity.json"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(ConfigurationError):
        load_identity(path)


def _ckpt(**change: Any) -> str:
    doc = json.loads(_checkpoint_seed())
    doc.update(change)
    return json.dumps(doc)


@pytest.mark.parametrize(
    "text",
    [
        '"AAAA"',
        "[1, 2]",
        DEEP,
        _ckpt(rounds_done="X").replace('"X"', "1e400"),
        _ckpt(rounds_done="X").replace('"X"', "NaN"),
        _ckpt(rounds_done=-3),
        _ckpt(rounds_done=True),
        _ckpt(events="abc"),
        _ckpt(events=[1, 2]),
        _ckpt(metrics={"a": 1}),
        _ckpt(rng=[["a", 1]]),
        _ckpt(last_round_entry=[1]),
        _ckpt(noise_multiplier="x"),
        _ckpt(noise_multiplier="X").replace('"X"', "NaN"),
        _ckpt(layout_digest=[1]),
        _ckpt(global_flat_b64=7),
    ],
)
def test_checkpoint_damage_is_a_resume_error(text: str) -> None:
    with pytest.raises(ResumeError):
        Checkpoint.from_json(text)


def test_checkpoint_round_trip_still_works() -> None:
    text = _checkpoint_seed()
    assert Checkpoint.from_json(text).to_json() == text


SMALL = '[run]\nname = "tiny"\nmodel = "tiny"\nn_clients = 8\nrounds = 2\ndp = "none"\n'


@pytest.mark.parametrize(
    "text",
    [
        SMALL.replace("[run]", "[[run]]"),
        "run = 5\n",
        SMALL.replace('dp = "none"', "dp = " + "[" * 3000 + "]" * 3000),
        SMALL + "device = 1.5\n",
        SMALL + "lora_targets = 1.5\n",
        SMALL + "lora_targets = { a = 1 }\n",
        SMALL + "name = 7\n",
        SMALL + "model = []\n",
        SMALL + "data = 1979-05-27\n",
        SMALL + "seed = 1.5\n",
        SMALL + 'seed = "x"\n',
        SMALL + "extra = 3\n",
        SMALL + "policy = 3\n",
        SMALL + "he_preset = true\n",
    ],
)
def test_run_config_escapes_are_typed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        config.load(path)


def test_run_config_undecodable_file_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(SMALL.encode() + b'name = "\xff"\n')
    with pytest.raises(ConfigurationError):
        config.load(path)


def test_run_config_small_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(SMALL)
    cfg = config.load(path)
    assert (cfg.name, cfg.n_clients, cfg.dp) == ("tiny", 8, "none")
    assert isinstance(cfg, config.RunConfig) and not isinstance(cfg, SecureFLError)
