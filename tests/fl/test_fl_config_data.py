"""RunConfig validation/TOML and data loading/partitioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securefl.errors import ConfigurationError
from securefl.fl.config import RunConfig, from_mapping, load
from securefl.fl.data import (
    dirichlet_partition,
    load_text_dataset,
    synthetic_topics,
    train_test_split,
)
from securefl.fl.errors import DataError, UnsupportedCombinationError


def test_defaults_are_the_main_job() -> None:
    cfg = RunConfig()
    assert cfg.model == "minilm" and cfg.aggregation == "secagg+" and cfg.dp == "distributed"
    assert cfg.effective_budget == cfg.target_epsilon


def test_toml_load_with_sections_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'name = "x"\nrounds = 3\n[model]\nmodel = "tiny"\nlora_targets = ["query"]\n'
        '[dp]\ndp = "none"\n'
    )
    cfg = load(path, rounds=5, aggregation="plain")
    assert (cfg.name, cfg.rounds, cfg.model, cfg.dp, cfg.aggregation) == (
        "x",
        5,
        "tiny",
        "none",
        "plain",
    )
    assert cfg.lora_targets == ("query",)
    assert cfg.effective_budget is None


def test_shipped_cross_device_toml_matches_defaults() -> None:
    """RunConfig() is the cross-device regime; its file says so (the main job is another)."""
    import securefl.fl

    path = Path(securefl.fl.__file__).with_name("cross_device.toml")
    assert load(path).digest() == RunConfig().digest()


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"rounds": 0}, "rounds"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"delta": 0.0}, "delta"),
        ({"clip": float("nan")}, "clip"),
        ({"aggregation": "magic"}, "aggregation"),
        ({"sampling": "fixed", "clients_per_round": 99, "n_clients": 10}, "clients_per_round"),
        ({"bogus": 1}, "config"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, object], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        from_mapping({**RunConfig().to_dict(), **changes})
    assert info.value.parameter == param


@pytest.mark.parametrize("aggregation", ["plain", "he"])
def test_distributed_dp_needs_masking(aggregation: str) -> None:
    with pytest.raises(UnsupportedCombinationError, match="masking secure aggregation"):
        RunConfig(aggregation=aggregation, dp="distributed")  # type: ignore[arg-type]


def test_noise_without_dp_refused() -> None:
    with pytest.raises(UnsupportedCombinationError):
        RunConfig(dp="none", noise_multiplier=1.0)


def test_csv_and_jsonl_loading(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\nhello world,pos\nawful day,neg\nnice,pos\n")
    ds = load_text_dataset(csv_path)
    assert ds.label_names == ("neg", "pos") and ds.labels == (1, 0, 1)
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"t": t, "y": y}) for t, y in [("a b", 1), ("c", 0)]))
    ds2 = load_text_dataset(jl, text_column="t", label_column="y")
    assert ds2.label_names == ("0", "1") and ds2.labels == (1, 0)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "text,label\n,pos\nx,neg\n", "row 1: text"),
        ("b.csv", "text,lbl\nx,pos\n", "missing column 'label'"),
        ("c.jsonl", '{"text": "x", "label": "a"}\nnot json\n', "c.jsonl:2"),
        ("d.jsonl", '{"text": "x", "label": true}\n', "label must be"),
        ("e.txt", "x", "unsupported data format"),
        ("f.csv", "text,label\nx,a\ny,a\n", "two distinct labels"),
    ],
)
def test_bad_user_data_is_refused(tmp_path: Path, name: str, content: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_text_dataset(path)


def test_unknown_label_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nx,a\ny,zzz\n")
    with pytest.raises(DataError, match="row 2: unknown label"):
        load_text_dataset(path, label_names=["a", "b"])
    with pytest.raises(DataError, match="not found"):
        load_text_dataset(tmp_path / "missing.csv")


def test_synthetic_is_deterministic_and_balanced() -> None:
    a, b = synthetic_topics(200, seed=3), synthetic_topics(200, seed=3)
    assert a == b and a != synthetic_topics(200, seed=4)
    assert sorted(a.labels.count(k) for k in range(4)) == [50, 50, 50, 50]


def test_dirichlet_partition_is_a_partition_and_skewed() -> None:
    data = synthetic_topics(400, seed=0)
    train, test = train_test_split(data, 0.2, seed=0)
    assert len(train) + len(test) == 400
    parts = dirichlet_partition(train.labels, 10, 0.1, seed=1)
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(len(train)))
    assert min(len(p) for p in parts) >= 1
    # small alpha: most clients are dominated by one label
    dominant = [
        max(sum(1 for i in p if train.labels[i] == k) for k in range(4)) / len(p) for p in parts
    ]
    assert sum(d > 0.6 for d in dominant) >= 6
    assert parts == dirichlet_partition(train.labels, 10, 0.1, seed=1)


def test_fields_added_later_leave_old_digests_unchanged() -> None:
    """A run directory started before audit_canaries / server_optimizer existed still resumes:
    at their defaults those fields are not part of the config digest."""
    import hashlib
    import json

    cfg = RunConfig()
    later = {"audit_canaries", "server_optimizer", "server_momentum"}
    later |= {"clip_mode", "clip_target_quantile", "clip_lr", "clip_count_noise_std"}
    later |= {"mechanism", "ftrl_max_participations", "ftrl_min_separation"}
    later |= {"feature_cache", "feature_cache_mb", "batched_training"}
    later |= {"allow_he_without_dp"}
    later |= {"server_lr_schedule", "server_lr_warmup", "server_lr_final_ratio"}
    where = {"out", "rounds", "name", "key_dir"}
    body = {k: v for k, v in cfg.to_dict().items() if k not in where | later}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    assert cfg.digest() == hashlib.sha256(text.encode()).hexdigest()
    assert cfg.replace(server_optimizer="fedadam").digest() != cfg.digest()
    assert cfg.replace(server_lr_schedule="cosine").digest() != cfg.digest()
    assert cfg.replace(audit_canaries=100).digest() != cfg.digest()
