"""Client datasets: user CSV/JSONL loading, a built-in synthetic task, non-IID partitions.

Shuffling and partitioning use a seeded numpy generator: they are not security-relevant (no key,
mask or noise comes from here) and must be reproducible so that a resumed run sees the same
clients. Labels are mapped to contiguous ids in sorted order so every party agrees on them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from securefl.fl.errors import DataError


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels in ``range(len(label_names))``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError("texts and labels differ in length", parameter="data")
        k = len(self.label_names)
        if any(not 0 <= y < k for y in self.labels):
            raise DataError(f"labels must lie in [0, {k})", parameter="label")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        return TextDataset(
            tuple(self.texts[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            self.label_names,
        )


# --- user data ----------------------------------------------------------------------------


def _rows_csv(path: Path) -> list[dict[str, object]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise DataError(f"{path} has no header row", parameter="data")
        return [dict(row) for row in reader]


def _rows_jsonl(path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg})", parameter="data"
                ) from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object", parameter="data")
            rows.append(row)
    return rows


def load_text_dataset(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    max_rows: int = 10_000_000,
) -> TextDataset:
    """Load a CSV (header row) or JSONL file with a text and a label column.

    Every row is validated: the text must be a non-empty string, the label a string or an
    integer; with ``label_names`` given, unknown labels are refused (row number in the error).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} not found", parameter="data")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = _rows_csv(p)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _rows_jsonl(p)
    else:
        raise DataError(
            f"unsupported data format {suffix!r} (use .csv or .jsonl)", parameter="data"
        )
    if not rows:
        raise DataError(f"{p} contains no rows", parameter="data")
    if len(rows) > max_rows:
        raise DataError(f"{p} has more than {max_rows} rows", parameter="data")
    texts: list[str] = []
    raw_labels: list[str] = []
    for i, row in enumerate(rows, 1):
        for col in (text_column, label_column):
            if col not in row:
                raise DataError(f"row {i}: missing column {col!r}", parameter=col)
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"row {i}: text must be a non-empty string", parameter=text_column)
        if isinstance(label, bool) or not isinstance(label, str | int) or str(label).strip() == "":
            raise DataError(f"row {i}: label must be a string or integer", parameter=label_column)
        texts.append(text)
        raw_labels.append(str(label).strip())
    names = tuple(label_names) if label_names is not None else tuple(sorted(set(raw_labels)))
    if len(names) < 2:
        raise DataError("need at least two distinct labels", parameter=label_column)
    index = {name: i for i, name in enumerate(names)}
    labels: list[int] = []
    for i, label in enumerate(raw_labels, 1):
        if label not in index:
            raise DataError(f"row {i}: unknown label {label!r}", parameter=label_column)
        labels.append(index[label])
    return TextDataset(tuple(texts), tuple(labels), names)


# --- built-in synthetic task --------------------------------------------------------------

_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sports": (
        ("the team", "our striker", "the goalkeeper", "the coach", "the home side", "the runner"),
        (
            "won the match in extra time",
            "scored twice in the second half",
            "was injured during training",
            "broke the national record",
            "lost the final on penalties",
            "signed a new contract with the club",
            "celebrated the league title",
        ),
    ),
    "technology": (
        (
            "the new laptop",
            "this smartphone",
            "the software update",
            "the startup",
            "the chip",
            "the cloud service",
        ),
        (
            "ships with a faster processor",
            "crashed after the latest patch",
            "improved battery life a lot",
            "released an open source library",
            "uses less memory than before",
            "added support for encryption",
            "went offline for hours",
        ),
    ),
    "food": (
        (
            "the restaurant",
            "my grandmother",
            "the bakery",
            "this recipe",
            "the chef",
            "the street vendor",
        ),
        (
            "serves the best noodle soup",
            "baked fresh bread this morning",
            "needs more garlic and lemon",
            "won a prize for its dessert",
            "cooks rice with saffron",
            "makes spicy tomato sauce",
            "uses butter instead of oil",
        ),
    ),
    "weather": (
        (
            "the forecast",
            "the storm",
            "this morning",
            "the coast",
            "the mountain village",
            "the weekend",
        ),
        (
            "brings heavy rain and wind",
            "turned sunny and warm",
            "will be cold with snow",
            "had thick fog until noon",
            "saw a sudden thunderstorm",
            "is dry with clear skies",
            "expects a heat wave",
        ),
    ),
}
_FILLERS = ("", "", "apparently ", "reportedly ", "as expected ", "once again ", "surprisingly ")


def synthetic_topics(n_examples: int, *, seed: int) -> TextDataset:
    """A deterministic 4-topic sentence classification task (templated, shuffled).

    Easy for a pretrained encoder, hard for a random one: a quick sanity task whose accuracy
    moves within a few federated rounds on 2 cores.
    """
    if n_examples < 8:
        raise DataError("synthetic task needs at least 8 examples", parameter="synthetic_examples")
    rng = np.random.default_rng([seed, 0x5E7])
    names = tuple(sorted(_TOPICS))
    texts: list[str] = []
    labels: list[int] = []
    for i in range(n_examples):
        label = i % len(names)
        subjects, predicates = _TOPICS[names[label]]
        text = (
            f"{subjects[int(rng.integers(len(subjects)))]} "
            f"{_FILLERS[int(rng.integers(len(_FILLERS)))]}"
            f"{predicates[int(rng.integers(len(predicates)))]}"
        )
        texts.append(text)
        labels.append(label)
    order = rng.permutation(n_examples)
    return TextDataset(tuple(texts[i] for i in order), tuple(labels[i] for i in order), names)


def train_test_split(
    data: TextDataset, test_fraction: float, *, seed: int
) -> tuple[TextDataset, TextDataset]:
    """Seeded split into a training pool (partitioned to clients) and a held-out set."""
    n = len(data)
    n_test = max(1, round(n * test_fraction))
    if n_test >= n:
        raise DataError("test_fraction leaves no training data", parameter="test_fraction")
    order = np.random.default_rng([seed, 0x7E57]).permutation(n)
    return data.subset(order[n_test:].tolist()), data.subset(order[:n_test].tolist())


def dirichlet_partition(
    labels: Sequence[int], n_clients: int, alpha: float, *, seed: int, min_size: int = 1
) -> list[list[int]]:
    """Non-IID label-skew partition (Hsu et al. 2019): per class, client shares ~ Dir(α).

    Small α gives each client few classes; α → ∞ approaches IID. Redraws (deterministically)
    until every client holds at least ``min_size`` examples.
    """
    y = np.asarray(labels)
    if n_clients * min_size > len(y):
        raise DataError(
            f"{len(y)} examples cannot give {n_clients} clients {min_size} each",
            parameter="n_clients",
        )
    rng = np.random.default_rng([seed, 0xD1C])
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for cls in np.unique(y):
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [sorted(p) for p in parts]
    raise DataError(
        f"could not give every client {min_size} examples with alpha={alpha}",
        parameter="dirichlet_alpha",
    )
