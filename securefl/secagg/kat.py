"""Known-answer vector of one full SecAgg+ round (``protocols/vectors/secagg_round.json``).

All randomness — identity keys, ephemeral keys, self-mask seeds, Shamir coefficients — comes
from :class:`DeterministicRandomness` streams seeded by :func:`securefl.secagg.derive.kat_seed`,
injected through the explicit ``randomness=`` hook. A second implementation that follows
``protocols/secagg.md`` and draws its random bytes in the documented order reproduces every
wire byte. Regenerate with ``python -m securefl.secagg.kat --write``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from securefl.crypto import keys
from securefl.secagg.client import ClientPolicy
from securefl.secagg.config import PROTOCOL_VERSION
from securefl.secagg.derive import kat_seed
from securefl.secagg.graph import neighbours
from securefl.secagg.messages import MaskedInput, decode
from securefl.secagg.randomness import DeterministicRandomness
from securefl.secagg.simulate import DropoutPlan, run_round, simulation_config
from securefl.vocabulary import ThreatModel

VECTOR_PATH = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "secagg_round.json"
N, T, K, D, BITS = 10, 3, 4, 8, 16


def compute_round_vector() -> dict[str, Any]:
    """Run the fixed round and return the vector as a JSON-ready dict."""
    ids = list(range(1, N + 1))
    identities = {
        u: keys.ed25519_private_from_bytes(
            DeterministicRandomness(kat_seed("identity", u)).token_bytes(32)
        )
        for u in ids
    }
    config = simulation_config(
        ids,
        threshold=T,
        bits=BITS,
        dimension=D,
        degree=K,
        round_index=3,
        model_digest=hashlib.sha256(b"kat global model").digest(),
        layout_digest=hashlib.sha256(b"kat layout").digest(),
        identities=identities,
        threat_model=ThreatModel.MALICIOUS,
        corrupt_fraction=0.0,
    )
    graph = neighbours(config)
    # first pair (a, b), a < b, whose loss leaves every client ≥ t live neighbours: a drops
    # before its masked input (its pairwise masks are removed), b during unmasking
    drop_masked, drop_unmask = next(
        (a, b)
        for a in ids
        for b in ids
        if a < b and all(len(set(graph[u]) - {a, b}) >= T for u in ids)
    )
    inputs = {u: ((np.arange(D, dtype=np.uint32) * 1000 + u * 4099) % (1 << BITS)) for u in ids}
    inputs = {u: v.astype(np.uint32) for u, v in inputs.items()}
    randomness = {u: DeterministicRandomness(kat_seed("client", u)) for u in ids}
    transcript: list[tuple[str, int, int, bytes]] = []
    result = run_round(
        inputs,
        config,
        dropouts=DropoutPlan(
            masked_input=frozenset({drop_masked}), unmask=frozenset({drop_unmask})
        ),
        identities=identities,
        randomness=randomness,
        transcript=transcript,
        policy=ClientPolicy(),  # explicit: the safe default, whatever run_round defaults to
    )
    masked = {}
    for _, sender, _, data in transcript:
        msg = decode(data, config=config)
        if isinstance(msg, MaskedInput):
            masked[str(sender)] = [int(x) for x in msg.values]
    plain = np.zeros(D, dtype=np.uint64)
    for u in result.survivors:
        plain += inputs[u].astype(np.uint64)
    plain %= 1 << BITS
    return {
        "description": "One SecAgg+ round, protocols/secagg.md; all randomness injected.",
        "protocol_version": PROTOCOL_VERSION,
        "parameters": {
            "client_ids": ids,
            "threshold": T,
            "degree": K,
            "bits": BITS,
            "dimension": D,
            "round_index": config.round_index,
            "min_cohort": config.min_cohort,
            "model_digest": config.model_digest.hex(),
            "layout_digest": config.layout_digest.hex(),
            "nonce": config.nonce.hex(),
            "threat_model": config.threat_model.value,
            "corrupt_fraction": config.corrupt_fraction,
            "security_bits": config.security_bits,
            "identity_public_keys": {
                str(u): k.hex() for u, k in zip(ids, config.identity_keys, strict=True)
            },
            "identity_seed": (
                "Ed25519 seed of u = first 32 bytes of "
                "DRBG(SHA-256('securefl/secagg/kat/v1/identity/<u>'))"
            ),
            "client_randomness": "DRBG(SHA-256('securefl/secagg/kat/v1/client/<u>'))",
            "drbg": "AES-256-CTR keystream, key = seed, initial counter block 0",
            "inputs": {str(u): [int(x) for x in inputs[u]] for u in ids},
            "dropouts": {"masked_input": [drop_masked], "unmask": [drop_unmask]},
        },
        "session_id": config.session_id.hex(),
        "graph": {str(u): list(v) for u, v in graph.items()},
        "messages": [
            {
                "stage": stage,
                "sender": s,
                "recipient": r,
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            for stage, s, r, data in transcript
        ],
        "transcript_sha256": hashlib.sha256(b"".join(d for *_, d in transcript)).hexdigest(),
        "masked_inputs": masked,
        "survivors": sorted(result.survivors),
        "total": [int(x) for x in result.total],
        "plain_sum_of_survivors": [int(x) for x in plain],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="SecAgg+ round known-answer vector")
    parser.add_argument("--write", action="store_true", help=f"write {VECTOR_PATH}")
    args = parser.parse_args()
    vector = compute_round_vector()
    text = json.dumps(vector, indent=1) + "\n"
    if args.write:
        VECTOR_PATH.parent.mkdir(parents=True, exist_ok=True)
        VECTOR_PATH.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
