"""``securefl account``: ε (or the calibrated σ) of T rounds of a sampled Gaussian mechanism."""

from __future__ import annotations

import json

import typer


def _account(
    sampling_rate: float,
    noise_multiplier: float | None,
    rounds: int,
    delta: float,
    target_epsilon: float | None,
    sampling: str,
    population: int | None,
    accountants: list[str],
    as_json: bool,
) -> None:
    from securefl.dp.accounting import Neighboring, calibrate_noise_multiplier, get_accountant
    from securefl.dp.errors import UnsupportedEventError
    from securefl.dp.events import GaussianEvent, SelfComposedEvent
    from securefl.dp.participation import (
        FixedSizeSampling,
        FullParticipation,
        PoissonSampling,
        SamplingScheme,
        round_event,
    )

    scheme: SamplingScheme
    neighboring: Neighboring = "add_remove"
    if sampling == "poisson":
        scheme = PoissonSampling(sampling_rate)
    elif sampling == "fixed":
        if population is None:
            raise typer.BadParameter("--population is required with --sampling fixed")
        scheme = FixedSizeSampling(population, max(1, round(sampling_rate * population)))
        neighboring = "replace_one"
    elif sampling == "all":
        scheme = FullParticipation(population)
    else:
        raise typer.BadParameter("--sampling must be poisson, fixed or all")
    out: dict[str, object] = {
        "sampling": sampling,
        "sampling_rate": sampling_rate,
        "rounds": rounds,
        "delta": delta,
        "neighboring": neighboring,
    }
    if target_epsilon is not None:
        sigmas: dict[str, float | str] = {}
        for name in accountants:
            try:
                sigmas[name] = calibrate_noise_multiplier(
                    target_epsilon,
                    delta,
                    rounds=rounds,
                    sampling=scheme,
                    accountant=name,
                    neighboring=neighboring,
                )
            except UnsupportedEventError as exc:
                sigmas[name] = f"unsupported: {exc}"
        out |= {"target_epsilon": target_epsilon, "noise_multiplier": sigmas}
    else:
        if noise_multiplier is None:
            raise typer.BadParameter("give --noise-multiplier or --target-epsilon")
        event = SelfComposedEvent(round_event(scheme, GaussianEvent(noise_multiplier)), rounds)
        eps: dict[str, float | str] = {}
        for name in accountants:
            acc = get_accountant(name, neighboring=neighboring)
            eps[name] = acc.epsilon(event, delta) if acc.supports(event) else "unsupported"
        out |= {"noise_multiplier": noise_multiplier, "epsilon": eps, "event": event.to_dict()}
    if as_json:
        typer.echo(json.dumps(out))
        return
    for key, value in out.items():
        if key != "event":
            typer.echo(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    """Add ``account`` to the securefl command line."""

    def account(
        sampling_rate: float = typer.Option(..., "--q", help="client sampling rate q ∈ (0, 1]"),
        noise_multiplier: float | None = typer.Option(None, "--sigma", help="noise multiplier z"),
        rounds: int = typer.Option(..., "--rounds", "-T", help="number of rounds"),
        delta: float = typer.Option(1e-5, "--delta"),
        target_epsilon: float | None = typer.Option(
            None, "--target-epsilon", help="calibrate the smallest z reaching this ε instead"
        ),
        sampling: str = typer.Option("poisson", help="poisson | fixed | all"),
        population: int | None = typer.Option(None, help="number of clients (fixed/all)"),
        accountant: list[str] = typer.Option(  # noqa: B008
            ["pld", "prv", "rdp"], "--accountant", "-a", help="rdp | prv | pld (repeatable)"
        ),
        as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    ) -> None:
        """ε of T rounds of a sampled Gaussian mechanism under each accountant (or calibrate σ)."""
        _account(
            sampling_rate,
            noise_multiplier,
            rounds,
            delta,
            target_epsilon,
            sampling,
            population,
            accountant,
            as_json,
        )

    app.command("account")(account)
