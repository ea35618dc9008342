"""``securefl engine-keyholder-init``: the CKKS key holder's secret key file and the
fingerprint its clients pin (securefl.engine.cli, engine-flower.md §12)."""

from __future__ import annotations

import stat
from pathlib import Path

import typer
from typer.testing import CliRunner

from securefl.engine.cli import register
from securefl.engine.he_job import key_holder_fingerprint


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_keyholder_init_writes_a_private_key_once_and_prints_its_fingerprint(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    key = tmp_path / "secure" / "ckks.secret"
    out = runner.invoke(_app(), ["engine-keyholder-init", "--out", str(key), "--preset", "fast"])
    assert out.exit_code == 0, out.output
    fingerprint = key_holder_fingerprint(key).hex()
    assert f'key-holder-fingerprint="{fingerprint}"' in out.output  # what clients pin
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    before = key.read_bytes()
    again = runner.invoke(_app(), ["engine-keyholder-init", "--out", str(key)])
    assert again.exit_code != 0 and "not overwritten" in again.output
    assert key.read_bytes() == before  # never overwritten
    bad = runner.invoke(
        _app(), ["engine-keyholder-init", "--out", str(tmp_path / "b.secret"), "--preset", "nope"]
    )
    assert bad.exit_code != 0 and not (tmp_path / "b.secret").exists()
