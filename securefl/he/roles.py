"""The three roles of CKKS aggregation (protocols/he_ckks.md §2–§3).

``KeyHolder`` makes the secret key and only ever decrypts aggregates; ``HEClient`` encrypts
with the public key; ``HEServer`` adds ciphertexts it cannot read. No role does I/O: bytes in,
bytes out.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigurationError, LocalProtocolError
from securefl.he import _ops, _pool, release, wire
from securefl.he.context import (
    ROLE_PUBLIC,
    ROLE_SECRET,
    ContextInfo,
    load_public_context,
    make_info,
    new_secret_context,
    pack_context,
    public_tenseal_bytes,
    unpack_context,
)
from securefl.he.errors import ContextMismatchError, MalformedCiphertextError
from securefl.he.params import HEPreset, get_preset, raw_error_bound, release_grid, weight_sums
from securefl.tensors import TensorLayout, flatten

#: Default largest flat dimension a server/key holder accepts (2^28 values).
DEFAULT_MAX_DIMENSION = 2**28


def _chunk_lengths(dim: int, slots: int) -> list[int]:
    count = -(-dim // slots)
    return [slots] * (count - 1) + [dim - slots * (count - 1)]


def _precheck_all(env: wire.Envelope, info: ContextInfo, who: str) -> None:
    for j, (chunk, n) in enumerate(
        zip(env.chunks, _chunk_lengths(env.dimension, info.preset.slot_count), strict=True)
    ):
        try:
            wire.precheck_chunk(
                chunk, length=n, scale=info.preset.scale, seal_version=info.seal_version, index=j
            )
        except MalformedCiphertextError as exc:
            raise type(exc)(f"{who}: {exc}") from None


def _receive(
    info: ContextInfo, data: bytes, *, kind: int, level: int, max_dimension: int, who: str
) -> wire.Envelope:
    """Every pre-TenSEAL check of §6 common to updates and aggregates, errors naming ``who``."""
    count = -(-max_dimension // info.preset.slot_count)
    try:
        env = wire.unpack(
            data,
            kind=kind,
            preset_name=info.preset.name,
            context_fingerprint=info.fingerprint,
            slot_count=info.preset.slot_count,
            max_chunk_bytes=info.max_chunk_bytes(level),
            max_bytes=4096 + wire.MAX_LAYOUT_JSON + count * (4 + info.max_chunk_bytes(level)),
        )
        if env.level != level:
            raise MalformedCiphertextError(f"ciphertexts at level {env.level}, expected {level}")
        if env.dimension > max_dimension:
            raise MalformedCiphertextError(f"dimension {env.dimension} exceeds {max_dimension}")
        if env.contributions > info.preset.max_clients:
            raise MalformedCiphertextError(
                f"{env.contributions} contributions exceed the preset's {info.preset.max_clients}"
            )
    except MalformedCiphertextError as exc:
        raise type(exc)(f"{who}: {exc}") from None
    _precheck_all(env, info, who)
    return env


@dataclass(frozen=True)
class HEDecryption:
    """A released aggregate: named tensors plus the record the audit ledger stores."""

    tensors: dict[str, Any]
    metadata: dict[str, object] = field(default_factory=dict)
    #: With central noise: the noisy integer sum on the 2^-f grid of the noised coordinates (in
    #: layout order); ``securefl.dp.fedavg.release(grid_sum, config)`` is the DP-FedAvg average.
    grid_sum: npt.NDArray[np.int64] | None = None


class KeyHolder:
    """Creates the CKKS secret key and decrypts aggregates only (never individual updates).

    Run it apart from the server and from every client (e.g. the compliance team's machine):
    then a server colluding with clients still holds no key (protocols/he_ckks.md §3).

    * ``noise``: central DP added here before release (§7.1); once configured, every release
      is noisy — the key holder is then the only party that sees the noiseless sum.
    * ``max_contributions`` / ``max_server_weight``: the cohort and weight caps the release
      rounding is sized for (§7, IND-CPA^D); the server's claimed count only makes it refuse.
    * ``workers``: 1 (default) keeps the secret key in this process; > 1 is an explicit opt-in
      to worker processes that hold it too (recorded as ``secret_key_processes``).
    """

    def __init__(
        self,
        preset: HEPreset | str = "fast",
        *,
        workers: int = 1,
        policy: release.ReleasePolicy | None = None,
        noise: release.CentralNoise | None = None,
        max_contributions: int | None = None,
        max_server_weight: float = 1.0,
        _secret_ctx: Any = None,
    ) -> None:
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.workers = _pool.resolve_workers(workers)
        self.policy = policy or release.ReleasePolicy()
        if noise is not None and not isinstance(noise, release.CentralNoise):
            raise ConfigurationError(
                "must be a securefl.he.CentralNoise or None", parameter="noise"
            )
        self.noise = noise
        cap = self.preset.max_clients if max_contributions is None else max_contributions
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise ConfigurationError("must be an int ≥ 1", parameter="max_contributions")
        if cap > self.preset.max_clients:
            raise ConfigurationError(
                f"exceeds the preset's max_clients = {self.preset.max_clients}",
                parameter="max_contributions",
            )
        self.max_contributions = cap
        if not (
            isinstance(max_server_weight, int | float)
            and math.isfinite(max_server_weight)
            and max_server_weight > 0
        ):
            raise ConfigurationError(
                "must be a positive finite float", parameter="max_server_weight"
            )
        self.max_server_weight = float(max_server_weight)
        self._ctx = new_secret_context(self.preset) if _secret_ctx is None else _secret_ctx
        self._public_ts = public_tenseal_bytes(self._ctx)
        self._secret_ts: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        self.info = make_info(self._ctx, self.preset, self._public_ts)
        self._pool = _pool.WorkerPool(self.workers)

    @classmethod
    def from_secret_context_bytes(
        cls,
        data: bytes,
        *,
        allow_insecure: bool = False,
        workers: int = 1,
        policy: release.ReleasePolicy | None = None,
        noise: release.CentralNoise | None = None,
        max_contributions: int | None = None,
        max_server_weight: float = 1.0,
    ) -> KeyHolder:
        """Restore a key holder saved with :meth:`secret_context_bytes` (e.g. KAT vectors)."""
        preset, role, ts_bytes = unpack_context(data, allow_insecure=allow_insecure)
        if role != ROLE_SECRET:
            raise ConfigurationError("not a secret-key context", parameter="data")
        import tenseal as ts

        try:
            ctx = ts.context_from(ts_bytes, n_threads=1)
        except Exception as exc:
            raise MalformedCiphertextError(f"TenSEAL cannot load the context ({exc})") from exc
        if not ctx.is_private():
            raise ConfigurationError("context holds no secret key", parameter="data")
        return cls(
            preset,
            workers=workers,
            policy=policy,
            noise=noise,
            max_contributions=max_contributions,
            max_server_weight=max_server_weight,
            _secret_ctx=ctx,
        )

    @property
    def fingerprint(self) -> bytes:
        return self.info.fingerprint

    def public_context_bytes(self) -> bytes:
        """For clients: parameters + public key (no secret, relinearisation or Galois keys)."""
        return pack_context(self.preset, ROLE_PUBLIC, self._public_ts)

    def server_context_bytes(self) -> bytes:
        """For the server: the same public material; the server refuses anything more."""
        return self.public_context_bytes()

    def secret_context_bytes(self) -> bytes:
        """The secret key, for the key holder's own storage only: never send it to anyone."""
        return pack_context(self.preset, ROLE_SECRET, self._secret_ts)

    def close(self) -> None:
        """Stop this key holder's worker processes, if the caller opted into any."""
        self._pool.close()

    def decrypt(
        self,
        aggregate: bytes,
        *,
        max_dimension: int = DEFAULT_MAX_DIMENSION,
        noise: release.CentralNoise | None = None,
    ) -> dict[str, Any]:
        """Decrypt an aggregate and release it (noised / rounded / flooded; see decrypt_result)."""
        return self.decrypt_result(aggregate, max_dimension=max_dimension, noise=noise).tensors

    def _noise_for(self, noise: release.CentralNoise | None) -> release.CentralNoise | None:
        """The configured noise always applies: a call can add noise, never remove or change it."""
        if noise is not None and not isinstance(noise, release.CentralNoise):
            raise ConfigurationError(
                "must be a securefl.he.CentralNoise or None", parameter="noise"
            )
        if self.noise is None:
            return noise
        if noise is not None and noise != self.noise:
            raise LocalProtocolError(
                "this key holder was configured with central noise; a call cannot replace it"
            )
        return self.noise

    def _checked_bound_inputs(self, env: wire.Envelope) -> tuple[int, tuple[float, float] | None]:
        """(n, server weight sums) for the rounding bound, from this key holder's configuration.

        The count and weight sums in the envelope are the server's claims: they may only make
        the key holder refuse (above its configuration), never shrink the grid (issue 12, #4).
        """
        cap = self.max_contributions
        if env.contributions > cap:
            raise MalformedCiphertextError(
                f"aggregate: claims {env.contributions} contributions, this key holder is "
                f"configured for at most {cap} (max_contributions)"
            )
        if not env.flags & wire.FLAG_SERVER_WEIGHTS:
            return cap, None
        w = self.max_server_weight
        w1, w2 = cap * w, cap * w * w
        slack = 1.0 + 1e-9  # the server sums floats in another order
        if not (
            0.0 <= env.server_weight_sum <= w1 * slack
            and 0.0 <= env.server_weight_sq_sum <= w2 * slack
        ):
            raise MalformedCiphertextError(
                "aggregate: server weight sums exceed max_contributions × max_server_weight "
                "(this key holder's configuration)"
            )
        return cap, (w1, w2)

    def decrypt_result(
        self,
        aggregate: bytes,
        *,
        max_dimension: int = DEFAULT_MAX_DIMENSION,
        noise: release.CentralNoise | None = None,
    ) -> HEDecryption:
        """Decrypt an aggregate; release it rounded (policy) and, with central noise, noisy.

        With ``noise`` (here or at construction) the coordinates it covers leave this method
        only as DP-noised values on the 2^-f grid; the noiseless sum never leaves it.
        """
        central = self._noise_for(noise)
        info, level = self.info, self.preset.download_level
        env = _receive(
            info,
            aggregate,
            kind=wire.KIND_AGGREGATE,
            level=level,
            max_dimension=max_dimension,
            who="aggregate",
        )
        n_bound, sums = self._checked_bound_inputs(env)
        layout = TensorLayout.from_json(env.layout_json)  # validated by wire.unpack
        noised = None if central is None else central.coordinates(layout)
        spec = _ops.ChunkSpec(level, info.parms_ids[level], self.preset.scale)
        parts = self._pool.map_ranges(
            len(env.chunks),
            lambda a, b: _ops.decrypt_range(self._ctx, env.chunks[a:b], spec, a),
            lambda a, b: (_ops.task_decrypt, (self._secret_ts, env.chunks[a:b], spec, a)),
        )
        flat = np.concatenate(parts)
        if not np.all(np.abs(flat) <= self.preset.max_abs_sum):
            # admissible sums are < max |Σ|; beyond it a client ignored the limit or the
            # ciphertext is corrupted (garbage decrypts to ~uniform mod q, i.e. huge values)
            raise MalformedCiphertextError(
                "decrypted aggregate exceeds the preset's max |sum|: out-of-range input or a "
                "corrupted ciphertext; nothing released"
            )
        # the floating-point term scales with the magnitude actually decrypted (+ the bound)
        magnitude = float(np.max(np.abs(flat))) + 1.0
        raw = raw_error_bound(self.preset, n_bound, server_weight_sums=sums, max_abs=magnitude)
        grid_sum: npt.NDArray[np.int64] | None = None
        noise_meta: dict[str, object] = {}
        if central is not None and noised is not None:
            grid_sum, noise_meta = release.add_central_noise(flat[noised], raw, central)
            flat[noised] = 0.0  # the noiseless values of these coordinates go no further
        released, rel_meta = release.apply(flat, raw, release_grid(raw), self.policy)
        del flat
        if central is not None and grid_sum is not None and noised is not None:
            released[noised] = grid_sum * 2.0**-central.config.frac_bits
            rel_meta["release"] = "dp_noise+round" if noised.size < layout.size else "dp_noise"
        weighting = {0: "none", 1: "client", 2: "server", 3: "client+server"}[env.flags]
        meta: dict[str, object] = {
            **self.preset.metadata(),
            "context_fingerprint": info.fingerprint.hex(),
            "layout_digest": env.layout_digest.hex(),
            "dimension": env.dimension,
            "ciphertexts": len(env.chunks),
            "contributions": env.contributions,
            "contributions_claimed_by": "server",
            "rounding_sized_for_contributions": n_bound,
            "rounding_sized_for_server_weight_sums": list(sums) if sums else None,
            "weighting": weighting,
            "client_weight_sum": env.client_weight_sum,
            "server_weight_sum": env.server_weight_sum if sums else None,
            "bytes_per_param_download": len(aggregate) / env.dimension,
            "decrypt_workers": self.workers,
            "secret_key_processes": 1 + (self.workers if self.workers > 1 else 0),
            **rel_meta,
            **noise_meta,
        }
        return HEDecryption(layout.unflatten(released), meta, grid_sum)


class HEClient:
    """Encrypts one client's named tensors with the public key (no secret key anywhere)."""

    def __init__(
        self,
        public_context_bytes: bytes,
        *,
        allow_insecure: bool = False,
        workers: int = 1,
    ) -> None:
        self._ctx, self.info, self._ts_bytes = load_public_context(
            public_context_bytes, allow_insecure=allow_insecure
        )
        self.preset = self.info.preset
        self.workers = _pool.resolve_workers(workers)
        self._pool = _pool.WorkerPool(self.workers)

    def close(self) -> None:
        """Stop this client's worker processes, if the caller opted into any."""
        self._pool.close()

    def encrypt(self, named_tensors: Mapping[str, Any], weight: float = 1.0) -> bytes:
        """Flatten (securefl.tensors), multiply by ``weight`` in plaintext, encrypt per chunk."""
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ConfigurationError("must be a finite float ≥ 0", parameter="weight")
        flat, layout = flatten(named_tensors)
        if weight != 1.0:
            flat = flat * float(weight)
        limit = self.preset.max_abs_value
        too_big = [
            spec.name
            for spec, a, b in layout.offsets()
            if b > a and float(np.max(np.abs(flat[a:b]))) > limit
        ]
        if too_big:
            raise ConfigurationError(
                f"|weight·value| exceeds {limit} (preset max_abs_sum / max_clients); clip first",
                parameter=",".join(too_big),
            )
        chunks = self._encrypt_flat(flat)
        return wire.Envelope(
            kind=wire.KIND_UPDATE,
            preset_name=self.preset.name,
            context_fingerprint=self.info.fingerprint,
            layout_digest=layout.digest(),
            flags=wire.FLAG_CLIENT_WEIGHTS if weight != 1.0 else 0,
            client_weight_sum=float(weight),
            server_weight_sum=0.0,
            server_weight_sq_sum=0.0,
            contributions=1,
            level=self.preset.data_prime_count,
            dimension=layout.size,
            layout_json=layout.to_json(),
            chunks=tuple(chunks),
        ).pack()

    def _encrypt_flat(self, flat: npt.NDArray[np.float64]) -> list[bytes]:
        slots = self.preset.slot_count
        n_chunks = -(-flat.shape[0] // slots)
        parts = self._pool.map_ranges(
            n_chunks,
            lambda a, b: _ops.encrypt_range(self._ctx, flat[a * slots : b * slots], slots),
            lambda a, b: (
                _ops.task_encrypt,
                (self._ts_bytes, flat[a * slots : b * slots], slots),
            ),
        )
        return [c for part in parts for c in part]


class HEServer:
    """Adds clients' ciphertexts; holds only a public context and refuses a secret one."""

    def __init__(
        self,
        server_context_bytes: bytes,
        *,
        allow_insecure: bool = False,
        max_dimension: int = DEFAULT_MAX_DIMENSION,
    ) -> None:
        self._ctx, self.info, _ = load_public_context(
            server_context_bytes, allow_insecure=allow_insecure
        )
        self.preset = self.info.preset
        self.max_dimension = max_dimension

    def _unpack_update(self, i: int, data: bytes) -> wire.Envelope:
        who = f"client {i}"
        level = self.preset.data_prime_count
        env = _receive(
            self.info,
            data,
            kind=wire.KIND_UPDATE,
            level=level,
            max_dimension=self.max_dimension,
            who=who,
        )
        client_weighted = env.flags == wire.FLAG_CLIENT_WEIGHTS
        if (
            env.contributions != 1
            or env.flags not in (0, wire.FLAG_CLIENT_WEIGHTS)
            or client_weighted == (env.client_weight_sum == 1.0)
            or env.client_weight_sum < 0
            or struct.pack(">dd", env.server_weight_sum, env.server_weight_sq_sum) != bytes(16)
        ):
            raise MalformedCiphertextError(f"{who}: not a fresh client update (count/weights)")
        return env

    def session(self, *, server_weighting: bool = False) -> AggregationSession:
        """Start a streaming aggregation: ``add`` updates as they arrive (O(d) memory)."""
        return AggregationSession(self, server_weighting=server_weighting)

    def aggregate(self, updates: Sequence[bytes], weights: Sequence[float] | None = None) -> bytes:
        """Σ_i w_i·Enc(x_i) (w_i = 1 without ``weights``), reduced to the download level."""
        if weights is not None and len(weights) != len(updates):
            raise ConfigurationError("one weight per update", parameter="weights")
        if not updates:
            raise ConfigurationError("no updates", parameter="updates")
        agg = self.session(server_weighting=weights is not None)
        for i, update in enumerate(updates):
            agg.add(update, None if weights is None else weights[i])
        return agg.finish()


class AggregationSession:
    """One round's running sum (sans-I/O): each ``add`` validates a whole update first, so a
    malformed one is rejected without touching the sum, and the round can go on without it."""

    def __init__(self, server: HEServer, *, server_weighting: bool) -> None:
        preset = server.preset
        if server_weighting and not preset.server_weighting:
            raise ConfigurationError(
                f"preset {preset.name!r} has no rescale prime: apply weights on the clients "
                "(HEClient.encrypt(weight=…)) or use the 'weighted' preset",
                parameter="weights",
            )
        self._server = server
        self._server_weighting = server_weighting
        level = preset.data_prime_count
        self._in_spec = _ops.ChunkSpec(level, server.info.parms_ids[level], preset.scale)
        self._acc: list[Any] = []
        self._first: wire.Envelope | None = None
        self._flags = wire.FLAG_SERVER_WEIGHTS if server_weighting else 0
        self._client_weight_sum = 0.0
        self._weights: list[float] = []
        self.count = 0
        self._done = False

    def add(self, update: bytes, weight: float | None = None) -> None:
        """Validate one client's update and add it (times ``weight`` on the server)."""
        if self._done:
            raise LocalProtocolError("aggregation already finished")
        preset = self._server.preset
        if self.count >= preset.max_clients:
            raise ConfigurationError(
                f"this preset supports at most {preset.max_clients} updates", parameter="updates"
            )
        if self._server_weighting:
            if weight is None or not math.isfinite(weight) or weight < 0:
                raise ConfigurationError("a finite weight ≥ 0 per update", parameter="weights")
            if sum(self._weights) + weight > preset.max_clients:
                raise ConfigurationError(
                    "Σ weights exceeds max_clients: the sum could wrap", parameter="weights"
                )
        elif weight is not None:
            raise ConfigurationError(
                "server weighting was not chosen for this session", parameter="weights"
            )
        who = f"client {self.count}"
        env = self._server._unpack_update(self.count, update)
        if self._first is not None and env.layout_digest != self._first.layout_digest:
            raise ContextMismatchError(f"{who}: layout differs from client 0's")
        vecs = _ops.load_update(self._server._ctx, env.chunks, self._in_spec, who)
        try:
            _ops.accumulate(self._acc, vecs, float(weight) if weight is not None else None)
        except Exception as exc:  # cannot happen after the checks; if it does, fail closed
            self._done = True
            raise MalformedCiphertextError(f"{who}: TenSEAL rejects the sum ({exc})") from exc
        if self._first is None:
            self._first = env
        self._flags |= env.flags
        self._client_weight_sum += env.client_weight_sum
        if weight is not None:
            self._weights.append(float(weight))
        self.count += 1

    def finish(self) -> bytes:
        """The aggregate envelope, reduced to the download level, for the key holder."""
        if self._first is None:
            raise ConfigurationError("no updates were added", parameter="updates")
        if self._done:
            raise LocalProtocolError("aggregation already finished or failed")
        self._done = True
        preset, info = self._server.preset, self._server.info
        out_level = preset.download_level
        out_spec = _ops.ChunkSpec(out_level, info.parms_ids[out_level], preset.scale)
        reduce = not self._server_weighting and out_level < preset.data_prime_count
        chunks = _ops.finish(self._acc, out_spec, reduce)
        w1, w2 = weight_sums(self._weights) if self._server_weighting else (0.0, 0.0)
        first = self._first
        return wire.Envelope(
            kind=wire.KIND_AGGREGATE,
            preset_name=preset.name,
            context_fingerprint=info.fingerprint,
            layout_digest=first.layout_digest,
            flags=self._flags,
            client_weight_sum=self._client_weight_sum,
            server_weight_sum=w1,
            server_weight_sq_sum=w2,
            contributions=self.count,
            level=out_level,
            dimension=first.dimension,
            layout_json=first.layout_json,
            chunks=tuple(chunks),
        ).pack()


__all__ = ["AggregationSession", "HEClient", "HEDecryption", "HEServer", "KeyHolder"]
