"""``securefl simulate``: the main job — federated LoRA fine-tuning with SecAgg+ and DP."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from securefl.errors import SecureFLError


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        try:
            import tomllib

            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except Exception:  # not a TOML literal: keep the string
            out[key.strip()] = raw
    return out


def simulate(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="run.toml")] = None,
    out: Annotated[str | None, typer.Option(help="run directory (default runs/<name>)")] = None,
    rounds: Annotated[int | None, typer.Option(help="federated rounds")] = None,
    clients: Annotated[int | None, typer.Option("--clients", help="number of clients")] = None,
    aggregation: Annotated[str | None, typer.Option(help="plain | secagg | secagg+ | he")] = None,
    dp: Annotated[
        str | None, typer.Option(help="auto | none | central | distributed | local")
    ] = None,
    epsilon: Annotated[float | None, typer.Option(help="target ε (calibrates the noise)")] = None,
    model: Annotated[str | None, typer.Option(help="minilm | tiny | <HF model dir>")] = None,
    data: Annotated[str | None, typer.Option(help="synthetic | <file.csv|file.jsonl>")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:i]")] = None,
    seed: Annotated[int | None, typer.Option(help="data/partition seed")] = None,
    policy: Annotated[str | None, typer.Option(help="audit BudgetPolicy TOML")] = None,
    audit: Annotated[
        int | None,
        typer.Option(
            "--audit",
            help="one-run canary audit of the trained model with this many canary clients"
            " (e.g. 200); 0 = none",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any RunConfig field: key=value")
    ] = None,
    resume: Annotated[bool, typer.Option(help="resume from the run directory's checkpoint")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Federated LoRA fine-tuning of all-MiniLM-L6-v2 with secure aggregation and DP.

    The bare command runs the main job (securefl/fl/default.toml: 5 sites, SecAgg+, DP-SGD in
    each site, example-level ε = 8) and writes metrics, checkpoint, ledger and audit report to
    the run directory.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from securefl.fl import config as config_mod
    from securefl.fl.run import run_simulation

    console = Console(stderr=True, quiet=quiet)
    overrides: dict[str, Any] = {
        "out": out,
        "rounds": rounds,
        "n_clients": clients,
        "aggregation": aggregation,
        "dp": dp,
        "target_epsilon": epsilon,
        "model": model,
        "data": data,
        "device": device,
        "seed": seed,
        "policy": policy,
        "audit_canaries": audit,
    }
    overrides.update(_parse_set(set_ or []))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if config is not None:
            cfg = config_mod.load(config, **overrides)
        else:  # the main job: securefl/fl/default.toml
            cfg = config_mod.load(config_mod.MAIN_JOB, **overrides)
        if cfg.out is None:
            cfg = cfg.replace(out=str(Path("runs") / cfg.name))
    except SecureFLError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from exc

    t_start = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    rounds_task = progress.add_task("rounds", total=cfg.rounds, visible=False)
    clients_task = progress.add_task("clients", total=1, visible=False)
    table = Table(title=f"securefl simulate → {cfg.out}")
    for col in ("round", "acc", "loss", "ε", "part.", "drop", "KiB up", "train s", "secure s"):
        table.add_column(col, justify="right")

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind == "loading_model":
            console.print(f"loading model [bold]{info['model']}[/] …")
        elif kind == "started":
            progress.update(
                rounds_task, visible=True, completed=info["start"], total=info["rounds"]
            )
            z = info.get("noise_multiplier")
            console.print(
                f"run {info['run_id']}: {info['parameters']:,} LoRA parameters on the wire"
                + (f", noise multiplier z = {z:.3f}" if z else "")
                + (f", resuming at round {info['start']}" if info["start"] else "")
            )
        elif kind == "round_started":
            progress.update(
                clients_task,
                visible=True,
                completed=0,
                total=max(info["cohort"], 1),
                description=f"round {info['round']} clients",
            )
        elif kind == "client_done":
            progress.advance(clients_task)
        elif kind == "round":
            progress.advance(rounds_task)
            t = info["timings"]
            secure = t.get("encode", 0) + t.get("aggregate", 0) + t.get("unmask", 0)
            table.add_row(
                str(info["round"]),
                f"{info['accuracy']:.3f}",
                f"{info['loss']:.3f}",
                "∞" if math.isinf(info["epsilon"]) else f"{info['epsilon']:.2f}",
                str(info["n_participants"]),
                str(info["n_dropped"]),
                f"{info['bytes_up'] / 1024:.0f}",
                f"{t['local_training']:.2f}",
                f"{secure:.3f}",
            )
        elif kind == "refused":
            console.print(f"[yellow]round {info['round']} refused:[/] {'; '.join(info['reasons'])}")

    try:
        with progress:
            result = run_simulation(cfg, callback=on_event, resume=resume)
    except SecureFLError as exc:
        console.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from exc
    console.print(table)
    summary = result.summary()
    summary["wall_s"] = round(time.perf_counter() - t_start, 2)
    console.print(
        f"accuracy {result.accuracy:.3f}, ε = {result.epsilon:.3g} at δ = {result.delta:g}; "
        f"outputs in [bold]{result.run_dir}[/]\n"
        f"ledger head anchor (publish it; verify with --expect-head): {result.anchor}\n"
        f"ledger public key (the signing key stays beside it, outside the run): "
        f"{result.public_key}"
    )
    if result.empirical_audit is not None:
        a = result.empirical_audit
        console.print(
            f"canary audit: {a['correct']}/{a['guesses']} guesses right → ε ≥ "
            f"{a['epsilon_lower_bound']:.3g} at {a['confidence']:.0%} confidence "
            f"(this design can show at most ε ≥ {a['max_provable_lower_bound']:.3g})"
        )
    typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the securefl CLI."""
    app.command("simulate")(simulate)
