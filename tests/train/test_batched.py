"""Batched client training equals the per-client loop (same data order, dropout off), streams
chunk by chunk, leaves the shared model as it was, and refuses bad cohorts with typed errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.errors import ConfigurationError
from securefl.fl.client import TrainSpec, client_step
from securefl.fl.data import TextDataset, synthetic_topics
from securefl.fl.model import AdapterModel
from securefl.train import (
    BatchedClientTrainer,
    BatchedTrainer,
    CohortError,
    TokenizedClient,
    TrainingDivergedError,
    tokenize_client,
)

ROUND, SEED = 3, 7


def _model(dropout: bool = False) -> AdapterModel:
    import torch

    model = AdapterModel(
        "tiny",
        num_labels=4,
        lora_r=4,
        lora_alpha=8.0,
        lora_targets=("query", "value", "classifier"),
        max_length=32,
        seed=0,
        device="cpu",
    )
    if not dropout:
        for module in model.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model


@pytest.fixture(scope="module")
def model() -> AdapterModel:
    return _model()


@pytest.fixture(scope="module")
def pool() -> TextDataset:
    return synthetic_topics(400, seed=0)


def _clients(pool: TextDataset, sizes: list[int]) -> list[TextDataset]:
    out, start = [], 0
    for n in sizes:
        out.append(pool.subset(range(start, start + n)))
        start += n
    return out


def _global(model: AdapterModel) -> np.ndarray:
    # a non-zero B so every LoRA matrix gets a gradient from the first step
    rng = np.random.default_rng(1)
    return model.get_flat() + rng.normal(0.0, 0.01, model.layout.size)


def _loop(
    model: AdapterModel, flat: np.ndarray, clients: list[TextDataset], spec: TrainSpec
) -> list[Any]:
    return [
        client_step(model, flat, c, spec, client_id=10 + i, round_index=ROUND, seed=SEED)
        for i, c in enumerate(clients)
    ]


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    """Per client, relative L2 distance ≤ 1e-5. Not elementwise: AdamW divides by √v, so a
    coordinate whose gradient is at float32 rounding level can move by a visible fraction of
    the learning rate in either path (seen: 1 of 1168 coordinates off by 1e-3 relative)."""
    for g, r in zip(got, ref, strict=True):
        assert np.linalg.norm(g - r) <= 1e-5 * np.linalg.norm(r) + 1e-12


def test_batched_updates_equal_the_per_client_loop(model: AdapterModel, pool: TextDataset) -> None:
    """Unequal sizes (1 … 13 examples, last batches partial), two chunks, forward passes cut
    into several micro-batches: the same updates, losses, step and example counts."""
    spec = TrainSpec(epochs=2, batch_size=4, lr=1e-2)
    clients = _clients(pool, [5, 1, 9, 4, 13, 7, 2])
    flat = _global(model)
    ref = _loop(model, flat, clients, spec)
    trainer = BatchedClientTrainer(model, spec, chunk_size=3, token_budget=48)
    chunks = list(
        trainer.train_chunks(
            flat, clients, client_ids=[10 + i for i in range(7)], round_index=ROUND, seed=SEED
        )
    )
    assert [len(c.client_ids) for c in chunks] == [3, 3, 1]
    got = [u for c in chunks for u in c.client_updates(ROUND, model.layout.digest())]
    assert [u.client_id for u in got] == [u.client_id for u in ref]
    _assert_close(np.stack([u.delta for u in got]), np.stack([u.delta for u in ref]))
    for g, r in zip(got, ref, strict=True):
        assert g.local_steps == r.local_steps
        assert g.num_examples == r.num_examples
        assert math.isclose(g.train_loss, r.train_loss, rel_tol=1e-5)
        g.validate(model.layout.digest(), model.layout.size)


@settings(max_examples=6)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    batch_size=st.integers(1, 5),
    epochs=st.integers(1, 2),
    chunk=st.integers(1, 3),
)
def test_batched_equals_loop_property(
    model: AdapterModel,
    pool: TextDataset,
    sizes: list[int],
    batch_size: int,
    epochs: int,
    chunk: int,
) -> None:
    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=5e-3)
    clients = _clients(pool, sizes)
    flat = _global(model)
    ref = _loop(model, flat, clients, spec)
    trainer = BatchedClientTrainer(model, spec, chunk_size=chunk)
    got = list(
        trainer.client_updates(
            flat,
            clients,
            client_ids=[10 + i for i in range(len(sizes))],
            round_index=ROUND,
            seed=SEED,
        )
    )
    _assert_close(np.stack([u.delta for u in got]), np.stack([u.delta for u in ref]))


def test_client_level_clip_matches_client_step(model: AdapterModel, pool: TextDataset) -> None:
    spec = TrainSpec(epochs=1, batch_size=4, lr=1e-2, clip=0.01)
    clients = _clients(pool, [6, 3])
    flat = _global(model)
    ref = _loop(model, flat, clients, spec)
    got = next(
        BatchedClientTrainer(model, spec).train_chunks(
            flat, clients, client_ids=[10, 11], round_index=ROUND, seed=SEED
        )
    )
    assert np.all(np.linalg.norm(got.deltas, axis=1) <= 0.01)
    _assert_close(got.deltas, np.stack([u.delta for u in ref]))


def test_pretokenized_clients_give_the_same_updates(model: AdapterModel, pool: TextDataset) -> None:
    spec = TrainSpec(epochs=1, batch_size=3, lr=1e-2)
    clients = _clients(pool, [4, 7])
    flat = _global(model)
    trainer = BatchedClientTrainer(model, spec)
    a = next(trainer.train_chunks(flat, clients, client_ids=[1, 2], round_index=0, seed=0))
    tok = [tokenize_client(model, c) for c in clients]
    b = next(trainer.train_chunks(flat, tok, client_ids=[1, 2], round_index=0, seed=0))
    np.testing.assert_array_equal(a.deltas, b.deltas)


def test_shared_model_is_left_as_it_was(pool: TextDataset) -> None:
    """No per-client copy and no lasting change: same adapter state, adapters enabled, the
    same forward output, trainable flags and training mode as before."""
    import torch

    model = _model(dropout=True)
    model.model.eval()
    before = model.get_flat()
    batch = model.encode(pool.texts[:3])
    with torch.no_grad():
        out0 = model.model(**batch).logits
    spec = TrainSpec(epochs=1, batch_size=4, lr=1e-2)
    trainer = BatchedClientTrainer(model, spec)
    rng_state = torch.get_rng_state()
    list(
        trainer.train_chunks(
            _global(model), _clients(pool, [5, 3]), client_ids=[0, 1], round_index=0, seed=0
        )
    )
    np.testing.assert_array_equal(model.get_flat(), before)
    assert torch.equal(torch.get_rng_state(), rng_state)  # dropout stream forked, not leaked
    assert not model.model.training
    assert all(p.requires_grad for p in model.trainable_parameters)
    with torch.no_grad():
        torch.testing.assert_close(model.model(**batch).logits, out0, rtol=0, atol=0)


def test_dropout_is_seeded_per_chunk(pool: TextDataset) -> None:
    """With dropout on the path is reproducible (same seed, same chunks) and the draws matter."""
    model = _model(dropout=True)
    spec = TrainSpec(epochs=1, batch_size=4, lr=1e-2)
    clients = _clients(pool, [5, 3])
    flat = _global(model)
    trainer = BatchedClientTrainer(model, spec)

    def run(seed: int) -> np.ndarray:
        chunk = next(
            trainer.train_chunks(flat, clients, client_ids=[0, 1], round_index=0, seed=seed)
        )
        return chunk.deltas

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


def test_chunks_stream_lazily(model: AdapterModel, pool: TextDataset) -> None:
    spec = TrainSpec(epochs=1, batch_size=4, lr=1e-2)
    trainer = BatchedClientTrainer(model, spec, chunk_size=2)
    stream = trainer.train_chunks(
        _global(model),
        _clients(pool, [2, 2, 2, 2, 2]),
        client_ids=range(5),
        round_index=0,
        seed=0,
    )
    first = next(stream)
    assert first.client_ids == (0, 1) and first.deltas.shape == (2, model.layout.size)
    assert [c.client_ids for c in stream] == [(2, 3), (4,)]


# --- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cohort", "ids", "flat", "param"),
    [
        ("empty", [], "ok", "cohort"),
        ("two", [0], "ok", "client_ids"),
        ("two", [0, 0], "ok", "client_ids"),
        ("with_empty", [0, 1], "ok", "data"),
        ("two", [0, 1], "short", "global_flat"),
        ("two", [0, 1], "nan", "global_flat"),
        ("two", [0, 1], "inf", "global_flat"),
        ("bad_label", [0], "ok", "labels"),
        ("too_long", [0], "ok", "input_ids"),
        ("not_data", [0], "ok", "data"),
    ],
)
def test_bad_cohorts_are_refused(
    model: AdapterModel, pool: TextDataset, cohort: str, ids: list[int], flat: str, param: str
) -> None:
    good = _clients(pool, [3, 2])
    long_ids = np.arange(1, 40, dtype=np.int64)
    cohorts: dict[str, list[Any]] = {
        "empty": [],
        "two": good,
        "with_empty": [good[0], pool.subset([])],
        "bad_label": [TokenizedClient((np.array([1, 2]),), None, (9,))],
        "too_long": [TokenizedClient((long_ids,), None, (0,))],
        "not_data": [["a text"]],
    }
    vector = _global(model)
    vectors = {"ok": vector, "short": vector[:-1], "nan": vector.copy(), "inf": vector.copy()}
    vectors["nan"][5] = np.nan
    vectors["inf"][0] = np.inf
    trainer = BatchedClientTrainer(model, TrainSpec(1, 2, 1e-2))
    with pytest.raises(CohortError) as err:
        list(
            trainer.train_chunks(
                vectors[flat], cohorts[cohort], client_ids=ids, round_index=0, seed=0
            )
        )
    assert err.value.parameter == param


def test_tokenized_client_checks_its_shapes() -> None:
    with pytest.raises(CohortError):
        TokenizedClient((np.array([1, 2]),), None, (0, 1))
    with pytest.raises(CohortError):
        TokenizedClient((np.array([1, 2]),), (np.array([0]),), (0,))
    with pytest.raises(CohortError):
        TokenizedClient((np.array([], dtype=np.int64),), None, (0,))


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"token_budget": -1}, "token_budget"),
        ({"spec": TrainSpec(0, 2, 1e-2)}, "epochs"),
        ({"spec": TrainSpec(1, 0, 1e-2)}, "batch_size"),
        ({"spec": TrainSpec(1, 2, float("nan"))}, "lr"),
    ],
)
def test_bad_settings_are_refused(model: AdapterModel, kwargs: dict[str, Any], param: str) -> None:
    spec = kwargs.pop("spec", TrainSpec(1, 2, 1e-2))
    with pytest.raises(ConfigurationError) as err:
        BatchedClientTrainer(model, spec, **kwargs)
    assert err.value.parameter == param


def test_divergence_is_refused_not_returned(model: AdapterModel, pool: TextDataset) -> None:
    trainer = BatchedClientTrainer(model, TrainSpec(epochs=3, batch_size=1, lr=1e30))
    with pytest.raises(TrainingDivergedError):
        list(
            trainer.train_chunks(
                _global(model), _clients(pool, [4]), client_ids=[0], round_index=0, seed=0
            )
        )


# --- the Federation-API trainer ------------------------------------------------------------
@dataclass(frozen=True)
class _Ctx:
    round_index: int
    client: int
    seed: int


def test_batched_trainer_matches_the_loop(model: AdapterModel, pool: TextDataset) -> None:
    clients = _clients(pool, [6, 2, 9])
    flat = _global(model)
    trainer = BatchedTrainer(model, epochs=2, batch_size=4, lr=1e-2, chunk_size=2)
    state = model.layout.unflatten(flat)
    ctxs = [_Ctx(ROUND, 10 + i, SEED) for i in range(3)]
    updates = trainer.train_cohort(state, clients, ctxs)
    ref = _loop(model, flat, clients, TrainSpec(2, 4, 1e-2))
    got = np.stack([model.layout.flatten(u) for u in updates])
    _assert_close(got, np.stack([u.delta for u in ref]))
    single = model.layout.flatten(trainer.train(state, clients[1], ctxs[1]))
    _assert_close(single[None, :], got[1:2])
    with pytest.raises(CohortError):
        trainer.train_cohort(state, clients, [*ctxs[:2], _Ctx(ROUND + 1, 12, SEED)])


def test_batched_trainer_runs_a_federation(
    model: AdapterModel, pool: TextDataset, tmp_path: Path
) -> None:
    from securefl.api import Federation, NoDP, Plain, Trainer

    test = pool.subset(range(300, 340))
    trainer = BatchedTrainer(model, epochs=1, batch_size=4, lr=1e-2, test=test)
    assert isinstance(trainer, Trainer)
    clients = _clients(pool, [5, 4, 6])
    fed = Federation(
        population=3,
        rounds=1,
        run_dir=tmp_path / "run",
        aggregation=Plain(),
        privacy=NoDP(),
        client_sizes=[len(c) for c in clients],
    )
    result = fed.run(trainer, clients, trainer.initial_state())
    assert result is not None
