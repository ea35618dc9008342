"""Round configuration of SecAgg / SecAgg+ and the session id that binds it.

Every party derives the same ``session_id`` from the configuration, so a party with a different
view of the round (other cohort, threshold, tensor layout or global model — the model
inconsistency attack of Pasquini et al., CCS 2022) derives different keys and its masks do not
cancel. The identity keys are the PKI assumption of Bonawitz et al. 2017, §4 (malicious server):
each client's long-term Ed25519 verification key is registered here out of band.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.crypto.keys import Ed25519PublicKey, load_ed25519_public
from securefl.errors import ConfigurationError, SecureFLError
from securefl.secagg.params import min_threshold
from securefl.vocabulary import MAX_CLIENTS, ThreatModel

PROTOCOL_NAME = b"securefl/secagg"
PROTOCOL_VERSION = 1
DIGEST_BYTES = 32
MAX_CLIENT_ID = (1 << 32) - 2  # Shamir x = id + 1 must fit in u32
MAX_DIMENSION = 1 << 27
MAX_NONCE_BYTES = 64
_ZERO_DIGEST = bytes(DIGEST_BYTES)
#: Threat models of spec §1 → the model name of the parameter solver (params.py).
THREAT_MODELS: dict[str, str] = {
    ThreatModel.SEMI_HONEST: "semi-honest",
    ThreatModel.MALICIOUS: "semi-malicious",
}
#: The threat model's byte in the session id (spec §3); fixed, whatever the enum's order.
_THREAT_CODE = {ThreatModel.SEMI_HONEST: 0, ThreatModel.MALICIOUS: 1}


class InsecureThresholdError(ConfigurationError):
    """The threshold t is below what the threat model needs (spec §1, params.min_threshold)."""


def required_threshold(
    n: int,
    neighbour_count: int,
    threat_model: ThreatModel | str,
    corrupt_fraction: float,
    security_bits: float,
) -> int:
    """Smallest t private under ``threat_model`` with ``⌊γn⌋`` corrupt clients (params.py)."""
    model = ThreatModel.parse(threat_model, parameter="threat_model")
    for name, value, lo, hi, top_open in (
        ("corrupt_fraction", corrupt_fraction, 0.0, 1.0, True),
        ("security_bits", security_bits, 1.0, 256.0, False),
    ):
        bad = isinstance(value, bool) or not isinstance(value, int | float)
        if not bad:
            x = float(value)
            bad = not math.isfinite(x) or x < lo or x > hi or (top_open and x == hi)
        if bad:
            span = f"[{lo:g}, {hi:g}{')' if top_open else ']'}"
            raise ConfigurationError(f"must be a finite number in {span}", parameter=name)
    if n < 3:
        return 2
    return min_threshold(
        n,
        neighbour_count,
        float(corrupt_fraction),
        model=model,
        sigma=float(security_bits),
    )


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one SecAgg(+) round, identical at every party.

    ``degree`` is the SecAgg+ neighbour degree k (Bell et al. 2020); ``None`` or k ≥ n−1 gives
    the complete graph of classic SecAgg. ``threshold`` t is the Shamir threshold over each
    client's neighbourhood (shares go to the k neighbours, not to the client itself).
    ``min_cohort`` is the fewest responders an honest client lets the server aggregate over —
    it counts responders, not honest ones (Sybils have no cryptographic fix).

    ``threat_model`` (:class:`~securefl.vocabulary.ThreatModel`; the older strings parse),
    ``corrupt_fraction`` γ (clients that may collude with the server) and ``security_bits`` σ
    (SecAgg+ privacy failure ≤ 2^−σ) fix the smallest admissible threshold
    (:func:`required_threshold`): a config with a lower t raises
    :class:`InsecureThresholdError`. The default is the malicious server — the complete graph
    then needs t > (n + ⌊γn⌋)/2 (Bell et al. 2020 §4) and a non-zero ``model_digest``;
    semi-honest is an explicit opt-in. All three are bound into the session id and appear in
    :meth:`to_dict`.
    """

    client_ids: tuple[int, ...]
    threshold: int
    bits: int
    dimension: int
    identity_keys: tuple[bytes, ...]
    degree: int | None = None
    min_cohort: int = 0
    round_index: int = 0
    layout_digest: bytes = _ZERO_DIGEST
    model_digest: bytes = _ZERO_DIGEST
    nonce: bytes = b""
    threat_model: ThreatModel = ThreatModel.MALICIOUS
    corrupt_fraction: float = 0.0
    security_bits: float = 40.0
    _index: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        model = ThreatModel.parse(self.threat_model, parameter="threat_model")
        object.__setattr__(self, "threat_model", model)
        ids = self.client_ids
        if not isinstance(ids, tuple) or not all(type(i) is int for i in ids):
            raise ConfigurationError("must be a tuple of ints", parameter="client_ids")
        n = len(ids)
        if not 2 <= n <= MAX_CLIENTS:
            raise ConfigurationError(
                f"need 2..{MAX_CLIENTS} clients, got {n}", parameter="client_ids"
            )
        if list(ids) != sorted(set(ids)):
            raise ConfigurationError("must be strictly increasing", parameter="client_ids")
        if ids[0] < 1 or ids[-1] > MAX_CLIENT_ID:
            raise ConfigurationError(f"ids must lie in 1..{MAX_CLIENT_ID}", parameter="client_ids")
        if len(self.identity_keys) != n or any(len(k) != 32 for k in self.identity_keys):
            raise ConfigurationError(
                "need one 32-byte Ed25519 key per client", parameter="identity_keys"
            )
        k = self.neighbour_count
        if self.degree is not None and (type(self.degree) is not int or self.degree < 2):
            raise ConfigurationError("must be None or an int ≥ 2", parameter="degree")
        if type(self.threshold) is not int or not 2 <= self.threshold <= k:
            raise ConfigurationError(
                f"must lie in 2..{k} (the number of neighbours)", parameter="threshold"
            )
        if type(self.bits) is not int or not 1 <= self.bits <= 64:
            raise ConfigurationError("must lie in 1..64", parameter="bits")
        if type(self.dimension) is not int or not 1 <= self.dimension <= MAX_DIMENSION:
            raise ConfigurationError(f"must lie in 1..{MAX_DIMENSION}", parameter="dimension")
        if type(self.min_cohort) is not int or not 0 <= self.min_cohort <= n:
            raise ConfigurationError(f"must lie in 0..{n}", parameter="min_cohort")
        if type(self.round_index) is not int or not 0 <= self.round_index < (1 << 32):
            raise ConfigurationError("must lie in 0..2^32-1", parameter="round_index")
        for name in ("layout_digest", "model_digest"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
                raise ConfigurationError(f"must be {DIGEST_BYTES} bytes", parameter=name)
        if model is ThreatModel.MALICIOUS and self.model_digest == _ZERO_DIGEST:
            raise ConfigurationError(
                "a malicious-server round must bind the hash of the global model and round "
                "configuration (Pasquini et al. 2022); all zeros means 'no model'",
                parameter="model_digest",
            )
        if not isinstance(self.nonce, bytes) or len(self.nonce) > MAX_NONCE_BYTES:
            raise ConfigurationError(f"at most {MAX_NONCE_BYTES} bytes", parameter="nonce")
        need = required_threshold(
            n, k, self.threat_model, self.corrupt_fraction, self.security_bits
        )
        if self.threshold < need:
            raise InsecureThresholdError(
                f"t = {self.threshold} < {need}, the smallest threshold private against a "
                f"{model.value} server with {math.floor(self.corrupt_fraction * n + 1e-12)} "
                f"corrupt clients (n = {n}, {k} neighbours)",
                parameter="threshold",
            )
        self._index.update({cid: i for i, cid in enumerate(ids)})
        for cid in ids:
            try:
                self.identity_public(cid)
            except SecureFLError:
                raise ConfigurationError(
                    f"key of client {cid} is not an Ed25519 public key", parameter="identity_keys"
                ) from None

    @classmethod
    def create(
        cls,
        identity_keys: Mapping[int, bytes],
        *,
        threshold: int,
        bits: int,
        dimension: int,
        degree: int | None = None,
        min_cohort: int = 0,
        round_index: int = 0,
        layout_digest: bytes = _ZERO_DIGEST,
        model_digest: bytes = _ZERO_DIGEST,
        nonce: bytes = b"",
        threat_model: ThreatModel | str = ThreatModel.MALICIOUS,
        corrupt_fraction: float = 0.0,
        security_bits: float = 40.0,
    ) -> SecAggConfig:
        """Build a config from ``{client id: Ed25519 public key}`` (ids sorted for you)."""
        ids = tuple(sorted(identity_keys))
        return cls(
            client_ids=ids,
            threshold=threshold,
            bits=bits,
            dimension=dimension,
            identity_keys=tuple(bytes(identity_keys[i]) for i in ids),
            degree=degree,
            min_cohort=min_cohort,
            round_index=round_index,
            layout_digest=layout_digest,
            model_digest=model_digest,
            nonce=nonce,
            threat_model=ThreatModel.parse(threat_model, parameter="threat_model"),
            corrupt_fraction=corrupt_fraction,
            security_bits=security_bits,
        )

    def to_dict(self) -> dict[str, Any]:
        """The public parameters as JSON-ready values (for ledgers and reports): what was
        agreed, including the threat model, so a semi-honest opt-in is on the record."""
        return {
            "protocol_version": PROTOCOL_VERSION,
            "session_id": self.session_id.hex(),
            "client_ids": list(self.client_ids),
            "threshold": self.threshold,
            "degree": self.degree,
            "neighbour_count": self.neighbour_count,
            "bits": self.bits,
            "dimension": self.dimension,
            "min_cohort": self.min_cohort,
            "round_index": self.round_index,
            "layout_digest": self.layout_digest.hex(),
            "model_digest": self.model_digest.hex(),
            "nonce": self.nonce.hex(),
            "threat_model": self.threat_model.value,
            "corrupt_fraction": self.corrupt_fraction,
            "security_bits": self.security_bits,
            "min_safe_threshold": self.min_safe_threshold,
        }

    @property
    def n(self) -> int:
        return len(self.client_ids)

    @property
    def is_complete(self) -> bool:
        """True for classic SecAgg: every client is every other client's neighbour (k = None,
        or k rounded up to even reaches n − 1)."""
        return self.degree is None or self.degree + (self.degree % 2) >= self.n - 1

    @property
    def neighbour_count(self) -> int:
        """Number of neighbours of every client (k rounded up to even, see graph.py)."""
        if self.is_complete:
            return self.n - 1
        assert self.degree is not None
        return self.degree + (self.degree % 2)

    @property
    def effective_min_cohort(self) -> int:
        """Fewest responders accepted at any stage: max(min_cohort, t)."""
        return max(self.min_cohort, self.threshold)

    @property
    def min_safe_threshold(self) -> int:
        """The smallest t this config's threat model admits (``t ≥`` it is enforced)."""
        return required_threshold(
            self.n,
            self.neighbour_count,
            self.threat_model,
            self.corrupt_fraction,
            self.security_bits,
        )

    @property
    def word_bytes(self) -> int:
        """Bytes per masked parameter in memory: 4 for b ≤ 32 (uint32), else 8 (the wire packs
        b bits per parameter, ``protocols/secagg.md`` §5)."""
        return 4 if self.bits <= 32 else 8

    @cached_property
    def id_set(self) -> frozenset[int]:
        return frozenset(self.client_ids)

    @cached_property
    def id_array(self) -> npt.NDArray[np.int64]:
        """The sorted client ids as an array (the wire decoder checks lists against it)."""
        out = np.asarray(self.client_ids, dtype=np.int64)
        out.flags.writeable = False
        return out

    def has_client(self, client_id: int) -> bool:
        return client_id in self._index

    def identity_public(self, client_id: int) -> Ed25519PublicKey:
        """The registered verification key as a loaded object (cached: verified often)."""
        cache: dict[int, Ed25519PublicKey] = self.__dict__.setdefault("_identity_objs", {})
        key = cache.get(client_id)
        if key is None:
            key = cache[client_id] = load_ed25519_public(self.identity_key(client_id))
        return key

    def identity_key(self, client_id: int) -> bytes:
        try:
            return self.identity_keys[self._index[client_id]]
        except KeyError:
            raise ConfigurationError(f"unknown client {client_id}", parameter="client_id") from None

    @cached_property
    def session_id(self) -> bytes:
        """SHA-256 over protocol version and every public parameter of the round (spec §3)."""
        h = hashlib.sha256()
        h.update(PROTOCOL_NAME + b"/session\x00")
        h.update(
            struct.pack(
                "<HIIIIBII",
                PROTOCOL_VERSION,
                self.round_index,
                self.n,
                self.threshold,
                0 if self.degree is None else self.degree,
                self.bits,
                self.dimension,
                self.min_cohort,
            )
        )
        h.update(struct.pack(f"<{self.n}I", *self.client_ids))
        h.update(b"".join(self.identity_keys))
        h.update(self.layout_digest + self.model_digest)
        h.update(struct.pack("<B", len(self.nonce)) + self.nonce)
        h.update(
            struct.pack(
                "<Bdd",
                _THREAT_CODE[self.threat_model],
                float(self.corrupt_fraction),
                float(self.security_bits),
            )
        )
        return h.digest()
