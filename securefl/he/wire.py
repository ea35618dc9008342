"""Ciphertext envelope (protocols/he_ckks.md §6) and checks done before TenSEAL sees the bytes.

Big-endian header, then ``chunk_count`` TenSEAL-serialised CKKSVectors of one ciphertext each::

    magic "SFHE" | u8 version=1 | u8 kind (1 update, 2 aggregate) | u8 preset-name length |
    preset name | 32 B context fingerprint | 32 B layout digest | u8 weighting flags
    (bit0 client weights, bit1 server weights) | f64 client-weight sum | f64 server-weight sum |
    f64 server-weight sum of squares | u32 contributions | u8 level (primes per ciphertext) |
    u64 dimension | u32 layout-JSON length | layout JSON | u32 chunk count | u32 × count lengths

Every field is checked against what the receiver expects before any TenSEAL call; each chunk's
protobuf framing and SEAL header (magic, size, compression mode) are checked too, because
TenSEAL's parser is C++ and is only trusted with bytes that have the expected shape.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from securefl.he.errors import ContextMismatchError, MalformedCiphertextError
from securefl.tensors import TensorLayout

MAGIC = b"SFHE"
VERSION = 1
KIND_UPDATE = 1
KIND_AGGREGATE = 2
FLAG_CLIENT_WEIGHTS = 1
FLAG_SERVER_WEIGHTS = 2
#: Largest flat dimension accepted (2^31 values ≈ 64 GiB of ciphertext at one prime).
MAX_DIMENSION = 2**31
MAX_LAYOUT_JSON = 1024 * 1024
_FIXED = struct.Struct(">32s32sBdddIBQI")
_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")


@dataclass(frozen=True)
class Envelope:
    """Parsed header of a ciphertext message plus the raw chunk bytes (not yet deserialised)."""

    kind: int
    preset_name: str
    context_fingerprint: bytes
    layout_digest: bytes
    flags: int
    client_weight_sum: float
    server_weight_sum: float
    server_weight_sq_sum: float
    contributions: int
    level: int
    dimension: int
    layout_json: str
    chunks: tuple[bytes, ...]

    def pack(self) -> bytes:
        name = self.preset_name.encode()
        lj = self.layout_json.encode()
        head = b"".join(
            (
                MAGIC,
                struct.pack(">BBB", VERSION, self.kind, len(name)),
                name,
                _FIXED.pack(
                    self.context_fingerprint,
                    self.layout_digest,
                    self.flags,
                    self.client_weight_sum,
                    self.server_weight_sum,
                    self.server_weight_sq_sum,
                    self.contributions,
                    self.level,
                    self.dimension,
                    len(lj),
                ),
                lj,
                struct.pack(f">I{len(self.chunks)}I", len(self.chunks), *map(len, self.chunks)),
            )
        )
        return head + b"".join(self.chunks)


def _bad(msg: str) -> MalformedCiphertextError:
    return MalformedCiphertextError(msg)


def unpack(
    data: bytes,
    *,
    kind: int,
    preset_name: str,
    context_fingerprint: bytes,
    slot_count: int,
    max_chunk_bytes: int,
    max_bytes: int,
) -> Envelope:
    """Parse and validate an envelope; raise a typed error naming the first thing wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad(f"message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise _bad(f"message of {len(data)} bytes exceeds the limit {max_bytes}")
    if len(data) < 7 or data[:4] != MAGIC:
        raise _bad("not a securefl HE ciphertext message (bad magic)")
    version, got_kind, name_len = struct.unpack_from(">BBB", data, 4)
    if version != VERSION:
        raise _bad(f"unsupported envelope version {version}")
    if got_kind != kind:
        raise _bad(f"message kind {got_kind}, expected {kind}")
    pos = 7
    if pos + name_len + _FIXED.size > len(data):
        raise _bad("envelope truncated (header)")
    name = data[pos : pos + name_len].decode("ascii", errors="replace")
    if name != preset_name:
        raise ContextMismatchError(f"preset {name!r}, expected {preset_name!r}")
    pos += name_len
    (fp, digest, flags, cw, sw, sw2, contributions, level, dim, lj_len) = _FIXED.unpack_from(
        data, pos
    )
    pos += _FIXED.size
    if fp != context_fingerprint:
        raise ContextMismatchError("ciphertexts were made under another context (fingerprint)")
    if flags & ~(FLAG_CLIENT_WEIGHTS | FLAG_SERVER_WEIGHTS):
        raise _bad(f"unknown weighting flags {flags:#x}")
    if not all(math.isfinite(x) and x >= 0.0 for x in (cw, sw, sw2)):
        raise _bad("weight sums must be finite and ≥ 0")
    if contributions < 1:
        raise _bad("contribution count must be ≥ 1")
    if not 1 <= dim <= MAX_DIMENSION:
        raise _bad(f"dimension {dim} out of range")
    if lj_len > MAX_LAYOUT_JSON or pos + lj_len + 4 > len(data):
        raise _bad("envelope truncated or layout too long")
    try:
        layout_json = data[pos : pos + lj_len].decode()
        layout = TensorLayout.from_json(layout_json)
    except (UnicodeDecodeError, ValueError) as exc:  # ConfigurationError is a ValueError
        raise _bad(f"layout is not valid ({exc})") from None
    if layout.to_json() != layout_json or not all(
        _spec_ok(sp.kind, sp.dtype) for sp in layout.specs
    ):
        raise _bad("layout JSON is not canonical or names an unknown dtype/kind")
    if layout.digest() != digest:
        raise ContextMismatchError("layout JSON does not match the layout digest")
    if layout.size != dim:
        raise _bad(f"layout holds {layout.size} values, header says {dim}")
    pos += lj_len
    (count,) = struct.unpack_from(">I", data, pos)
    pos += 4
    expected = -(-dim // slot_count)
    if count != expected:
        raise _bad(f"{count} chunks, a dimension of {dim} needs {expected}")
    if pos + 4 * count > len(data):
        raise _bad("envelope truncated (chunk lengths)")
    lengths = struct.unpack_from(f">{count}I", data, pos)
    pos += 4 * count
    if any(n < 32 or n > max_chunk_bytes for n in lengths):
        raise _bad(f"a chunk length is outside [32, {max_chunk_bytes}]")
    if pos + sum(lengths) != len(data):
        raise _bad(f"payload is {len(data) - pos} bytes, chunk lengths sum to {sum(lengths)}")
    chunks = []
    for n in lengths:
        chunks.append(data[pos : pos + n])
        pos += n
    return Envelope(
        got_kind,
        name,
        fp,
        digest,
        flags,
        cw,
        sw,
        sw2,
        contributions,
        level,
        dim,
        layout_json,
        tuple(chunks),
    )


#: Tensor dtypes a layout may name (numpy and torch spellings agree for these).
_DTYPES = frozenset(
    ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"]
)


def _spec_ok(kind: str, dtype: str) -> bool:
    return (
        kind in ("numpy", "torch")
        and dtype in _DTYPES
        and not (kind == "numpy" and dtype == "bfloat16")
    )


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _bad("chunk framing: bad varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def precheck_chunk(
    chunk: bytes, *, length: int, scale: float, seal_version: tuple[int, int], index: int
) -> None:
    """Check TenSEAL's CKKSVectorProto framing and SEAL's header without parsing ciphertexts.

    TenSEAL writes ``sizes`` (field 1, packed), one ``ciphertexts`` entry (field 2), ``scale``
    (field 3, double); SEAL's ciphertext starts with a 16-byte header (magic 0xA15E, header
    size, version, compression mode, total size).
    """
    where = f"chunk {index}: "
    if chunk[:1] != b"\x0a":
        raise _bad(where + "framing: sizes field missing")
    n, pos = read_varint(chunk, 1)
    end = pos + n
    got, pos = read_varint(chunk, pos)
    if pos != end or got != length:
        raise _bad(where + f"holds {got} values, expected {length}")
    if chunk[pos : pos + 1] != b"\x12":
        raise _bad(where + "framing: ciphertext field missing")
    ct_len, pos = read_varint(chunk, pos + 1)
    if pos + ct_len + 9 != len(chunk) or chunk[pos + ct_len] != 0x19:
        raise _bad(where + "framing: lengths do not add up (one ciphertext + scale expected)")
    (got_scale,) = struct.unpack_from("<d", chunk, pos + ct_len + 1)
    if got_scale != scale:
        raise ContextMismatchError(where + "scale differs from the preset's")
    if ct_len < _SEAL_HEADER.size:
        raise _bad(where + "SEAL ciphertext truncated")
    magic, hsize, major, minor, compr, _reserved, size = _SEAL_HEADER.unpack_from(chunk, pos)
    if magic != _SEAL_MAGIC or hsize != _SEAL_HEADER.size:
        raise _bad(where + "SEAL header magic/size wrong")
    if (major, minor) != seal_version:
        raise _bad(where + f"SEAL version {major}.{minor}, expected {seal_version}")
    if compr not in (0, 1, 2) or size != ct_len:
        raise _bad(where + "SEAL header compression mode or size wrong")
