"""Batched client training: many clients' LoRA adapters trained in one pass (issue 13 §2)."""

from __future__ import annotations

from securefl.train.batched import (
    BatchedClientTrainer,
    TokenizedClient,
    UpdateChunk,
    client_batches,
    tokenize_client,
    tokenize_clients,
)
from securefl.train.errors import CohortError, TrainingDivergedError, UnsupportedModelError
from securefl.train.frozen import FeatureCache, FrozenPrefix, first_trained_layer
from securefl.train.trainer import BatchedTrainer

__all__ = [
    "BatchedClientTrainer",
    "BatchedTrainer",
    "CohortError",
    "FeatureCache",
    "FrozenPrefix",
    "TokenizedClient",
    "TrainingDivergedError",
    "UnsupportedModelError",
    "UpdateChunk",
    "client_batches",
    "first_trained_layer",
    "tokenize_client",
    "tokenize_clients",
]
