"""``securefl engine-keygen`` / ``engine-app`` / ``engine-keyholder-init``: set up a Flower
deployment.

``engine-keygen`` creates one node identity file per client id and the registry of their
public keys (the PKI of ``protocols/secagg.md`` §1); ``engine-app`` writes the Flower app
project that ``flwr run`` submits; ``engine-keyholder-init`` makes the CKKS key holder's
secret key and prints the fingerprint clients pin (§12). Commands to start the SuperLink and
SuperNodes: ``protocols/engine-flower.md`` §7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_TASK = "securefl.engine.task:SyntheticTask"


def engine_keygen(
    client_ids: Annotated[list[int], typer.Argument(help="securefl client ids (1..2^32-2)")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory for the key files")] = Path("."),
    registry: Annotated[Path, typer.Option(help="registry file to (re)write")] = Path(
        "registry.json"
    ),
) -> None:
    """Create node identity files (mode 0600, never overwritten) and the public registry."""
    from securefl.engine.identity import generate_identity, load_registry, save_registry

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = load_registry(registry, minimum=1) if registry.exists() else {}
    for u in client_ids:
        path = out_dir / f"node{u}.key"
        keys[u] = generate_identity(path, u).public
        typer.echo(f"client {u}: {path}")
    save_registry(registry, keys)
    typer.echo(f"registry with {len(keys)} clients: {registry}")


def engine_app(
    directory: Annotated[Path, typer.Argument(help="directory of the Flower app project")],
    registry: Annotated[Path, typer.Option(help="registry file (read by the ServerApp)")],
    rounds: Annotated[int, typer.Option(help="number of rounds")] = 1,
    min_nodes: Annotated[int, typer.Option(help="SuperNodes to wait for")] = 2,
    stage_timeout: Annotated[float, typer.Option(help="seconds to wait per stage")] = 30.0,
    result_file: Annotated[Path, typer.Option(help="run summary (JSON)")] = Path("result.json"),
    task: Annotated[str, typer.Option(help="EngineTask reference")] = DEFAULT_TASK,
) -> None:
    """Write the Flower app project (pyproject.toml) for ``flwr run``."""
    from securefl.engine.deploy import write_app_project

    root = write_app_project(
        directory,
        {
            "registry": str(registry.resolve()),
            "num-rounds": rounds,
            "min-nodes": min_nodes,
            "stage-timeout": float(stage_timeout),
            "result-file": str(result_file.resolve()),
            "task": task,
        },
    )
    typer.echo(f"Flower app written to {root}; run it with: flwr run {root}")


def engine_keyholder_init(
    out: Annotated[
        Path,
        typer.Option(help="secret key file to create (outside any run directory; mode 0600)"),
    ],
    preset: Annotated[str, typer.Option(help="CKKS preset: fast | weighted | precise")] = "fast",
) -> None:
    """Create the CKKS key holder's secret key (never overwritten) and print the public
    context's fingerprint, which every client pins as ``key-holder-fingerprint``."""
    from securefl.engine.he_job import init_key_holder
    from securefl.errors import SecureFLError

    try:
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fingerprint = init_key_holder(out, preset)
    except (SecureFLError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"CKKS secret key (preset {preset}): {out}")
    typer.echo(f'key holder node config: role="keyholder" he-secret-key="{out}"')
    typer.echo(f'client node config: key-holder-fingerprint="{fingerprint.hex()}"')


def register(app: typer.Typer) -> None:
    """Add ``engine-keygen``, ``engine-app`` and ``engine-keyholder-init`` to the ``securefl``
    command line."""
    app.command("engine-keygen")(engine_keygen)
    app.command("engine-app")(engine_app)
    app.command("engine-keyholder-init")(engine_keyholder_init)
