"""What the engine puts inside an FL engine's messages around the SecAgg(+) wire bytes.

A request (server → node) and a reply (node → server) are flat mappings of scalar fields —
exactly what a Flower ``ConfigRecord`` holds — so the same dictionaries travel over any engine.
The SecAgg(+) messages themselves stay the versioned binary format of ``protocols/secagg.md``
§5 (``payload``); the engine adds only what the client needs to *start* a round: the public
round configuration, the ring plan and the global state, and the per-node challenge and binding
signature that tie a client's advertisement to the engine node it came from (spec
``protocols/engine-flower.md``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

from securefl.encoding import RingPlan
from securefl.errors import ConfigurationError, MalformedMessageError
from securefl.secagg import SecAggConfig
from securefl.vocabulary import ThreatModel

#: 2: stage 0 carries a per-node ``challenge`` and its reply a ``binding`` signature
#: (``protocols/engine-flower.md`` §3); a version-1 node refuses version-2 requests.
ENGINE_WIRE_VERSION = 2
#: Flower message type of every SecAgg(+) stage (``ClientApp.train("secagg")``).
MESSAGE_TYPE = "train.secagg"
#: Name of the record inside a Flower ``RecordDict`` and of the node's ``context.state`` entry.
RECORD = "securefl"
STATE_RECORD = "securefl.secagg"
#: ArrayRecord of a message's large bytes fields (masked input, global model, shares): one
#: uint8 ``Array`` per field, stype ``BLOB_STYPE``, holding the field's bytes as they are.
BLOBS_RECORD = "securefl.blobs"
BLOB_STYPE = "securefl.bytes"
#: Bytes fields at least this long travel in the ArrayRecord instead of the ConfigRecord.
INLINE_MAX = 1 << 16
#: Pseudo-stage in which the server learns identities when no registry is configured (TOFU).
HELLO = -1
MAX_CONFIG_BYTES = 1 << 26
_MODEL_LABEL = b"securefl/engine/model/v1\x00"


def encode_config(config: SecAggConfig) -> bytes:
    """Canonical JSON of every public field of a round configuration (ids, keys, t, k, …)."""
    doc = {
        "client_ids": list(config.client_ids),
        "identity_keys": [k.hex() for k in config.identity_keys],
        "threshold": config.threshold,
        "bits": config.bits,
        "dimension": config.dimension,
        "degree": config.degree,
        "min_cohort": config.min_cohort,
        "round_index": config.round_index,
        "layout_digest": config.layout_digest.hex(),
        "model_digest": config.model_digest.hex(),
        "nonce": config.nonce.hex(),
        "threat_model": config.threat_model,
        "corrupt_fraction": config.corrupt_fraction,
        "security_bits": config.security_bits,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_config(data: bytes) -> SecAggConfig:
    """Parse and validate (SecAggConfig re-checks every bound) a configuration from the wire."""
    if not isinstance(data, bytes) or len(data) > MAX_CONFIG_BYTES:
        raise MalformedMessageError("round configuration is not a bounded byte string")
    doc = _json_object(data, "round configuration")
    try:
        return SecAggConfig(
            client_ids=tuple(int(i) for i in doc["client_ids"]),
            identity_keys=tuple(bytes.fromhex(k) for k in doc["identity_keys"]),
            threshold=int(doc["threshold"]),
            bits=int(doc["bits"]),
            dimension=int(doc["dimension"]),
            degree=None if doc["degree"] is None else int(doc["degree"]),
            min_cohort=int(doc["min_cohort"]),
            round_index=int(doc["round_index"]),
            layout_digest=bytes.fromhex(doc["layout_digest"]),
            model_digest=bytes.fromhex(doc["model_digest"]),
            nonce=bytes.fromhex(doc["nonce"]),
            threat_model=ThreatModel.parse(doc["threat_model"], parameter="threat_model"),
            corrupt_fraction=float(doc["corrupt_fraction"]),
            security_bits=float(doc["security_bits"]),
        )
    except ConfigurationError as exc:
        raise MalformedMessageError(f"invalid round configuration: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # OverflowError: int() of an infinite number (JSON 1e400 or Infinity)
        raise MalformedMessageError(f"unparsable round configuration: {exc!r}") from None


def encode_plan(plan: RingPlan) -> str:
    doc = {k: plan.to_dict()[k] for k in ("bits", "frac_bits", "clip", "n_clients", "max_weight")}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def decode_plan(text: str) -> RingPlan:
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        raise MalformedMessageError("ring plan is not a bounded string")
    doc = _json_object(text, "ring plan")
    try:
        return RingPlan.from_dict(doc)
    except ConfigurationError as exc:
        raise MalformedMessageError(f"invalid ring plan: {exc}") from None
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise MalformedMessageError(f"unparsable ring plan: {exc!r}") from None


def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object, or MalformedMessageError (also for nesting deeper than the parser's
    recursion limit, which ``json`` reports as RecursionError)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"{what} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise MalformedMessageError(f"{what} must be a JSON object, not {type(doc).__name__}")
    return doc


def model_digest(global_state: bytes, plan_text: str, round_index: int, task: str) -> bytes:
    """Hash of what the client is asked to train on and how it encodes (Pasquini et al. 2022).

    Bound into the session id via ``SecAggConfig.model_digest``: a client that was handed a
    different global model, ring plan or task than its peers derives other keys, so a server
    cannot single it out with a crafted model.
    """
    h = hashlib.sha256(_MODEL_LABEL)
    for part in (global_state, plan_text.encode(), task.encode()):
        h.update(struct.pack("<Q", len(part)) + part)
    h.update(struct.pack("<I", round_index))
    return h.digest()


def field(record: Mapping[str, Any], name: str, kind: type) -> Any:
    """One typed field of a request/reply; missing or mistyped → MalformedMessageError."""
    if not isinstance(record, Mapping):
        raise MalformedMessageError(f"a record must be a mapping, not {type(record).__name__}")
    value = record.get(name)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise MalformedMessageError(f"field {name!r} is missing or not {kind.__name__}")
    return value


def fixed_bytes(record: Mapping[str, Any], name: str, size: int) -> bytes:
    """A bytes field of exactly ``size`` bytes (challenge, binding signature); anything else
    → MalformedMessageError naming the field."""
    value: bytes = field(record, name, bytes)
    if len(value) != size:
        raise MalformedMessageError(f"field {name!r} must be {size} bytes, not {len(value)}")
    return value
