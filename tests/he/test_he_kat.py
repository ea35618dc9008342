"""Known-answer decryptions of fixed ciphertexts (protocols/vectors/he_kat.json)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from securefl.he.kat import MANIFEST, check_vectors

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def test_stored_ciphertexts_decrypt_to_stored_values() -> None:
    manifest = check_vectors(VECTORS)
    assert manifest["preset"] == "fast"
    assert manifest["released_error_bound"] < 1e-5


def test_tampered_vector_detected(tmp_path: Path) -> None:
    shutil.copy(VECTORS / MANIFEST, tmp_path / MANIFEST)
    shutil.copytree(VECTORS / "he_kat", tmp_path / "he_kat")
    blob = tmp_path / "he_kat" / "aggregate.bin"
    data = bytearray(blob.read_bytes())
    data[-100] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="SHA-256"):
        check_vectors(tmp_path)
