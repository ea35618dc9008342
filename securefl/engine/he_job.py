"""CKKS and plaintext aggregation of the engine job: one upload per client, no masking rounds.

``aggregation = "he"`` (protocols/engine-flower.md §12, he_ckks.md §2–§3). Three roles, each
its own process: the *key holder* (a node whose configuration says so, never a client, never
sampled) holds the CKKS secret key in a file outside any run directory; the *clients* encrypt
their clipped update under its public key; the *server* adds ciphertexts it cannot read.
Per round the server

1. opens the round at the key holder (``KEYHOLDER_OPEN`` with the round's :class:`JobTerms`),
   which checks the terms as a client does and answers with its *public* context only;
2. sends each sampled client's node the terms, the global model and that context
   (``HE_UPLOAD``); the node checks the terms (the checks :class:`JobNode` shares), checks the
   context is the key holder's (the fingerprint it pinned out of band), trains, encrypts and
   signs a receipt (its identity key over the terms, the context and its ciphertext's digest);
3. adds the ciphertexts (:class:`~securefl.he.roles.AggregationSession`); a client that
   dropped or sent garbage is simply not in the sum;
4. sends the key holder the aggregate and the receipts (``KEYHOLDER_DECRYPT``). The key holder
   decrypts only an aggregate of at least ``min_contributions`` receipted clients of the round
   it opened, once per (run, round), adds the central DP noise itself (DP-FedAvg on the 2^-f
   grid, dp ``auto`` = central under CKKS) and returns the released sum.

Who sees what: the server sees ciphertexts and the noisy sum; the key holder sees the
noiseless *sum* only (never a ciphertext of one client); a client sees the global model.

``aggregation = "plain"`` is the explicit, recorded weak mode: each node uploads its clipped
update as float32 (the in-process ``PlainAggregator``'s wire), signed; the server sums them and
sees every one (``server_sees_individual_updates`` in the ledger, as in-process).

Weights are 1 per client, as in the engine's SecAgg(+) rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from securefl.audit.ledger import canonical_json
from securefl.crypto import keys
from securefl.engine.job import (
    HE_UPLOAD,
    KEYHOLDER_DECRYPT,
    KEYHOLDER_OPEN,
    PLAIN_UPLOAD,
    BackendCache,
    JobNode,
    JobTerms,
    Progress,
    RemoteRound,
    job_terms,
    new_node_errors,
    secagg_threat_model,
    verified_backend,
)
from securefl.engine.server import Transport
from securefl.engine.wire import ENGINE_WIRE_VERSION, HELLO
from securefl.engine.wire import field as get_field
from securefl.errors import (
    AbortError,
    ConfigurationError,
    MalformedMessageError,
    SecureFLError,
    UnsafeRequestError,
)
from securefl.fl.aggregation import AggregateOutcome
from securefl.fl.orchestrator import Orchestrator, RoundPlan
from securefl.vocabulary import MAX_CLIENTS

#: Fewest contributions the key holder decrypts (and the server asks it to): one or two
#: contributions would hand it (close to) an individual update (as SecAgg's n ≥ 3).
HE_MIN_CONTRIBUTIONS = 3
KEYHOLDER_ROLE = "keyholder"
_RECEIPT_LABEL = b"securefl/engine/upload-receipt/v1\x00"
_NO_CONTEXT = bytes(32)
#: Largest receipts / metadata text the key holder or server parses.
_MAX_JSON = 1 << 22


# ------------------------------------------------------------------------------ shared
def receipt_message(terms_text: str, context_fingerprint: bytes, payload_digest: bytes) -> bytes:
    """What a client signs for its upload: the round's terms, the context it encrypted to
    (32 zero bytes for plain) and the SHA-256 of its payload."""
    return (
        _RECEIPT_LABEL
        + hashlib.sha256(terms_text.encode()).digest()
        + context_fingerprint
        + payload_digest
    )


def upload_terms(job: JobTerms, cohort: int) -> Any:
    """A CKKS/plain round as a node's policy reads it (no SecAgg threshold or degree)."""
    from securefl.engine.node_terms import RoundTerms
    from securefl.fl.ledger import privacy_unit

    cfg = job.config
    return RoundTerms(
        run_id=job.run_id,
        round_index=job.round_index,
        rounds=cfg.rounds,
        aggregation="ckks" if cfg.aggregation == "he" else cfg.aggregation,
        dp=cfg.dp,
        dp_event=job.event,
        noise_multiplier=job.noise_multiplier,
        clip=cfg.clip if cfg.dp != "none" else None,
        delta=cfg.delta,
        accountant=cfg.accountant,
        threat_model=secagg_threat_model(cfg),
        threshold=None,
        cohort_size=cohort,
        privacy_unit=privacy_unit(cfg),
    )


def _cohort(request: Mapping[str, Any]) -> int:
    n = get_field(request, "cohort", int)
    if not 1 <= n <= MAX_CLIENTS:
        raise MalformedMessageError("cohort size out of range")
    return int(n)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ------------------------------------------------------------------------------ client node
def answer_upload(node: JobNode, request: Mapping[str, Any]) -> dict[str, Any]:
    """A client node's CKKS or plain upload for one round (:meth:`JobNode.handle`)."""
    stage = get_field(request, "stage", int)
    text = get_field(request, "plan", str)
    job = JobTerms.from_text(text)
    want = "he" if stage == HE_UPLOAD else "plain"
    if job.config.aggregation != want:
        raise UnsafeRequestError(
            f"a {want} upload was asked for a run whose aggregation is {job.config.aggregation!r}"
        )
    cohort = _cohort(request)
    checked = node.check_job(job, get_field(request, "global", bytes))
    client = None
    fingerprint = _NO_CONTEXT
    if stage == HE_UPLOAD:
        from securefl.he import HEClient

        if node.key_holder is None:
            raise UnsafeRequestError(
                "this node has no pinned key holder (key-holder-fingerprint): it cannot tell "
                "the key holder's public key from one the server made"
            )
        client = HEClient(get_field(request, "context", bytes))  # refuses a secret context
        fingerprint = client.info.fingerprint
        if fingerprint != node.key_holder:
            raise UnsafeRequestError("the CKKS context is not the pinned key holder's")
        if client.preset.name != job.config.he_preset:
            raise UnsafeRequestError("the CKKS context is not the run's he_preset")
        if cohort < HE_MIN_CONTRIBUTIONS:
            raise UnsafeRequestError(
                f"a CKKS round of {cohort} clients is below {HE_MIN_CONTRIBUTIONS}"
            )
    if node.guard is not None:
        node.guard.admit(upload_terms(job, cohort))  # records the contribution or refusal
    update = node.local_update(checked)
    if client is not None:
        payload = client.encrypt({"delta": update.delta, "weight": np.ones(1)}, weight=1.0)
    else:
        payload = plain_wire(update.delta, 1.0)
    receipt = keys.sign(node.identity.key, receipt_message(text, fingerprint, _digest(payload)))
    return {"client": node.identity.client_id, "payload": payload, "receipt": receipt}


def plain_wire(delta: Any, weight: float) -> bytes:
    """``PlainAggregator``'s wire: little-endian float32 values, then the float64 weight."""
    return np.ascontiguousarray(delta, dtype="<f4").tobytes() + struct.pack("<d", weight)


# ------------------------------------------------------------------------------ key holder
def init_key_holder(path: str | os.PathLike[str], preset: str = "fast") -> bytes:
    """Make a key holder's CKKS secret key (OS randomness, TenSEAL) in ``path`` (mode 0600,
    never overwritten); returns the public-context fingerprint clients pin."""
    from securefl.he import KeyHolder

    holder = KeyHolder(preset)
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} exists; not overwritten", parameter="he-secret-key"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(holder.secret_context_bytes())
    fingerprint: bytes = holder.fingerprint
    return fingerprint


def key_holder_fingerprint(path: str | os.PathLike[str]) -> bytes:
    """The public-context fingerprint of the key in ``path`` (what clients pin)."""
    fingerprint: bytes = _load_holder(Path(path)).fingerprint
    return fingerprint


def _load_holder(path: Path, **kw: Any) -> Any:
    from securefl.he import KeyHolder

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the key holder's secret key {path}: {type(exc).__name__}",
            parameter="he-secret-key",
        ) from None
    return KeyHolder.from_secret_context_bytes(data, **kw)


class KeyHolderNode:
    """The CKKS key holder as an engine node (sans-I/O apart from its key and state files).

    It answers HELLO with its role (so the server never counts it as a client), opens a
    round after checking its terms, and decrypts one aggregate per (run, round) it opened,
    of at least ``min_contributions`` clients whose signed receipts (``registry``) name that
    round. Its state file (which rounds of which run it released) survives its process, as
    Flower starts one per message; a round is marked released *before* the release leaves."""

    def __init__(
        self,
        secret_key: str | os.PathLike[str],
        *,
        registry: Mapping[int, bytes],
        state: str | os.PathLike[str] | None = None,
        min_contributions: int = HE_MIN_CONTRIBUTIONS,
    ) -> None:
        if min_contributions < HE_MIN_CONTRIBUTIONS:
            raise ConfigurationError(
                f"must be at least {HE_MIN_CONTRIBUTIONS}", parameter="min-contributions"
            )
        if not registry:
            raise ConfigurationError("the key holder needs the registry", parameter="registry")
        self.secret_key = Path(secret_key)
        self.registry = dict(registry)
        self.state_path = Path(state) if state else Path(f"{self.secret_key}.rounds.json")
        self.min_contributions = min_contributions
        self._backends: BackendCache = {}

    def handle(self, request: Mapping[str, Any], store: MutableMapping[str, Any]) -> dict[str, Any]:
        store.clear()  # the key holder's state is its state file, never the engine's store
        if get_field(request, "v", int) != ENGINE_WIRE_VERSION:
            raise MalformedMessageError("unsupported engine wire version")
        stage = get_field(request, "stage", int)
        if stage == HELLO:
            return {"role": KEYHOLDER_ROLE}
        if stage == KEYHOLDER_OPEN:
            return self.open(request)
        if stage == KEYHOLDER_DECRYPT:
            return self.decrypt(request)
        raise UnsafeRequestError(f"the key holder answers no stage {stage}")

    # -- requests ---------------------------------------------------------------------------
    def _job(self, text: str) -> tuple[JobTerms, Any]:
        job = JobTerms.from_text(text)
        if job.config.aggregation != "he":
            raise UnsafeRequestError("the key holder serves CKKS rounds only")
        backend = verified_backend(job, self._backends)
        return job, backend

    def open(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = get_field(request, "plan", str)
        job, _ = self._job(text)
        cohort = _cohort(request)
        if cohort < self.min_contributions:
            raise UnsafeRequestError(
                f"a cohort of {cohort} is below this key holder's {self.min_contributions}"
            )
        holder = _load_holder(self.secret_key)
        if holder.preset.name != job.config.he_preset:
            raise UnsafeRequestError(
                f"this key holder's key is preset {holder.preset.name!r}, the run asks for "
                f"{job.config.he_preset!r}"
            )
        state = self._state()
        run = state.setdefault(job.run_id, {"open": None, "terms": None, "released": []})
        if job.round_index in run["released"]:
            raise UnsafeRequestError(f"round {job.round_index} of this run was already released")
        run["open"], run["terms"] = job.round_index, hashlib.sha256(text.encode()).hexdigest()
        self._save(state)
        return {"context": holder.public_context_bytes()}

    def decrypt(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = get_field(request, "plan", str)
        job, backend = self._job(text)
        state = self._state()
        run = state.get(job.run_id)
        if run is not None and job.round_index in run["released"]:
            raise UnsafeRequestError(f"round {job.round_index} of this run was already released")
        if (
            run is None
            or run["open"] != job.round_index
            or run["terms"] != hashlib.sha256(text.encode()).hexdigest()
        ):
            raise UnsafeRequestError("decrypt request for a round this key holder did not open")
        aggregate = get_field(request, "aggregate", bytes)
        receipts = self._receipts(get_field(request, "receipts", str))
        cfg = job.config
        holder = _load_holder(
            self.secret_key,
            noise=getattr(backend.aggregator, "noise", None),
            max_contributions=min(cfg.n_clients, backend.aggregator.preset.max_clients),
        )
        fingerprint = holder.fingerprint
        for client, digest, sig in receipts:
            try:
                keys.verify(self.registry[client], sig, receipt_message(text, fingerprint, digest))
            except SecureFLError:
                raise UnsafeRequestError(
                    f"receipt of client {client} does not verify for this round"
                ) from None
        result = holder.decrypt_result(aggregate, max_dimension=job.dimension + 1)
        if result.metadata.get("contributions") != len(receipts):
            raise UnsafeRequestError(
                "the aggregate's contribution count is not the number of receipted uploads"
            )
        delta = np.asarray(result.tensors.get("delta"), dtype=np.float64)
        weight = np.asarray(result.tensors.get("weight"), dtype=np.float64).reshape(-1)
        if sorted(result.tensors) != ["delta", "weight"] or delta.shape != (job.dimension,):
            raise UnsafeRequestError("the aggregate's layout is not the round's update layout")
        run["released"] = sorted({*run["released"], job.round_index})
        run["open"] = None
        self._save(state)  # recorded before anything leaves: a retry is refused
        reply: dict[str, Any] = {
            "delta": delta.astype("<f8").tobytes(),
            "weight": float(weight[0]),
            "metadata": json.dumps(result.metadata, default=str, sort_keys=True),
        }
        if result.grid_sum is not None:
            reply["grid"] = np.asarray(result.grid_sum, dtype="<i8").tobytes()
        return reply

    def _receipts(self, text: str) -> list[tuple[int, bytes, bytes]]:
        if len(text) > _MAX_JSON:
            raise MalformedMessageError("receipts exceed the size limit")
        try:
            doc = json.loads(text)
            out = [(int(u), bytes.fromhex(d), bytes.fromhex(s)) for u, d, s in doc]
        except (ValueError, TypeError, RecursionError):
            raise MalformedMessageError("receipts are not [[client, digest, signature]]") from None
        clients = [u for u, _, _ in out]
        if len(set(clients)) != len(clients) or any(u not in self.registry for u in clients):
            raise UnsafeRequestError("receipts name a client twice or an unregistered client")
        if any(len(d) != 32 for _, d, _ in out):
            raise MalformedMessageError("a receipt's digest is not 32 bytes")
        if len(out) < self.min_contributions:
            raise UnsafeRequestError(
                f"{len(out)} contributions are below this key holder's {self.min_contributions}"
            )
        return out

    # -- state file -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"key holder state {self.state_path} is unreadable ({type(exc).__name__}); "
                "refusing to release anything",
                parameter="he-state",
            ) from None
        if not isinstance(doc, dict):
            raise ConfigurationError("key holder state is not an object", parameter="he-state")
        return doc

    def _save(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(canonical_json(dict(state)))
        os.replace(tmp, self.state_path)


# ------------------------------------------------------------------------------ server side
def find_key_holder(transport: Transport, *, timeout: float) -> int:
    """The engine node id of the one node that answers HELLO as the key holder."""
    replies = transport.exchange(
        {n: {"v": ENGINE_WIRE_VERSION, "stage": HELLO} for n in transport.node_ids()},
        timeout=timeout,
        round_index=0,
    )
    found = sorted(n for n, rep in replies.items() if rep.get("role") == KEYHOLDER_ROLE)
    if len(found) != 1:
        raise ConfigurationError(
            f"aggregation he needs exactly one key-holder node, {len(found)} answered",
            parameter="key_holder",
        )
    return found[0]


def run_upload_round(
    orch: Orchestrator,
    plan: RoundPlan,
    transport: Transport,
    *,
    registry: Mapping[int, bytes],
    node_of: Mapping[int, int],
    key_holder: int | None,
    stage_timeout: float,
    train_timeout: float | None = None,
    progress: Progress | None = None,
) -> RemoteRound:
    """One CKKS (``key_holder`` set) or plaintext round of the cohort; never raises AbortError."""
    errors_before = dict(getattr(transport, "errors", {}))
    rejected: dict[int, str] = {}
    try:
        outcome = _upload_round(
            orch,
            plan,
            transport,
            registry=registry,
            node_of=node_of,
            key_holder=key_holder,
            stage_timeout=stage_timeout,
            train_timeout=train_timeout if train_timeout is not None else stage_timeout,
            rejected=rejected,
            progress=progress,
        )
    except AbortError as exc:
        return RemoteRound(None, str(exc), rejected, new_node_errors(transport, errors_before))
    return RemoteRound(outcome, "", rejected, new_node_errors(transport, errors_before))


def _upload_round(
    orch: Orchestrator,
    plan: RoundPlan,
    transport: Transport,
    *,
    registry: Mapping[int, bytes],
    node_of: Mapping[int, int],
    key_holder: int | None,
    stage_timeout: float,
    train_timeout: float,
    rejected: dict[int, str],
    progress: Progress | None,
) -> AggregateOutcome:
    he = orch.cfg.aggregation == "he"
    members = sorted(plan.members)
    n = len(members)
    d = orch.model.layout.size
    text = job_terms(orch, plan).to_text()
    base = {"v": ENGINE_WIRE_VERSION, "plan": text, "cohort": n}
    timings: dict[str, Any] = {}
    context = b""
    server = None
    if he:
        if key_holder is None:
            raise AbortError("no key holder for a CKKS round")
        if n < HE_MIN_CONTRIBUTIONS:
            raise AbortError(f"cohort of {n} is too small for CKKS (need ≥ {HE_MIN_CONTRIBUTIONS})")
        t0 = time.perf_counter()
        rep = transport.exchange(
            {key_holder: {**base, "stage": KEYHOLDER_OPEN}},
            timeout=stage_timeout,
            round_index=plan.index,
        ).get(key_holder)
        if rep is None:
            raise AbortError(f"the key holder did not open round {plan.index}")
        from securefl.he import HEServer

        context = get_field(rep, "context", bytes)
        try:
            server = HEServer(context)  # refuses a context that holds a secret key
        except SecureFLError as exc:
            raise AbortError(f"the key holder's context is unusable: {exc}") from None
        timings["open"] = time.perf_counter() - t0
        if progress is not None:
            progress(plan.index, "open")
    global_state = np.ascontiguousarray(plan.global_flat, dtype="<f8").tobytes()
    request: dict[str, Any] = {
        **base,
        "stage": HE_UPLOAD if he else PLAIN_UPLOAD,
        "global": global_state,
    }
    if he:
        request["context"] = context
    client_of = {node_of[c + 1]: c + 1 for c in members if c + 1 in node_of}
    t0 = time.perf_counter()
    replies = transport.exchange(
        dict.fromkeys(client_of, request), timeout=train_timeout, round_index=plan.index
    )
    timings["upload"] = time.perf_counter() - t0
    if progress is not None:
        progress(plan.index, "upload")
    fingerprint = server.info.fingerprint if server is not None else _NO_CONTEXT
    session = server.session() if server is not None else None
    total = np.zeros(d, dtype=np.float64)
    weight_total = 0.0
    receipts: list[list[Any]] = []
    survivors: list[int] = []
    bytes_up = 0
    t0 = time.perf_counter()
    for node, rep in sorted(replies.items()):
        u = client_of[node]
        try:
            if get_field(rep, "client", int) != u:
                raise UnsafeRequestError(f"node answered as another client than {u}")
            payload = get_field(rep, "payload", bytes)
            sig = get_field(rep, "receipt", bytes)
            digest = _digest(payload)
            keys.verify(registry[u], sig, receipt_message(text, fingerprint, digest))
            if session is not None:
                session.add(payload)
            else:
                values, w = _read_plain(payload, d, orch)
                total += w * values
                weight_total += w
        except SecureFLError as exc:
            rejected[node] = f"{type(exc).__name__}: {exc}"
            continue
        receipts.append([u, digest.hex(), sig.hex()])
        survivors.append(u - 1)
        bytes_up += len(payload)
    timings["aggregate"] = time.perf_counter() - t0
    dropped = sorted(set(members) - set(survivors))
    protocol: dict[str, Any]
    noisy_grid = None
    bytes_down = 0
    if session is None:
        if not survivors:
            raise AbortError("no client of the cohort sent an update")
        protocol = {
            "aggregation": "plain",
            "wire": "float32",
            "server_sees_individual_updates": True,
        }
    else:
        if len(survivors) < HE_MIN_CONTRIBUTIONS:
            raise AbortError(
                f"{len(survivors)} CKKS uploads are below the {HE_MIN_CONTRIBUTIONS} the key "
                "holder decrypts"
            )
        assert key_holder is not None
        aggregate = session.finish()
        t0 = time.perf_counter()
        rep = transport.exchange(
            {
                key_holder: {
                    **base,
                    "stage": KEYHOLDER_DECRYPT,
                    "aggregate": aggregate,
                    "receipts": json.dumps(receipts),
                }
            },
            timeout=stage_timeout,
            round_index=plan.index,
        ).get(key_holder)
        timings["decrypt"] = time.perf_counter() - t0
        if progress is not None:
            progress(plan.index, "decrypt")
        if rep is None:
            raise AbortError(f"the key holder released nothing for round {plan.index}")
        total, weight_total, noisy_grid, metadata = _read_release(rep, d, orch)
        bytes_down = len(context) * len(client_of) + len(aggregate)
        protocol = {
            **orch.backend.protocol_info(),
            "release": {str(k): str(v) for k, v in metadata.items()},
            "key_holder": "own node",
        }
    return AggregateOutcome(
        total=total,
        weight_total=weight_total,
        survivors=frozenset(survivors),
        dropped={"upload": dropped} if dropped else {},
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        timings={
            "encode": 0.0,  # on the nodes
            "aggregate": timings["aggregate"],
            "unmask": timings.get("decrypt", 0.0),
            "engine": timings,
        },
        protocol={**protocol, "engine": True},
        noisy_grid=noisy_grid,
    )


def _read_plain(payload: bytes, d: int, orch: Orchestrator) -> tuple[np.ndarray, float]:
    """One plaintext update, checked: size, finite, weight in [0, 1], within the clip."""
    if len(payload) != 4 * d + 8:
        raise MalformedMessageError(f"plain update of {len(payload)} bytes, expected {4 * d + 8}")
    values = np.frombuffer(payload, dtype="<f4", count=d).astype(np.float64)
    w = float(np.frombuffer(payload, dtype="<f8", offset=4 * d)[0])
    if not (np.all(np.isfinite(values)) and np.isfinite(w) and 0.0 <= w <= 1.0):
        raise MalformedMessageError("plain update holds non-finite values or a bad weight")
    cfg = orch.cfg
    if cfg.client_level_dp and float(np.linalg.norm(values)) > cfg.clip * (1 + 1e-6):
        raise UnsafeRequestError(f"plain update's L2 norm exceeds the clip {cfg.clip}")
    return values, w


def _read_release(
    rep: Mapping[str, Any], d: int, orch: Orchestrator
) -> tuple[np.ndarray, float, np.ndarray | None, dict[str, Any]]:
    """The key holder's release, checked before the server uses it."""
    raw = get_field(rep, "delta", bytes)
    if len(raw) != 8 * d:
        raise AbortError("the key holder's release has the wrong size")
    total = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    weight = rep.get("weight")
    if not isinstance(weight, float) or not np.all(np.isfinite(total)) or not np.isfinite(weight):
        raise AbortError("the key holder's release is not finite")
    grid = None
    if orch.cfg.dp == "central":
        g = rep.get("grid")
        if not isinstance(g, bytes) or len(g) != 8 * d:
            raise AbortError("the key holder released no DP-noised grid sum under central DP")
        grid = np.frombuffer(g, dtype="<i8").astype(np.int64)
    text = get_field(rep, "metadata", str)
    try:
        metadata = json.loads(text) if len(text) <= _MAX_JSON else None
    except (ValueError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict):
        raise AbortError("the key holder's release metadata is not a JSON object")
    return total, weight, grid, metadata
