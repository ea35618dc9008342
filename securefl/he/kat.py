"""Known-answer vectors: fixed ciphertexts under a fixed (published, test-only) secret key.

TenSEAL can serialise a context with its secret key, so the vectors hold the key holder's
context, two client updates and their aggregate as envelope bytes; ``check_vectors`` decrypts
the stored aggregate, re-aggregates the stored updates, and compares with the stored values.
The inputs lie on the release grid, so the released sum is exact (errors ≪ grid/2).

Regenerate (changes the key and ciphertexts, not the expected values):
``python -m securefl.he.kat protocols/vectors``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from securefl.he.roles import HEClient, HEServer, KeyHolder

MANIFEST = "he_kat.json"
SUBDIR = "he_kat"
INPUTS: list[dict[str, list[Any]]] = [
    {"lora_A": [[0.5, -1.25, 3.0], [0.0, 2.5, -0.75]], "bias": [1.0, -2.0]},
    {"lora_A": [[-0.5, 0.25, 1.0], [4.0, -2.5, 0.125]], "bias": [0.0, 8.0]},
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_vectors(directory: Path) -> None:
    kh = KeyHolder("fast", workers=1)
    client = HEClient(kh.public_context_bytes(), workers=1)
    updates = [client.encrypt({k: np.array(v) for k, v in x.items()}) for x in INPUTS]
    aggregate = HEServer(kh.server_context_bytes()).aggregate(updates)
    blobs = {
        "secret_context.bin": kh.secret_context_bytes(),
        "update_0.bin": updates[0],
        "update_1.bin": updates[1],
        "aggregate.bin": aggregate,
    }
    (directory / SUBDIR).mkdir(parents=True, exist_ok=True)
    for name, data in blobs.items():
        (directory / SUBDIR / name).write_bytes(data)
    expected = {k: (np.array(INPUTS[0][k]) + np.array(INPUTS[1][k])).tolist() for k in INPUTS[0]}
    manifest = {
        "description": "securefl HE (CKKS) known-answer vectors; the secret key is public test "
        "material, never use it for real data",
        "preset": "fast",
        "context_fingerprint": kh.fingerprint.hex(),
        "files": {
            name: {"path": f"{SUBDIR}/{name}", "sha256": _sha(d)} for name, d in blobs.items()
        },
        "inputs": INPUTS,
        "expected_sum": expected,
        "released_error_bound": kh.decrypt_result(aggregate).metadata["released_error_bound"],
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def check_vectors(directory: Path) -> dict[str, Any]:
    """Raise AssertionError unless the stored vectors decrypt to the stored values."""
    manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    blobs = {}
    for name, entry in manifest["files"].items():
        data = (directory / entry["path"]).read_bytes()
        if _sha(data) != entry["sha256"]:
            raise AssertionError(f"{name}: SHA-256 differs from the manifest")
        blobs[name] = data
    kh = KeyHolder.from_secret_context_bytes(blobs["secret_context.bin"], workers=1)
    if kh.fingerprint.hex() != manifest["context_fingerprint"]:
        raise AssertionError("context fingerprint differs from the manifest")
    expected = {k: np.array(v) for k, v in manifest["expected_sum"].items()}
    again = HEServer(kh.server_context_bytes()).aggregate(
        [blobs["update_0.bin"], blobs["update_1.bin"]]
    )
    for label, aggregate in (("stored aggregate", blobs["aggregate.bin"]), ("re-sum", again)):
        got = kh.decrypt(aggregate)
        for k, want in expected.items():
            if not np.array_equal(got[k], want):
                raise AssertionError(f"{label}: {k} = {got[k].tolist()}, want {want.tolist()}")
    return manifest


if __name__ == "__main__":
    write_vectors(Path(sys.argv[1] if len(sys.argv) > 1 else "protocols/vectors"))
