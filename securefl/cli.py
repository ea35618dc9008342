"""The ``securefl`` command line: one typer app composed of each layer's sub-commands.

Each layer owns its commands in ``securefl/<layer>/cli.py`` (exporting ``register(app)``),
so this file only wires them together and imports heavy dependencies lazily.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="securefl",
    help="Privacy-preserving federated fine-tuning with secure aggregation, HE and DP.",
    no_args_is_help=True,
    add_completion=False,
)


def _root() -> None:
    """Keeps ``securefl`` a command group even if only one layer contributes commands."""


app.callback()(_root)

# Layers that contribute commands, lowest first.
_COMMAND_MODULES = (
    "securefl.secagg.cli",
    "securefl.he.cli",
    "securefl.dp.cli",
    "securefl.audit.cli",
    "securefl.fl.cli",
    "securefl.engine.cli",
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a layer not built yet contributes nothing
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
