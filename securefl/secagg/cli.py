"""``securefl secagg-demo``: one in-process SecAgg(+) round over named tensors, summarised."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import typer


def _demo(
    clients: int,
    dim: int,
    dropout: float,
    k: int | None,
    threshold: int | None,
    threat_model: str = "malicious",
    gamma: float = 0.05,
) -> None:
    import numpy as np
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from securefl.encoding import error_bound, plan_ring
    from securefl.errors import AbortError, ConfigurationError
    from securefl.secagg.client import ClientPolicy
    from securefl.secagg.config import THREAT_MODELS
    from securefl.secagg.params import solve_parameters
    from securefl.secagg.simulate import (
        DropoutPlan,
        SimulatedIdentities,
        secure_sum_named,
        simulation_config,
    )
    from securefl.tensors import TensorLayout

    console = Console()
    if k is None and threshold is None:
        if threat_model not in THREAT_MODELS:
            raise typer.BadParameter(f"must be one of {sorted(THREAT_MODELS)}")
        params = solve_parameters(
            clients,
            gamma,
            # the solver must expect at least the n_drop clients the demo drops below
            max(dropout, round(dropout * clients) / clients, 0.01),
            model=THREAT_MODELS[threat_model],
        )
        degree: int | None = None if params.complete_graph else params.k
        t = params.t
        why = params.rationale
    else:
        degree = k
        span = clients - 1 if k is None or k >= clients - 1 else k + k % 2
        t = threshold if threshold is not None else span // 2 + 1
        why = "given on the command line"
    # synthetic client updates: two named tensors, like a LoRA adapter pair (demo data only)
    data_rng = np.random.default_rng(secrets.randbits(32))
    rows = max(1, dim // 16)
    shapes = {"lora_A": (rows, 8), "lora_B": (8, max(1, (dim - rows * 8) // 8))}
    ids = list(range(1, clients + 1))
    updates = {
        u: {name: data_rng.normal(0.0, 0.1, size=shape) for name, shape in shapes.items()}
        for u in ids
    }
    layout = TensorLayout.from_tensors(updates[1])
    plan = plan_ring(clients, 1.0, 16)
    try:
        config = simulation_config(
            ids,
            threshold=t,
            bits=plan.bits,
            dimension=layout.size,
            degree=degree,
            layout_digest=layout.digest(),
            # no global model in this demo: bind a hash of what stands in for it
            model_digest=hashlib.sha256(b"securefl secagg-demo model" + layout.digest()).digest(),
            threat_model=threat_model,
            corrupt_fraction=gamma,
            identities=(identities := SimulatedIdentities()),
        )
    except ConfigurationError as exc:
        console.print(f"[red]refused[/]: {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    n_drop = round(dropout * clients)
    dropped = frozenset(sorted(ids, key=lambda _: secrets.randbits(32))[:n_drop])
    console.print(
        f"[bold]SecAgg{'+' if not config.is_complete else ''} round[/]: n={clients}, "
        f"d={layout.size}, k={config.neighbour_count}, t={t}, b={plan.bits}, "
        f"{threat_model} server, γ={gamma:g} "
        f"({escape(why)}); {n_drop} clients drop before their masked input"
    )
    try:
        # the clients hold the same threat model as the command line (semi-honest: opt-in)
        policy = ClientPolicy(threat_model=config.threat_model, corrupt_fraction=gamma)
        out = secure_sum_named(
            updates,
            config,
            plan,
            dropouts=DropoutPlan(masked_input=dropped),
            identities=identities,
            policy=policy,
        )
    except AbortError as exc:
        console.print(f"[red]round aborted[/]: {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    r = out.round
    err = max(
        float(np.max(np.abs(out.sums[name] - sum(updates[u][name] for u in r.survivors))))
        for name in shapes
    )
    table = Table(title="secure aggregation summary")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows_: list[tuple[str, Any]] = [
        ("survivors (inputs in the sum)", len(r.survivors)),
        *((f"dropped at {stage}", len(ids_)) for stage, ids_ in r.dropped.items() if ids_),
        ("refused / pruned clients", len(r.refused)),
        ("values clipped (all clients)", sum(out.clipped.values())),
        ("max |secure sum − plain sum|", f"{err:.3g} (bound {error_bound(plan, clients):.3g})"),
        ("upload per client (mean)", f"{r.total_bytes_up / clients / 1024:.1f} KiB"),
        ("upload bytes per parameter", f"{max(r.bytes_up.values()) / layout.size:.3f}"),
        ("download per client (mean)", f"{r.total_bytes_down / clients / 1024:.1f} KiB"),
        *((f"time: {phase}", f"{sec:.3f} s") for phase, sec in r.timings.items()),
    ]
    for name, value in rows_:
        table.add_row(name, str(value))
    console.print(table)
    if err > error_bound(plan, clients):
        raise typer.Exit(code=1)


def secagg_demo(
    clients: int = typer.Option(20, "--clients", min=3, help="number of clients n"),
    dim: int = typer.Option(10_000, "--dim", min=16, help="parameters per update d"),
    dropout: float = typer.Option(
        0.1, "--dropout", min=0.0, max=0.9, help="fraction dropping before masked input"
    ),
    k: int | None = typer.Option(
        None, "--k", min=2, help="SecAgg+ degree (default: parameter solver)"
    ),
    threshold: int | None = typer.Option(None, "--threshold", min=2, help="Shamir t"),
    threat_model: str = typer.Option(
        "malicious", "--threat-model", help="semi-honest | malicious (server)"
    ),
    gamma: float = typer.Option(
        0.05, "--corrupt-fraction", min=0.0, max=0.5, help="fraction of corrupt clients γ"
    ),
) -> None:
    """Run one in-process secure aggregation round and print a summary."""
    _demo(clients, dim, dropout, k, threshold, threat_model, gamma)


def register(app: typer.Typer) -> None:
    """Add ``secagg-demo`` to the ``securefl`` command line."""
    app.command("secagg-demo")(secagg_demo)
