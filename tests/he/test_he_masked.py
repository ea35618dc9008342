"""Mitigation (b): HE over SecAgg-style pairwise-masked ring elements, in 8-bit limbs."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from securefl.crypto.prg import PRG_KEY_BYTES, add_mask
from securefl.errors import ConfigurationError
from securefl.he import HEClient, HEServer, KeyHolder, MalformedCiphertextError
from securefl.he.masked import limbs_to_ring, max_masked_clients, ring_to_limbs

BITS = 32


def test_limb_roundtrip_exact() -> None:
    rng = np.random.default_rng(0)
    ys = [rng.integers(0, 2**BITS, size=100, dtype=np.uint64).astype(np.uint32) for _ in range(7)]
    limb_sum = sum(ring_to_limbs(y, BITS) for y in ys)
    want = sum(y.astype(np.uint64) for y in ys) % 2**BITS
    np.testing.assert_array_equal(limbs_to_ring(limb_sum + 0.1, BITS, 7, 0.25), want)
    with pytest.raises(MalformedCiphertextError):
        limbs_to_ring(limb_sum + 0.4, BITS, 7, 0.25)
    with pytest.raises(MalformedCiphertextError):
        limbs_to_ring(limb_sum, BITS, 1, 0.25)  # sums beyond 1·255
    with pytest.raises(ConfigurationError):
        ring_to_limbs(np.array([2**20], dtype=np.uint32), 16)


def test_masked_updates_hidden_from_key_holder_sum_exact(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    assert max_masked_clients(kh.preset) >= 1000
    n, d = 5, 1024
    rng = np.random.default_rng(1)  # the updates are test data; the mask keys are secrets
    xs = [rng.integers(0, 2**BITS, size=d, dtype=np.uint64).astype(np.uint32) for _ in range(n)]
    pair_keys = {
        (i, j): secrets.token_bytes(PRG_KEY_BYTES) for i in range(n) for j in range(i + 1, n)
    }
    masked = []
    for i, x in enumerate(xs):
        y = x.copy()
        for (a, b), key in pair_keys.items():
            if i in (a, b):
                add_mask(y, key, negate=(i == b))
        masked.append(y)
    client = HEClient(kh.public_context_bytes(), workers=1)
    uploads = [client.encrypt({"masked": ring_to_limbs(y, BITS)}) for y in masked]
    server = HEServer(kh.server_context_bytes())
    result = kh.decrypt_result(server.aggregate(uploads))
    tol = result.metadata["released_error_bound"]
    total = limbs_to_ring(result.tensors["masked"], BITS, n, tol)
    np.testing.assert_array_equal(total, sum(x.astype(np.uint64) for x in xs) % 2**BITS)
    # key holder + server collusion: decrypting client 0 alone yields masked values only.
    alone = limbs_to_ring(kh.decrypt(server.aggregate([uploads[0]]))["masked"], BITS, 1, tol)
    np.testing.assert_array_equal(alone, masked[0])
    assert np.mean(alone == xs[0]) < 0.01
    # uniform in Z_2^32: the mean of y/2^32 is 0.5 ± 5σ (σ = 1/√(12·1024)); false-failure ~6e-7
    assert abs(float(np.mean(alone / 2**BITS)) - 0.5) < 5 / np.sqrt(12 * d)
