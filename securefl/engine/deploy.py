"""Files and commands of a Flower deployment of the engine (app project, SuperLink config).

``flwr run`` needs a Flower app project — a directory whose ``pyproject.toml`` names the
ServerApp/ClientApp and default run config — and a SuperLink connection in
``$FLWR_HOME/config.toml``. These helpers write both; the processes themselves are started
with the commands in ``protocols/engine-flower.md`` §7 (or on loopback by
:class:`securefl.testing.flower_cluster.LoopbackCluster`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from securefl.engine.task import Scalar

APP_NAME = "securefl-secagg"


def _toml_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


#: The SecAgg-only apps and the whole-job apps (:mod:`securefl.engine.flower_job`).
SECAGG_APPS = ("securefl.engine.flower:server_app", "securefl.engine.flower:client_app")
JOB_APPS = (
    "securefl.engine.flower_job:job_server_app",
    "securefl.engine.flower_job:job_client_app",
)


def write_app_project(
    directory: str | Path,
    run_config: Mapping[str, Scalar],
    *,
    apps: tuple[str, str] = SECAGG_APPS,
) -> Path:
    """Write ``pyproject.toml`` of a Flower app whose components are securefl's ``apps``
    (server app, client app)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in sorted(run_config.items()))
    (root / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "securefl secure aggregation (SecAgg/SecAgg+) on Flower"
license = "Apache-2.0"
dependencies = ["securefl"]

[tool.flwr.app]
publisher = "securefl"

[tool.flwr.app.components]
serverapp = "{apps[0]}"
clientapp = "{apps[1]}"

[tool.flwr.app.config]
{config}
"""
    )
    return root


def write_superlink_connection(
    flwr_home: str | Path,
    address: str,
    *,
    name: str = "securefl",
    insecure: bool = False,
    root_certificates: str | None = None,
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one default SuperLink connection."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]"]
    lines.append(f"address = {json.dumps(address)}")
    if insecure:
        lines.append("insecure = true")
    if root_certificates:
        lines.append(f"root-certificates = {json.dumps(root_certificates)}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_config_arg(config: Mapping[str, Scalar]) -> str:
    """The ``--node-config`` argument of ``flower-supernode`` (space-separated key=value)."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in sorted(config.items()))
