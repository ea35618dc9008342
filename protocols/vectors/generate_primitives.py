"""Generate ``secagg_primitives.json``: known-answer vectors for securefl's SecAgg primitives.

Run ``python protocols/vectors/generate_primitives.py`` to rewrite the JSON;
``--check`` exits non-zero if the committed file differs from what the code now produces.
Tests (tests/crypto/test_crypto_vectors.py, tests/encoding/test_encoding_vectors.py) check
every entry against the code independently of this script, and that the script reproduces it.
All inputs are fixed byte strings; nothing here is random.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from securefl.crypto import aead, kdf, keys, prg, shamir
from securefl.encoding import decode_sum, encode, plan_ring
from securefl.secagg.params import solve_parameters

VERSION = 1
PATH = Path(__file__).with_name("secagg_primitives.json")


def fixed(label: str, n: int) -> bytes:
    """Deterministic test bytes: SHA-256 counter expansion of a label (documented in the spec)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"securefl-kat/{label}/{i}".encode()).digest()
        i += 1
    return out[:n]


def _kdf() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = [
        {
            "label": kdf.LABEL_PAIRWISE_MASK,
            "session_id": "73657373696f6e2d31",
            "round_index": 0,
            "party_a": 1,
            "party_b": 2,
            "extra": "",
            "length": 16,
        },
        {
            "label": kdf.LABEL_SELF_MASK,
            "session_id": fixed("sid", 32).hex(),
            "round_index": 7,
            "party_a": 5,
            "party_b": 5,
            "extra": fixed("layout", 32).hex(),
            "length": 16,
        },
        {
            "label": kdf.LABEL_SHARE_ENCRYPTION,
            "session_id": fixed("sid", 32).hex(),
            "round_index": 2**32 - 1,
            "party_a": 3,
            "party_b": 4294967295,
            "extra": "00",
            "length": 32,
        },
        {
            "label": kdf.LABEL_NEIGHBOUR_GRAPH,
            "session_id": fixed("sid", 32).hex(),
            "round_index": 1,
            "party_a": 0,
            "party_b": 0,
            "extra": "",
            "length": 32,
        },
    ]
    out = []
    for i, case in enumerate(cases):
        ikm = fixed(f"ikm{i}", 32)
        args = {
            **case,
            "session_id": bytes.fromhex(case["session_id"]),
            "extra": bytes.fromhex(case["extra"]),
        }
        out.append(
            {
                **case,
                "ikm": ikm.hex(),
                "info": kdf.encode_info(**args).hex(),
                "okm": kdf.derive_key(ikm, **args).hex(),
            }
        )
    return out


def _keys() -> dict[str, Any]:
    a = keys.x25519_private_from_bytes(fixed("x25519-a", 32))
    b = keys.x25519_private_from_bytes(fixed("x25519-b", 32))
    signer = keys.ed25519_private_from_bytes(fixed("ed25519", 32))
    message = b"securefl advertise-keys test message"
    return {
        "x25519": {
            "private_a": fixed("x25519-a", 32).hex(),
            "private_b": fixed("x25519-b", 32).hex(),
            "public_a": keys.x25519_public_bytes(a).hex(),
            "public_b": keys.x25519_public_bytes(b).hex(),
            "shared": keys.exchange(a, keys.x25519_public_bytes(b)).hex(),
        },
        "ed25519": {
            "seed": fixed("ed25519", 32).hex(),
            "public": keys.ed25519_public_bytes(signer).hex(),
            "message": message.hex(),
            "signature": keys.sign(signer, message).hex(),
        },
    }


def _aead() -> dict[str, Any]:
    key = fixed("aead-key", 32)
    nonce = aead.direction_nonce(3, 7, 0)
    ad = b"session|round|share-keys|3|7"
    plaintext = fixed("aead-pt", 70)
    return {
        "key": key.hex(),
        "sender": 3,
        "receiver": 7,
        "counter": 0,
        "nonce": nonce.hex(),
        "associated_data": ad.hex(),
        "plaintext": plaintext.hex(),
        "ciphertext": aead.seal(key, nonce, plaintext, ad).hex(),
    }


def _prg() -> list[dict[str, Any]]:
    out = []
    for name, dtype in (("uint32", np.uint32), ("uint64", np.uint64)):
        for i, d in enumerate((8, 5)):
            key = fixed(f"prg-{name}-{i}", 16)
            words = prg.mask_words(key, d, dtype)
            out.append(
                {"key": key.hex(), "dtype": name, "d": d, "words": [str(int(w)) for w in words]}
            )
    acc = np.arange(6, dtype=np.uint32)
    mask_keys = [(fixed("prg-m0", 16), 1), (fixed("prg-m1", 16), -1), (fixed("prg-m2", 16), 1)]
    prg.add_masks(acc, mask_keys)
    out.append(
        {
            "add_masks": [{"key": k.hex(), "sign": s} for k, s in mask_keys],
            "dtype": "uint32",
            "acc_in": [str(i) for i in range(6)],
            "acc_out": [str(int(w)) for w in acc],
        }
    )
    return out


def _shamir() -> list[dict[str, Any]]:
    out = []
    for secret_label, t, holders in (("s1", 2, [0, 1, 2]), ("s2", 3, [4, 9, 17, 100, 2**32 - 2])):
        secret = fixed(secret_label, 32)
        randomness = fixed(f"{secret_label}-coeffs", (t - 1) * shamir.COEFF_RANDOM_BYTES)
        shares = shamir.split(secret, t, holders, randomness=randomness)
        out.append(
            {
                "secret": secret.hex(),
                "threshold": t,
                "holders": holders,
                "randomness": randomness.hex(),
                "shares": {str(h): shares[h].hex() for h in holders},
            }
        )
    return out


def _encoding() -> dict[str, Any]:
    plans = []
    for n, clip, f, w in (
        (1, 1.0, 0, 1.0),
        (100, 1.0, 16, 1.0),
        (1000, 8.0, 18, 1.0),
        (10, 2.0, 8, 3.0),
        (5, 1.0, 40, 1.0),
        (3, 0.1, 20, 0.5),
    ):
        plans.append(
            {
                "n_clients": n,
                "clip": clip,
                "frac_bits": f,
                "max_weight": w,
                "plan": plan_ring(n, clip, f, w).to_dict(),
            }
        )
    encodings = []
    xs = [0.0, 0.5, -0.5, 0.3333333333333333, -0.7071067811865476, 1.5, -2.0, 1e-9, 0.999]
    for n, clip, f, w, weight in (
        (100, 1.0, 16, 1.0, 1.0),
        (10, 2.0, 8, 3.0, 2.5),
        (5, 1.0, 40, 1.0, 1.0),
    ):
        plan = plan_ring(n, clip, f, w)
        key = fixed(f"sround-{n}", 16)
        enc = encode(np.array(xs), plan, weight=weight, rng_key=key)
        encodings.append(
            {
                "plan": {"n_clients": n, "clip": clip, "frac_bits": f, "max_weight": w},
                "x": xs,
                "weight": weight,
                "rng_key": key.hex(),
                "values": [str(int(v)) for v in enc.values],
                "clipped": enc.clipped,
                "decoded": [float(v) for v in decode_sum(enc.values, plan)],
            }
        )
    return {"ring_plans": plans, "encodings": encodings}


def _params() -> list[dict[str, Any]]:
    out = []
    for n, g, d, model in (
        (100, 0.05, 0.05, "semi-honest"),
        (1000, 0.05, 0.05, "semi-honest"),
        (1000, 0.05, 0.05, "semi-malicious"),
        (10**4, 0.05, 0.33, "semi-honest"),
        (1000, 0.33, 0.33, "semi-honest"),
        (7, 0.3, 0.3, "semi-honest"),
    ):
        p = solve_parameters(n, g, d, model=model)
        out.append(
            {
                "n": n,
                "gamma": g,
                "delta": d,
                "model": model,
                "k": p.k,
                "t": p.t,
                "complete_graph": p.complete_graph,
            }
        )
    return out


def build() -> dict[str, Any]:
    """All vectors as one JSON-ready dict."""
    return {
        "version": VERSION,
        "spec": "protocols/secagg-primitives.md",
        "fixed_bytes": "fixed(label, n) = first n bytes of SHA-256('securefl-kat/<label>/<i>') "
        "for i = 0, 1, ...",
        "kdf": _kdf(),
        **_keys(),
        "aead": _aead(),
        "prg": _prg(),
        "shamir": {
            "prime": str(shamir.PRIME),
            "share_bytes": shamir.SHARE_BYTES,
            "cases": _shamir(),
        },
        **_encoding(),
        "secagg_params": _params(),
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="(re)generate secagg_primitives.json")
    parser.add_argument("--check", action="store_true", help="only compare with the file")
    args = parser.parse_args()
    text = render()
    if args.check:
        same = PATH.exists() and PATH.read_text() == text
        print("up to date" if same else f"{PATH} differs from the code's output")
        return 0 if same else 1
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
