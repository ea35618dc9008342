"""The frozen-prefix feature cache: training through it equals the uncached path (dropout off)
in the per-client loop, DP-SGD and the batched trainer; it is bounded, content-keyed and drops
its entries when the frozen weights change."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from securefl.errors import ConfigurationError
from securefl.fl.client import TrainSpec, client_step
from securefl.fl.config import RunConfig
from securefl.fl.data import TextDataset, synthetic_topics
from securefl.fl.model import AdapterModel
from securefl.train import BatchedClientTrainer, FeatureCache, FrozenPrefix, first_trained_layer
from securefl.train.frozen import tokenize_texts

ROUND, SEED = 2, 5
HEAD = (("classifier",), None)
TOP = (("query", "value", "classifier"), (1,))
ALL = (("query", "value", "classifier"), None)


def _model(adapter: tuple[tuple[str, ...], Any], dropout: bool = False) -> AdapterModel:
    import torch

    targets, layers = adapter
    model = AdapterModel(
        "tiny",
        num_labels=4,
        lora_r=4,
        lora_alpha=8.0,
        lora_targets=targets,
        max_length=32,
        seed=0,
        device="cpu",
        lora_layers=layers,
    )
    if not dropout:
        for module in model.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model


@pytest.fixture(scope="module")
def pool() -> TextDataset:
    return synthetic_topics(300, seed=0)


def _clients(pool: TextDataset, sizes: list[int]) -> list[TextDataset]:
    out, start = [], 0
    for n in sizes:
        out.append(pool.subset(range(start, start + n)))
        start += n
    return out


def _global(model: AdapterModel) -> np.ndarray:
    rng = np.random.default_rng(1)
    return model.get_flat() + rng.normal(0.0, 0.01, model.layout.size)


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def test_the_cut_is_the_first_layer_the_adapter_touches() -> None:
    head, top, everywhere = _model(HEAD), _model(TOP), _model(ALL)
    assert first_trained_layer(head) == 3  # 2 layers + pooler: the head alone
    assert first_trained_layer(top) == 1
    assert first_trained_layer(everywhere) == 0
    assert FrozenPrefix.of(everywhere) is None
    assert FeatureCache.for_model(everywhere) is None
    prefix = FrozenPrefix.of(head)
    assert prefix is not None and prefix.kind == "head" and not prefix.sequence
    top_prefix = FrozenPrefix.of(top)
    assert top_prefix is not None and top_prefix.kind == "layer1" and top_prefix.sequence


@pytest.mark.parametrize("adapter", [HEAD, TOP], ids=["head", "top_layer"])
def test_loop_through_the_cache_equals_the_uncached_loop(
    adapter: tuple[tuple[str, ...], Any], pool: TextDataset
) -> None:
    model = _model(adapter)
    cache = FeatureCache.for_model(model)
    assert cache is not None
    flat = _global(model)
    spec = TrainSpec(epochs=2, batch_size=4, lr=1e-2)
    for cid, data in enumerate(_clients(pool, [13, 7, 1])):
        ref = client_step(model, flat, data, spec, client_id=cid, round_index=ROUND, seed=SEED)
        got = client_step(
            model,
            flat,
            data,
            spec,
            client_id=cid,
            round_index=ROUND,
            seed=SEED,
            feature_cache=cache,
        )
        assert got.local_steps == ref.local_steps
        assert _rel(got.delta, ref.delta) <= 1e-5
        assert got.train_loss == pytest.approx(ref.train_loss, rel=1e-5)
    assert cache.stats.hits > 0  # epoch 2 reads what epoch 1 filled


@pytest.mark.parametrize("adapter", [HEAD, TOP], ids=["head", "top_layer"])
def test_batched_through_the_cache_equals_the_uncached_loop(
    adapter: tuple[tuple[str, ...], Any], pool: TextDataset
) -> None:
    model = _model(adapter)
    clients = _clients(pool, [5, 13, 9, 1, 20])
    ids = [10 + i for i in range(len(clients))]
    flat = _global(model)
    free = TrainSpec(epochs=2, batch_size=4, lr=1e-2)
    norms = [
        np.linalg.norm(
            client_step(model, flat, c, free, client_id=i, round_index=ROUND, seed=SEED).delta
        )
        for i, c in zip(ids, clients, strict=True)
    ]
    spec = TrainSpec(epochs=2, batch_size=4, lr=1e-2, clip=float(np.median(norms)) * 1.001)
    steps = [
        client_step(model, flat, c, spec, client_id=i, round_index=ROUND, seed=SEED)
        for i, c in zip(ids, clients, strict=True)
    ]
    ref = np.stack([u.delta for u in steps])
    trainer = BatchedClientTrainer(
        model, spec, chunk_size=2, token_budget=48, feature_cache=FeatureCache.for_model(model)
    )
    updates = list(
        trainer.client_updates(flat, clients, client_ids=ids, round_index=ROUND, seed=SEED)
    )
    # the adaptive-clipping bit travels with the update, as client_step sets it
    assert [u.clip_indicator for u in updates] == [u.clip_indicator for u in steps]
    assert {u.clip_indicator for u in steps} == {0, 1}
    for _ in range(2):  # cold, then warm
        got = np.concatenate(
            [
                chunk.deltas
                for chunk in trainer.train_chunks(
                    flat, clients, client_ids=ids, round_index=ROUND, seed=SEED
                )
            ]
        )
        for row in range(len(ids)):
            assert _rel(got[row], ref[row]) <= 1e-5


def test_batched_refuses_another_models_cache() -> None:
    a, b = _model(HEAD), _model(HEAD)
    with pytest.raises(ConfigurationError) as err:
        BatchedClientTrainer(a, TrainSpec(1, 4, 0.1), feature_cache=FeatureCache.for_model(b))
    assert err.value.parameter == "feature_cache"


@pytest.mark.parametrize("adapter", [HEAD, TOP], ids=["head", "top_layer"])
def test_dp_sgd_through_the_cache_equals_uncached_dp_sgd(
    adapter: tuple[tuple[str, ...], Any], pool: TextDataset
) -> None:
    """Same seeded Poisson sample and noise (test-only key): the per-example gradients of the
    head through the cache are the ones through the whole network."""
    from securefl.dp.sampling import CryptoRandom
    from securefl.fl.local_dp import DpSgdTrainer, client_event

    model = _model(adapter)
    cache = FeatureCache.for_model(model)
    data = _clients(pool, [13])[0]
    spec = TrainSpec(epochs=2, batch_size=4, lr=1e-2)
    trainer = DpSgdTrainer(
        1.0,
        0.5,
        lambda n: client_event(n, 2, 4, 1.0),
        rng=lambda: CryptoRandom(b"k" * 32),
    )
    assert trainer.noise_source["seeded"] is True
    flat = _global(model)
    kwargs: dict[str, Any] = {"client_id": 1, "round_index": ROUND, "seed": SEED}
    ref = client_step(model, flat, data, spec, trainer=trainer, **kwargs)
    got = client_step(model, flat, data, spec, trainer=trainer, feature_cache=cache, **kwargs)
    assert got.local_steps == ref.local_steps
    assert _rel(got.delta, ref.delta) <= 1e-5


def test_prefix_runs_in_eval_mode_even_while_training(pool: TextDataset) -> None:
    """Dropout below the cut is off: the cached value is the deterministic eval output."""
    model = _model(TOP, dropout=True)
    model.model.train()
    ids, types = tokenize_texts(model, pool.texts[:6])
    a = FeatureCache.for_model(model)
    b = FeatureCache.for_model(model)
    assert a is not None and b is not None
    for x, y in zip(a.features(ids, types), b.features(ids, types), strict=True):
        assert np.array_equal(x.numpy(), y.numpy())
    assert model.model.training  # the caller's mode is restored


def test_second_pass_hits_and_keys_are_the_token_ids(pool: TextDataset) -> None:
    model = _model(HEAD)
    cache = FeatureCache.for_model(model)
    assert cache is not None
    ids, types = tokenize_texts(model, pool.texts[:8])
    first = cache.features(ids, types)
    misses = cache.stats.misses
    again = cache.features(ids, types)
    assert cache.stats.misses == misses and cache.stats.hits >= 8
    assert all(x is y for x, y in zip(first, again, strict=True))
    other = [np.concatenate([t[:-1], [t[-2]], t[-1:]]) for t in ids[:1]]  # one token differs
    cache.features(other, None if types is None else [np.zeros_like(other[0])])
    assert cache.stats.misses == misses + 1


def test_byte_limit_evicts_least_recently_used_and_stays_exact(pool: TextDataset) -> None:
    model = _model(TOP)
    full = FeatureCache.for_model(model)
    assert full is not None
    ids, types = tokenize_texts(model, pool.texts[:20])
    ref = full.features(ids, types)
    per_entry = full.stats.bytes // len(full)
    small = FeatureCache(full.prefix, max_bytes=3 * per_entry)
    for _ in range(2):
        got = small.features(ids, types)
        assert small.stats.bytes <= 3 * per_entry
        for x, y in zip(got, ref, strict=True):
            assert np.allclose(x.numpy(), y.numpy(), atol=1e-6)
    assert small.stats.evictions > 0 and len(small) <= 3


def test_changed_frozen_weights_drop_every_entry(pool: TextDataset) -> None:
    import torch

    model = _model(HEAD)
    cache = FeatureCache.for_model(model)
    assert cache is not None
    ids, types = tokenize_texts(model, pool.texts[:4])
    before = [v.clone() for v in cache.features(ids, types)]
    fingerprint = cache.fingerprint
    emb = cache.prefix.encoder.embeddings.word_embeddings.weight
    with torch.no_grad():
        emb.mul_(1.5)  # in place: same tensor, new version counter
    after = cache.features(ids, types)
    assert cache.stats.invalidations == 1 and cache.fingerprint != fingerprint
    assert not np.allclose(before[0].numpy(), after[0].numpy())
    emb.requires_grad_(True)
    with pytest.raises(ConfigurationError) as err:
        cache.features(ids, types)
    assert err.value.parameter == "model"


def test_loading_the_adapter_keeps_the_cache(pool: TextDataset) -> None:
    """set_flat writes LoRA parameters only: above the cut, not part of the fingerprint."""
    model = _model(TOP)
    cache = FeatureCache.for_model(model)
    assert cache is not None
    ids, types = tokenize_texts(model, pool.texts[:4])
    cache.features(ids, types)
    model.set_flat(_global(model))
    cache.features(ids, types)
    assert cache.stats.invalidations == 0 and cache.stats.hits == 4


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": True}, "max_bytes"),
        ({"dtype": "float64"}, "dtype"),
        ({"fill_batch": 0}, "fill_batch"),
    ],
)
def test_bad_cache_settings_are_refused(kwargs: dict[str, Any], param: str) -> None:
    prefix = FrozenPrefix.of(_model(HEAD))
    assert prefix is not None
    with pytest.raises(ConfigurationError) as err:
        FeatureCache(prefix, **kwargs)
    assert err.value.parameter == param


def test_half_precision_storage_is_close(pool: TextDataset) -> None:
    model = _model(HEAD)
    full, half = FeatureCache.for_model(model), FeatureCache.for_model(model, dtype="bfloat16")
    assert full is not None and half is not None
    ids, types = tokenize_texts(model, pool.texts[:4])
    a, _ = full.batch(ids, types)
    b, _ = half.batch(ids, types)
    assert half.stats.bytes < full.stats.bytes
    assert np.allclose(a.numpy(), b.numpy(), atol=2e-2)


def test_run_config_switch() -> None:
    from securefl.fl.run import feature_cache_of

    cfg = RunConfig(model="tiny", lora_targets=("classifier",))
    assert cfg.feature_cache is True
    assert cfg.digest() == cfg.replace(feature_cache=True).digest()
    assert cfg.replace(feature_cache=False).digest() != cfg.digest()
    head = _model(HEAD)
    cache = feature_cache_of(cfg, head)
    assert cache is not None and cache.max_bytes == cfg.feature_cache_mb << 20
    assert feature_cache_of(cfg.replace(feature_cache=False), head) is None
    assert feature_cache_of(cfg, _model(ALL)) is None
    for key, value in (("feature_cache", "yes"), ("feature_cache_mb", 0)):
        with pytest.raises(ConfigurationError) as err:
            cfg.replace(**{key: value})
        assert err.value.parameter == key
