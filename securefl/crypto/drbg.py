"""The one CTR-DRBG: an AES-CTR keystream read as bytes or little-endian words.

Every stream of pseudorandom bytes in securefl (mask PRG, SecAgg+ graph permutation, the
engine's round seed, DP samplers, stochastic rounding, test-vector randomness, the audit demo)
is this construction with its own key: AES in CTR mode (NIST SP 800-38A §6.5) under a 16-,
24- or 32-byte key, initial counter block ``0^128`` unless a 16-byte ``initial_block`` is given,
encrypting zeros. It is the keystream of SP 800-90A's CTR_DRBG without derivation function or
reseeding: the key must be fresh (a new key per stream) and secret for secret uses. The full
128-bit block is the big-endian counter, so one key yields 2^132 bytes before the counter wraps.

Words are read **little-endian** from consecutive keystream bytes (``4i..4i+3`` for uint32,
``8i..8i+7`` for uint64), on every platform.

Speed (``/work/shared/REFERENCE.md``): ``update_into`` a preallocated buffer runs at 7–9 GB/s,
``update()`` (a new bytes object per call) at 1.4 GB/s, so bulk reads go through
:meth:`CtrDrbg.read_into`, and the word readers allocate their result once and fill it in place.
Normative description: ``protocols/secagg-primitives.md`` §10 (and §4, the mask PRG).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from securefl.errors import ConfigurationError

__all__ = ["CHUNK_BYTES", "KEY_SIZES", "CtrDrbg"]

#: AES key lengths in bytes (AES-128, AES-192, AES-256).
KEY_SIZES = (16, 24, 32)
#: Bytes of keystream per ``update_into`` call on long reads (a cache-sized slice of zeros).
CHUNK_BYTES = 128 * 1024
_BLOCK = 16
_ZEROS = bytes(CHUNK_BYTES)
_ZEROS_VIEW = memoryview(_ZEROS)
_ZERO_BLOCK = bytes(_BLOCK)
_LE_U32 = np.dtype("<u4")
_LE_U64 = np.dtype("<u8")


def _count(n: object, parameter: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigurationError("must be a non-negative integer", parameter=parameter)
    return n


class CtrDrbg:
    """AES-CTR keystream of ``key`` from counter block ``initial_block`` (default all zero).

    The stream is consumed in order: any mix of :meth:`read_bytes`, :meth:`read_into`,
    :meth:`uint32` and :meth:`uint64` calls returns consecutive keystream bytes.
    """

    __slots__ = ("_enc",)

    def __init__(self, key: bytes | bytearray, *, initial_block: bytes = _ZERO_BLOCK) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) not in KEY_SIZES:
            got = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise ConfigurationError(
                f"must be 16, 24 or 32 bytes (AES-128/192/256), got {got}", parameter="key"
            )
        if not isinstance(initial_block, bytes) or len(initial_block) != _BLOCK:
            raise ConfigurationError("must be 16 bytes", parameter="initial_block")
        self._enc: CipherContext = Cipher(
            algorithms.AES(bytes(key)), modes.CTR(initial_block)
        ).encryptor()

    def read_into(self, out: Any, nbytes: int | None = None) -> None:
        """Write the next ``nbytes`` keystream bytes (default: all of ``out``) to the start of
        the writable buffer ``out`` (bytearray, memoryview, C-contiguous numpy array).

        If ``out`` has at least ``nbytes + 15`` bytes, each chunk is one ``update_into`` call
        straight into ``out`` (the hot-path form: pass a buffer with 16 spare bytes); otherwise
        the last block goes through a small temporary.
        """
        if (  # hot path (the mask PRG's reused chunk buffer): one C call, no views
            type(out) is bytearray
            and type(nbytes) is int
            and 0 <= nbytes <= CHUNK_BYTES
            and len(out) - nbytes >= _BLOCK - 1
        ):
            self._enc.update_into(_ZEROS if nbytes == CHUNK_BYTES else _ZEROS_VIEW[:nbytes], out)
            return
        view = memoryview(out).cast("B")
        if view.readonly:
            raise ConfigurationError("must be a writable buffer", parameter="out")
        size = len(view)
        n = size if nbytes is None else _count(nbytes, "nbytes")
        if n > size:
            raise ConfigurationError(f"buffer of {size} bytes < {n}", parameter="out")
        direct = n if size - n >= _BLOCK - 1 else max(0, n - _BLOCK)
        zeros = memoryview(_ZEROS)
        enc = self._enc
        for start in range(0, direct, CHUNK_BYTES):
            m = min(CHUNK_BYTES, direct - start)
            enc.update_into(zeros[:m], view[start:])
        if direct < n:
            view[direct:n] = enc.update(_ZEROS[: n - direct])

    def read_bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        n = _count(n)
        if n <= 4 * _BLOCK:
            return self._enc.update(_ZEROS[:n])
        buf = bytearray(n + _BLOCK)
        self.read_into(buf, n)
        del buf[n:]
        return bytes(buf)

    def _words(self, n: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        nbytes = _count(n) * dtype.itemsize
        raw = np.empty(nbytes + _BLOCK, dtype=np.uint8)
        self.read_into(raw, nbytes)
        return raw[:nbytes].view(dtype)

    def uint32(self, n: int) -> npt.NDArray[np.uint32]:
        """The next ``n`` uniform 32-bit words (little-endian reading of ``4n`` bytes)."""
        return self._words(n, _LE_U32).astype(np.uint32, copy=False)

    def uint64(self, n: int) -> npt.NDArray[np.uint64]:
        """The next ``n`` uniform 64-bit words (little-endian reading of ``8n`` bytes)."""
        return self._words(n, _LE_U64).astype(np.uint64, copy=False)

    def token_bytes(self, n: int) -> bytes:
        """Same as :meth:`read_bytes` (the ``RandomSource`` protocol of SecAgg)."""
        return self.read_bytes(n)
