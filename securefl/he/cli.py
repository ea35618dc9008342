"""``securefl he-presets`` and ``securefl he-demo``: the CKKS parameter table and one round."""

from __future__ import annotations

import typer


def _presets(clients: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from securefl.he.params import PRESETS, released_error_bound

    table = Table(title=f"CKKS presets (released error bound for n = {clients}, |Σ| ≤ 1)")
    for col in ("preset", "N", "moduli", "log2 QP / max", "Δ", "security", "bound", "purpose"):
        table.add_column(col)
    for name, p in PRESETS.items():
        meta = p.metadata()
        table.add_row(
            name,
            str(p.poly_modulus_degree),
            ",".join(map(str, p.coeff_mod_bit_sizes)),
            f"{p.total_bits} / {meta['he_standard_max_bits']}",
            f"2^{meta['scale_log2']:.2f}",
            str(meta["security_level"]),
            f"{released_error_bound(p, clients, max_abs=1.0):.2e}",
            p.purpose,
        )
    Console().print(table)


def _demo(preset: str, clients: int, dim: int) -> None:
    import secrets

    import numpy as np
    from rich.console import Console

    from securefl.he.roles import KeyHolder
    from securefl.he.simulate import run_round

    data_rng = np.random.default_rng(secrets.randbits(32))  # demo data only
    inputs = {c: {"lora_A": data_rng.normal(0, 0.1, size=dim)} for c in range(clients)}
    result = run_round(inputs, KeyHolder(preset))
    want = sum(x["lora_A"] for x in inputs.values())
    err = float(np.max(np.abs(result.total["lora_A"] - want)))
    m = result.metadata
    Console().print(
        f"[bold]CKKS round[/] preset={preset} n={clients} d={dim}: max error {err:.2e} "
        f"≤ stated {m['released_error_bound']:.2e}; up {result.bytes_up[0] / dim:.1f} B/value, "
        f"down {result.bytes_down / dim:.1f} B/value; "
        + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    )


def he_presets(
    clients: int = typer.Option(10, help="number of clients for the stated bound"),
) -> None:
    """Show the CKKS presets: security level and stated precision."""
    _presets(clients)


def he_demo(
    preset: str = typer.Option("fast", help="fast, weighted or precise"),
    clients: int = typer.Option(10, help="number of clients"),
    dim: int = typer.Option(2**14, help="values per client"),
) -> None:
    """Run one in-process CKKS aggregation round and print its error and costs."""
    _demo(preset, clients, dim)


def register(app: typer.Typer) -> None:
    """Add ``he-presets`` and ``he-demo`` to the ``securefl`` command line."""
    app.command("he-presets")(he_presets)
    app.command("he-demo")(he_demo)
