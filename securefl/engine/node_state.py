"""A node's round state between Flower messages: small fields in ``context.state``, large
ones (the node's ring vector) in an encrypted node-local file.

Flower starts one ClientApp process per message and hands it the node's ``context.state``;
flwr 1.41 pushes that context back to the SuperNode apart from the reply, over its runtime
HTTP API, and only logs a failure, so a context of tens of MB (the d-vector at d = 10^7) can
be lost while the reply still arrives (issue 11). Every bytes field of :data:`SPILL_MIN` or
more therefore goes to its own file under the node's state directory, encrypted with
AES-256-GCM under a fresh random key that lives only in ``context.state``, with the session id
and field name as associated data: the disk alone reveals nothing, and a missing, swapped,
truncated or stale file is refused with :class:`NodeStateError` (``protocols/engine-flower.md``
§4). A file is deleted as soon as its field is overwritten, deleted or the store cleared.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl.errors import ConfigurationError, LocalProtocolError

#: Bytes fields at least this long are spilled to an encrypted file.
SPILL_MIN = 1 << 16
#: Prefix of a spilled field's reference (key ‖ nonce ‖ file name) in ``context.state``.
SPILL_PREFIX = "spill:"
_KEY, _NONCE, _NAME, _TAG = 32, 12, 16, 16
_REF_BYTES = _KEY + _NONCE + _NAME
#: Plaintext is encrypted and decrypted this many bytes at a time (no second d-vector copy).
_CHUNK = 1 << 20
_AD_LABEL = b"securefl/engine/node-state/v1\x00"


class NodeStateError(LocalProtocolError):
    """The node's own spilled round state is missing or fails authentication."""


def state_directory(path: str | os.PathLike[str]) -> Path:
    """``path`` created 0700 if absent; refused unless it is a real directory of this user
    that no one else can enter (the files are encrypted, but nobody else should swap them)."""
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{directory} is not a directory", parameter="state-dir")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{directory} must belong to this user with mode 0700", parameter="state-dir"
        )
    return directory


def _associated_data(session: Any, field: str) -> bytes:
    sid = session if isinstance(session, bytes) else b""
    return _AD_LABEL + len(sid).to_bytes(2, "big") + sid + field.encode()


class NodeStore(MutableMapping[str, Any]):
    """The store a node handler sees; :meth:`persist` gives what goes into ``context.state``.

    ``record`` is the previous ``context.state`` entry; a spilled field is read (and
    authenticated) only when the handler asks for it, and comes back as a ``bytearray``.
    """

    def __init__(self, directory: Path, record: Mapping[str, Any] | None = None) -> None:
        self.directory = directory
        self._data: dict[str, Any] = {}
        self._spilled: dict[str, bytes] = {}
        for key, value in (record or {}).items():
            if key.startswith(SPILL_PREFIX):
                if not isinstance(value, bytes) or len(value) != _REF_BYTES:
                    raise NodeStateError(f"state reference {key!r} is malformed")
                self._spilled[key[len(SPILL_PREFIX) :]] = value
            else:
                self._data[key] = value

    # -- mapping ----------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in self._data:
            return self._data[key]
        if key in self._spilled:
            return self._read(key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._spilled:
            self._drop(key)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._spilled:
            self._drop(key)
        else:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data or key in self._spilled

    def __iter__(self) -> Iterator[str]:
        return iter([*self._data, *self._spilled])

    def __len__(self) -> int:
        return len(self._data) + len(self._spilled)

    def clear(self) -> None:
        """Erase every field; spilled files are deleted (the key in ``context.state`` goes)."""
        for key in list(self._spilled):
            self._drop(key)
        self._data.clear()

    # -- persistence ------------------------------------------------------------------------
    def persist(self) -> dict[str, Any]:
        """Spill every large bytes field; the small record left for ``context.state``."""
        for key, value in list(self._data.items()):
            if isinstance(value, bytes | bytearray) and len(value) >= SPILL_MIN:
                self._write(key, value)
                del self._data[key]
        return {**self._data, **{SPILL_PREFIX + k: ref for k, ref in self._spilled.items()}}

    def _path(self, ref: bytes) -> Path:
        return self.directory / f"{ref[_KEY + _NONCE :].hex()}.state"

    def _write(self, key: str, value: bytes | bytearray) -> None:
        ref = secrets.token_bytes(_REF_BYTES)
        path = self._path(ref)
        encryptor = Cipher(algorithms.AES(ref[:_KEY]), modes.GCM(ref[_KEY:-_NAME])).encryptor()
        encryptor.authenticate_additional_data(_associated_data(self._data.get("session"), key))
        view = memoryview(value)
        state_directory(self.directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                for start in range(0, len(view), _CHUNK):
                    fh.write(encryptor.update(view[start : start + _CHUNK]))
                fh.write(encryptor.finalize())
                fh.write(encryptor.tag)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._spilled[key] = ref

    def _read(self, key: str) -> bytearray:
        ref = self._spilled[key]
        try:
            fd = os.open(self._path(ref), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NodeStateError(f"spilled round state {key!r} is missing") from None
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size - _TAG
            if size < 0:
                raise NodeStateError(f"spilled round state {key!r} is truncated")
            out = bytearray(size)
            if fh.readinto(out) != size:
                raise NodeStateError(f"spilled round state {key!r} is truncated")
            tag = fh.read(_TAG)
        decryptor = Cipher(
            algorithms.AES(ref[:_KEY]), modes.GCM(ref[_KEY:-_NAME], tag, min_tag_length=_TAG)
        ).decryptor()
        decryptor.authenticate_additional_data(_associated_data(self._data.get("session"), key))
        view = memoryview(out)
        try:
            for start in range(0, size, _CHUNK):  # in place, one chunk at a time
                view[start : start + _CHUNK] = decryptor.update(view[start : start + _CHUNK])
            decryptor.finalize()
        except (InvalidTag, ValueError):
            out[:] = bytes(size)  # no unauthenticated plaintext stays behind
            raise NodeStateError(f"spilled round state {key!r} fails authentication") from None
        return out

    def _drop(self, key: str) -> None:
        ref = self._spilled.pop(key)
        self._path(ref).unlink(missing_ok=True)
