"""The crypto primitives reproduce protocols/vectors/secagg_primitives.json exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefl.crypto import aead, kdf, keys, prg, shamir

ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = ROOT / "protocols" / "vectors" / "secagg_primitives.json"
V: dict[str, Any] = json.loads(VECTORS_PATH.read_text())


def _kdf_args(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": case["label"],
        "session_id": bytes.fromhex(case["session_id"]),
        "round_index": case["round_index"],
        "party_a": case["party_a"],
        "party_b": case["party_b"],
        "extra": bytes.fromhex(case["extra"]),
        "length": case["length"],
    }


@pytest.mark.parametrize("case", V["kdf"])
def test_kdf_vectors(case: dict[str, Any]) -> None:
    args = _kdf_args(case)
    assert kdf.encode_info(**args).hex() == case["info"]
    assert kdf.derive_key(bytes.fromhex(case["ikm"]), **args).hex() == case["okm"]


def test_key_vectors() -> None:
    x = V["x25519"]
    a = keys.x25519_private_from_bytes(bytes.fromhex(x["private_a"]))
    b = keys.x25519_private_from_bytes(bytes.fromhex(x["private_b"]))
    assert keys.x25519_public_bytes(a).hex() == x["public_a"]
    assert keys.exchange(a, bytes.fromhex(x["public_b"])).hex() == x["shared"]
    assert keys.exchange(b, bytes.fromhex(x["public_a"])).hex() == x["shared"]
    e = V["ed25519"]
    signer = keys.ed25519_private_from_bytes(bytes.fromhex(e["seed"]))
    assert keys.ed25519_public_bytes(signer).hex() == e["public"]
    assert keys.sign(signer, bytes.fromhex(e["message"])).hex() == e["signature"]
    keys.verify(
        bytes.fromhex(e["public"]), bytes.fromhex(e["signature"]), bytes.fromhex(e["message"])
    )


def test_aead_vector() -> None:
    c = V["aead"]
    nonce = aead.direction_nonce(c["sender"], c["receiver"], c["counter"])
    assert nonce.hex() == c["nonce"]
    key, ad = bytes.fromhex(c["key"]), bytes.fromhex(c["associated_data"])
    ct = aead.seal(key, nonce, bytes.fromhex(c["plaintext"]), ad)
    assert ct.hex() == c["ciphertext"]
    assert aead.open_(key, nonce, ct, ad).hex() == c["plaintext"]


@pytest.mark.parametrize("case", V["prg"])
def test_prg_vectors(case: dict[str, Any]) -> None:
    dtype = np.dtype(case["dtype"])
    if "add_masks" in case:
        acc = np.array([int(w) for w in case["acc_in"]], dtype=dtype)
        prg.add_masks(acc, [(bytes.fromhex(m["key"]), m["sign"]) for m in case["add_masks"]])
        assert [str(int(w)) for w in acc] == case["acc_out"]
        return
    words = prg.mask_words(bytes.fromhex(case["key"]), case["d"], dtype)
    assert [str(int(w)) for w in words] == case["words"]


@pytest.mark.parametrize("case", V["shamir"]["cases"])
def test_shamir_vectors(case: dict[str, Any]) -> None:
    assert V["shamir"]["prime"] == str(shamir.PRIME)
    secret = bytes.fromhex(case["secret"])
    shares = shamir.split(
        secret, case["threshold"], case["holders"], randomness=bytes.fromhex(case["randomness"])
    )
    assert {str(h): s.hex() for h, s in shares.items()} == case["shares"]
    last = dict(list(shares.items())[-case["threshold"] :])
    assert shamir.reconstruct(last, case["threshold"]) == secret


def test_generator_reproduces_the_committed_file() -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_primitives", ROOT / "protocols" / "vectors" / "generate_primitives.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == VECTORS_PATH.read_text()
