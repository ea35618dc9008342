"""Plain-language statements of what each protection does and does not protect against.

Reports must say what the cryptography protects and what it leaves to DP (NIST SP 800-226 §3
"trust model"; Ponomareva et al. 2023 §5.3). These texts are deliberately conservative and
are parameterised only by recorded values (threshold, degree, modulus bits, HE preset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _weakening(agg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The recorded ``weakened_threat_model`` of an aggregation payload (merged payloads hold
    a list of JSON texts when runs differ: any one of them weakens the claim)."""
    raw = agg.get("weakened_threat_model")
    if isinstance(raw, list) and raw:
        raw = raw[0]
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {"opt_in": raw}
    if raw is None:
        return None
    return raw if isinstance(raw, Mapping) else {"opt_in": str(raw)}


def aggregation_threat_model(agg: Mapping[str, Any]) -> dict[str, Any]:
    """Threat-model entry for one recorded ``aggregation`` payload."""
    protocol = str(agg.get("protocol", "unknown"))
    t, k, bits = agg.get("threshold"), agg.get("degree"), agg.get("modulus_bits")
    params = {key: agg[key] for key in sorted(agg) if key != "protocol"}
    common_not = [
        "what the released aggregate and the final model reveal about a unit (only the DP"
        " guarantee bounds that)",
        "Sybil clients controlled by the server: thresholds count responders, not honest ones",
        "model poisoning or backdoors by malicious clients (no robustness is claimed)",
    ]
    if protocol == "plaintext":
        return {
            "protocol": protocol,
            "parameters": params,
            "protects_against": [],
            "does_not_protect_against": [
                "the server (or anyone who reads its memory or logs) sees every individual"
                " client update in the clear",
                *common_not,
            ],
        }
    if protocol in {"secagg", "secagg+"}:
        graph = (
            "complete graph (SecAgg, Bonawitz et al. 2017)"
            if protocol == "secagg" or k is None
            else f"random k-regular graph of degree {k} (SecAgg+, Bell et al. 2020)"
        )
        return {
            "protocol": protocol,
            "parameters": params,
            "protects_against": [
                f"an honest-but-curious server learning any individual update: it only obtains"
                f" the modular sum over at least t = {t} surviving clients (smallest threshold"
                f" recorded); {graph}"
                if t is not None
                else f"an honest-but-curious server learning any individual update (threshold"
                f" not recorded); {graph}",
                "up to t − 1 colluding clients (together with the server) recovering a mask",
                f"overflow silently corrupting the sum: modulus 2^{bits} planned for the cohort"
                if bits is not None
                else "overflow: the ring is planned for the cohort size and clip bound",
                "replay and mask reuse across rounds (fresh keys per round, ids bound in the KDF)",
            ],
            "does_not_protect_against": [
                "a malicious server unless t > 2n/3 (complete graph) or the SecAgg+ parameters"
                " were chosen for the semi-malicious model",
                "a cohort smaller than the threshold being forced by dropouts: the round aborts"
                " rather than releasing a small sum",
                *common_not,
            ],
        }
    if protocol == "he-ckks":
        preset = agg.get("he_preset")
        weakened = _weakening(agg)
        reads = (
            f"the aggregation server reading individual updates: it adds CKKS ciphertexts"
            f" under a key it does not hold (preset {preset}, ≥128-bit security by the HE"
            " standard)"
        )
        opt_in: list[str] = []
        if weakened is not None:  # he × no DP on an engine (engine-flower.md)
            reads = (
                f"a passive aggregation server reading individual updates from the ciphertexts"
                f" it adds (preset {preset}); an active one is NOT prevented, see below"
            )
            opt_in = [
                "WEAKENED BY A RECORDED OPT-IN ("
                + str(weakened.get("opt_in", "unnamed"))
                + "): the key holder does not check what it decrypts, so the server may obtain "
                + str(weakened.get("server_may_obtain", "a decryption of its choice"))
            ]
        return {
            "protocol": protocol,
            "parameters": params,
            "protects_against": [reads],
            "does_not_protect_against": [
                *opt_in,
                "collusion of the server with ANY client: clients share one secret key"
                " (TenSEAL has no threshold decryption), so one client + server can decrypt"
                " every individual update",
                "decryption-noise leakage (Li–Micciancio IND-CPA^D) unless the released"
                " aggregate is rounded or noise-flooded, as recorded",
                *common_not,
            ],
        }
    return {
        "protocol": protocol,
        "parameters": params,
        "protects_against": [],
        "does_not_protect_against": [f"unknown protocol “{protocol}”: no claim is made"],
    }


def dp_threat_model(mechanisms: set[str], privacy_unit: str, adjacency: str) -> dict[str, Any]:
    """What the DP guarantee covers and whom it trusts."""
    central = bool(
        mechanisms & {"gaussian", "discrete_gaussian", "zcdp", "discrete_gaussian_tree_increment"}
    )
    distributed = "distributed_discrete_gaussian" in mechanisms
    protects = [
        f"inference about any single {privacy_unit} (membership or attributes) from everything"
        f" released during the accounted rounds, under {adjacency} adjacency, up to (ε, δ)",
    ]
    trust = []
    if central:
        trust.append(
            "central noise: the party adding the noise (server / key holder) is trusted to add"
            " it; secure aggregation hides individual updates from it, not the noiseless sum"
        )
    if distributed:
        trust.append(
            "distributed discrete Gaussian: each client adds its share before masking, so the"
            " server never sees a noiseless sum; accounted for the worst-case number of"
            " contributors after dropouts"
        )
    if "non_private" in mechanisms:
        trust.append("a non-private release was recorded: ε is infinite")
    return {
        "protects_against": protects,
        "trust": trust,
        "does_not_protect_against": [
            "releases outside the ledger (e.g. hyperparameter tuning runs, other models trained"
            " on the same data) unless they were recorded in the same ledger scope",
            "inferences about population-level properties (DP protects individuals, not"
            " aggregate statistics)",
            f"a unit larger than a {privacy_unit} (e.g. one person owning several clients):"
            " group privacy degrades ε linearly in the group size",
        ],
    }


# Mechanism names (leaf DP event types) by where the noise is added.
_CENTRAL = frozenset(
    {"gaussian", "discrete_gaussian", "zcdp", "laplace", "discrete_gaussian_tree_increment"}
)
_DISTRIBUTED = frozenset({"distributed_discrete_gaussian"})


def dp_mode(mechanisms: set[str], recorded_modes: set[str]) -> str:
    """``none``, ``local``, ``distributed``, ``central`` or ``mixed`` (several recorded)."""
    if not mechanisms - {"non_private"} or recorded_modes == {"none"}:
        return "none"
    modes = {m for m in recorded_modes if m in {"local", "distributed", "central"}}
    if not modes:
        if mechanisms & _DISTRIBUTED:
            modes.add("distributed")
        if mechanisms & _CENTRAL:
            modes.add("central")
    return modes.pop() if len(modes) == 1 else "mixed" if modes else "central"


def _trust_row(protocol: str, mode: str, unit: str, weakened: bool = False) -> dict[str, str]:
    """Who must be honest for ε to hold, and who sees individual updates (NIST SP 800-226:
    trust model; central vs local DP)."""
    masked = protocol in {"secagg", "secagg+"}
    he = protocol == "he-ckks"
    if protocol == "plaintext" or not (masked or he):
        sees = "the server sees every individual update"
    elif masked:
        sees = "nobody, unless the server colludes with at least t clients (t = threshold)"
    elif weakened:
        sees = (
            "the server, one update of its choice per round (recorded opt-in: the key holder"
            " decrypts without checking the sum)"
        )
    else:
        sees = "nobody, unless the server colludes with any one client (shared HE key)"
    if mode == "none":
        honest = "no ε holds: there is no differential privacy"
    elif mode == "local":
        honest = (
            "each client's own device (it clips and adds the noise before anything leaves"
            f" it, for each {unit}); no server or other party needs to be trusted for ε"
        )
    elif mode == "distributed":
        honest = (
            "enough clients adding their noise share (as accounted after dropouts), and the"
            " aggregation hiding individual noised updates"
            if masked or he
            else "enough clients adding their noise share; the server sees each update with"
            " only its small share of noise, so ε holds against the model's users, NOT the server"
        )
    else:  # central or mixed
        honest = (
            "the server (it adds the noise to the sum and sees every update)"
            if not (masked or he)
            else "the server to add the noise after unmasking (it sees the noiseless sum, not"
            " individual updates)"
            if masked
            else "the key holder who decrypts the sum and adds the noise"
        )
    return {
        "aggregation": protocol,
        "dp_mode": mode,
        "must_be_honest": honest,
        "sees_updates": sees,
    }


def trust_model(
    protocols: list[str],
    mechanisms: set[str],
    recorded_modes: set[str],
    privacy_unit: str,
    weakened: frozenset[str] = frozenset(),
) -> list[dict[str, str]]:
    """One row per recorded aggregation protocol × the run's DP mode; ``weakened`` names the
    protocols recorded with a ``weakened_threat_model`` opt-in."""
    mode = dp_mode(mechanisms, recorded_modes)
    return [_trust_row(p, mode, privacy_unit, p in weakened) for p in (protocols or ["plaintext"])]
