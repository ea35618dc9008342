"""Client-side masking speed: ours vs raw AES-CTR keystream, and vs Flower's masking path.

Importable (``bench_client_mask``, ``bench_flower``; used by ``benchmarks/secagg_bench.py``) and
runnable: ``python benchmarks/secagg_masking.py --quick`` prints one JSON object as its last line.

* ``client_mask_vs_keystream``: one client masks a d-vector with k neighbours — k X25519
  agreements, k+1 HKDF derivations, k+1 AES-128-CTR keystreams added/subtracted in place,
  reduction mod 2^b — divided by the time of raw AES-128-CTR ``update_into`` producing
  (k+1)·4·d bytes in place into a reused cache-sized buffer (the fastest raw form measured here;
  the one-big-buffer form is reported too). Same process, interleaved repeats, medians.
* ``flower_speedup``: Flower 1.41's client masking path (``secaggplus_mod``: weight factor,
  ``quantize``, ``pseudo_rand_gen`` self mask, per neighbour ``generate_shared_key`` +
  ``pseudo_rand_gen`` + add/sub, ``parameters_mod``) divided by ours doing the equivalent work
  (``encode`` at the same precision and clip, then the masking above).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl.crypto import kdf, keys, prg
from securefl.encoding import encode, plan_ring

SESSION = b"bench-session"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _raw_keystream_chunked(nbytes: int) -> Callable[[], None]:
    chunk = prg.CHUNK_BYTES
    buf = bytearray(chunk + 16)
    zeros = bytes(chunk)

    def run() -> None:
        enc = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(bytes(16))).encryptor()
        for _ in range(nbytes // chunk):
            enc.update_into(zeros, buf)
        rest = nbytes % chunk
        if rest:
            enc.update_into(zeros[:rest], buf)

    return run


def _raw_keystream_whole(nbytes: int) -> Callable[[], None]:
    buf = bytearray(nbytes + 16)
    zeros = bytes(nbytes)

    def run() -> None:
        enc = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(bytes(16))).encryptor()
        enc.update_into(zeros, buf)

    return run


class _Client:
    """One client's masking step with its k neighbours' public keys already received."""

    def __init__(self, k: int, me: int = 0) -> None:
        self.me = me
        self.mask_key = keys.generate_x25519()
        self.peers = {j: keys.x25519_public_bytes(keys.generate_x25519()) for j in range(1, k + 1)}
        self.self_seed = os.urandom(32)

    def mask(self, acc: np.ndarray[Any, Any], bits: int) -> None:
        prg_keys = [
            (
                kdf.derive_key(
                    self.self_seed,
                    label=kdf.LABEL_SELF_MASK,
                    session_id=SESSION,
                    round_index=0,
                    party_a=self.me,
                    party_b=self.me,
                    length=prg.PRG_KEY_BYTES,
                ),
                1,
            )
        ]
        for peer, public in self.peers.items():
            secret = keys.exchange(self.mask_key, public)
            key = kdf.derive_pairwise_key(
                secret,
                label=kdf.LABEL_PAIRWISE_MASK,
                session_id=SESSION,
                round_index=0,
                me=self.me,
                peer=peer,
                length=prg.PRG_KEY_BYTES,
            )
            prg_keys.append((key, 1 if self.me < peer else -1))
        prg.add_masks(acc, prg_keys, bits=bits)


def bench_client_mask(d: int = 2**20, k: int = 16, repeats: int = 7) -> dict[str, float]:
    """Seconds (medians) for our client masking and for raw AES-128-CTR of (k+1)·4·d bytes."""
    client = _Client(k)
    base = np.random.default_rng(1).integers(0, 2**31, size=d, dtype=np.uint32)
    acc = base.copy()
    nbytes = (k + 1) * 4 * d
    raw_chunked = _raw_keystream_chunked(nbytes)
    raw_whole = _raw_keystream_whole(nbytes)
    ours, chunked, whole, mask_only = [], [], [], []
    keys_only = [(os.urandom(16), 1) for _ in range(k + 1)]
    for _ in range(repeats + 1):  # first round warms caches and allocators, discarded below
        np.copyto(acc, base)
        ours.append(_time(lambda: client.mask(acc, 31)))
        chunked.append(_time(raw_chunked))
        whole.append(_time(raw_whole))
        mask_only.append(_time(lambda: prg.add_masks(acc, keys_only)))
    med = {
        name: statistics.median(v[1:])
        for name, v in (
            ("client_mask_s", ours),
            ("raw_keystream_s", chunked),
            ("raw_keystream_one_buffer_s", whole),
            ("add_masks_only_s", mask_only),
        )
    }
    raw = min(med["raw_keystream_s"], med["raw_keystream_one_buffer_s"])
    return {
        "d": float(d),
        "k": float(k),
        **med,
        "raw_keystream_gbps": nbytes / raw / 1e9,
        "client_mask_vs_keystream": med["client_mask_s"] / raw,
        "add_masks_only_vs_keystream": med["add_masks_only_s"] / raw,
    }


def _flower_setup(k: int) -> dict[str, Any]:
    from flwr.supercore.primitives.asymmetric import (
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    sk, _ = generate_key_pairs()
    peers = {j: public_key_to_bytes(generate_key_pairs()[1]) for j in range(1, k + 1)}
    return {"sk1": private_key_to_bytes(sk), "peers": peers, "rd_seed": os.urandom(32)}


def _flower_mask(state: dict[str, Any], params: list[np.ndarray[Any, Any]]) -> list[Any]:
    """Lines of flwr 1.41 ``secaggplus_mod._collect_masked_vectors`` after share decryption."""
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    clipping_range, target_range, mod_range = 8.0, 2**22, 2**32  # Flower's defaults
    ratio = 1.0
    q_ratio = round(ratio * target_range)
    dq_ratio = q_ratio / target_range
    parameters = parameters_multiply(params, dq_ratio)
    quantized = quantize(parameters, clipping_range, target_range)
    quantized = factor_combine(q_ratio, quantized)
    dims = [a.shape for a in quantized]
    private_mask = pseudo_rand_gen(state["rd_seed"], mod_range, dims)
    quantized = parameters_addition(quantized, private_mask)
    nid = 0
    for node_id, public in state["peers"].items():
        shared_key = generate_shared_key(
            bytes_to_private_key(state["sk1"]), bytes_to_public_key(public)
        )
        pairwise = pseudo_rand_gen(shared_key, mod_range, dims)
        if nid > node_id:
            quantized = parameters_addition(quantized, pairwise)
        else:
            quantized = parameters_subtraction(quantized, pairwise)
    masked: list[Any] = parameters_mod(quantized, mod_range)
    return masked


def bench_flower(d: int = 2**20, k: int = 16, repeats: int = 3) -> dict[str, float]:
    """Flower's client masking path vs ours (encode + masking), same d, k, clip and precision.

    Flower quantizes [−8, 8] onto 2^22 levels (step 2^−18) and uploads int64 words mod 2^32;
    ours encodes with clip 8 and f = 18 fractional bits into the ring planned for n = 1000
    (b = 32, uint32 words) and masks it.
    """
    x = np.random.default_rng(2).uniform(-1.0, 1.0, size=d)
    state = _flower_setup(k)
    plan = plan_ring(1000, 8.0, 18)
    client = _Client(k)
    flower_t, ours_t, encode_t = [], [], []

    def ours() -> None:
        encoded = encode(x, plan)
        client.mask(encoded.values, plan.bits)

    for _ in range(repeats + 1):
        flower_t.append(_time(lambda: _flower_mask(state, [x])))
        ours_t.append(_time(ours))
        encode_t.append(_time(lambda: encode(x, plan)))
    flower_s = statistics.median(flower_t[1:])
    ours_s = statistics.median(ours_t[1:])
    return {
        "flower_client_mask_s": flower_s,
        "ours_encode_and_mask_s": ours_s,
        "ours_encode_s": statistics.median(encode_t[1:]),
        "flower_speedup": flower_s / ours_s,
        "flower_upload_bytes_per_param": 8.0,
        "upload_bytes_per_param": plan.bits / 8,  # bit-packed (secagg.md §5, wire v2)
        "ring_bits": float(plan.bits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 10 s)")
    parser.add_argument("--d", type=int, default=2**20)
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    result: dict[str, float] = {}
    result.update(bench_client_mask(args.d, args.k, repeats=repeats))
    result.update(bench_flower(args.d, args.k, repeats=3 if args.quick else 7))
    print(json.dumps({key: round(value, 6) for key, value in result.items()}))


if __name__ == "__main__":
    main()
