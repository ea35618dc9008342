"""The run's privacy ledger and budget policy (thin glue over :mod:`securefl.audit`).

The ledger is the source of truth for what was spent: the budget check composes its charged
rounds (completed + in-flight) with the projected round, so a resumed run cannot forget or
double-count a round. Without an explicit policy file the run's own ε budget becomes an
implicit policy with the run's accountant, δ, privacy unit and adjacency.
"""

from __future__ import annotations

from typing import Any

from securefl.audit.ledger import Entry, Ledger
from securefl.audit.policy import BudgetPolicy
from securefl.fl.config import RunConfig

LEDGER_NAME = "ledger.sqlite"

PROTOCOL_NAMES = {"plain": "plaintext", "secagg": "secagg", "secagg+": "secagg+", "he": "he-ckks"}


def privacy_unit(cfg: RunConfig) -> str:
    return "example" if cfg.dp == "local" else "client"


def adjacency(cfg: RunConfig) -> str:
    from securefl.fl.privacy import neighboring

    return neighboring(cfg).replace("_", "-")


def implicit_policy(cfg: RunConfig) -> BudgetPolicy | None:
    """The policy a run without a policy file is held to (None: no budget)."""
    budget = cfg.effective_budget
    if budget is None:
        return None
    return BudgetPolicy(
        name=f"run-config:{cfg.name}",
        privacy_unit=privacy_unit(cfg),
        adjacency=adjacency(cfg),
        accountant=cfg.accountant,
        max_epsilon=budget,
        delta=cfg.delta,
        scope="run",
        description="implicit policy from RunConfig.epsilon_budget / target_epsilon",
    )


def load_policy(cfg: RunConfig) -> BudgetPolicy | None:
    if cfg.policy is not None:
        return BudgetPolicy.load(cfg.policy)
    return implicit_policy(cfg)


def entries_of(ledger: Ledger, run_id: str) -> list[Entry]:
    return list(ledger.entries(run_id=run_id))


def completed_rounds(entries: list[Entry]) -> dict[int, Entry]:
    return {
        e.round_id: e for e in entries if e.kind == "round_completed" and e.round_id is not None
    }


def open_projections(entries: list[Entry]) -> list[int]:
    """Rounds projected but neither completed nor aborted (in flight when the run died)."""
    state: dict[int, int] = {}
    for e in entries:
        if e.round_id is None:
            continue
        if e.kind == "round_projected":
            state[e.round_id] = state.get(e.round_id, 0) + 1
        elif e.kind in ("round_completed", "round_aborted") and state.get(e.round_id, 0) > 0:
            state[e.round_id] -= 1
    return sorted(r for r, n in state.items() if n > 0)


def jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats (ε = ∞) by strings so the ledger accepts them."""
    out = _jsonable(value)
    assert isinstance(out, dict)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
