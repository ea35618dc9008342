"""Mutation fuzzing of every decoder that faces a peer or a file (issue 12, systematic checks).

The rule it checks: a decoder either accepts its input or raises one of the project's typed
errors (:class:`~securefl.errors.SecureFLError` subclasses); any other exception is an *untyped
escape*, and a decode that takes longer than ``hang_s`` is a *hang*. Inputs start from valid
seeds produced by the real code (:mod:`securefl.testing.fuzz_targets`) and are mutated with
byte-level (bit flips, inserts, deletes, truncation, length fields, splicing) and structural
(JSON / TOML / Python-object: huge numbers, NaN/Infinity, deep nesting, wrong types, duplicate
keys, negative sizes) mutations.

Deterministic given a seed: this is a test tool, so ``random.Random`` is the right generator
here (nothing secret is drawn). Escapes already reported to another layer's owner are listed in
:data:`KNOWN_ISSUES`; they are counted apart so the harness stays green until the fix lands,
and ``tests/fuzz`` has a strict expected-failure test per entry that turns red once the
decoder is fixed (then the entry is deleted).
"""

from __future__ import annotations

import json
import math
import random
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from securefl.errors import SecureFLError

#: Integers that break length fields and range checks (signed/unsigned edges of each width).
INTERESTING_INTS: tuple[int, ...] = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    16,
    32,
    64,
    127,
    128,
    255,
    256,
    2**15 - 1,
    2**15,
    2**16 - 1,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**31),
    -(2**63),
    -(2**63) - 1,
    10**30,
)
#: Raw JSON tokens (what ``json.dumps`` would never write, or values at the edges).
JSON_TOKENS: tuple[str, ...] = (
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "0",
    "-1",
    "1.5",
    "-1.5",
    "4294967296",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1" * 5000,
    "true",
    "false",
    "null",
    '""',
    '"x"',
    '"\\ud800"',
    '"' + "ff" * 32 + '"',
    "[]",
    "{}",
    "[1,2,3]",
    '{"a":1}',
    '[[["x"]]]',
    '"' + "A" * 20000 + '"',
)
#: Raw TOML value tokens.
TOML_TOKENS: tuple[str, ...] = (
    "inf",
    "-inf",
    "nan",
    "1e400",
    "-1e400",
    "0",
    "-1",
    "-0.0",
    "1.5",
    "9223372036854775807",
    "-9223372036854775808",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "true",
    "false",
    '""',
    '"x"',
    '"/"',
    "'literal'",
    "[]",
    "{}",
    "[1, 2]",
    '["a", 1]',
    "[[1], [2]]",
    "{ a = 1 }",
    '"' + "A" * 20000 + '"',
)
#: Nesting depths: past Python's recursion limit (1000) and past json's C-level limit.
_DEPTHS = (64, 600, 3000, 50000)
_OBJ_DEPTHS = _DEPTHS[:3]  # a Python object 3000 deep already breaks every recursive walk
_RAW = re.compile(r'"\\u0000FUZZ(\d+)\\u0000"')


# ---------------------------------------------------------------------------- byte mutations
def _int_bytes(rng: random.Random, width: int) -> bytes:
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    return value.to_bytes(width, rng.choice(("big", "little")))


def _pos(rng: random.Random, n: int) -> int:
    """A position, biased toward the first 64 bytes (headers and length fields live there)."""
    if n <= 0:
        return 0
    return rng.randrange(min(n, 64)) if rng.random() < 0.5 else rng.randrange(n)


def mutate_bytes(rng: random.Random, data: bytes, pool: Sequence[bytes] = ()) -> bytes:
    """1–4 stacked byte-level mutations of ``data`` (output bounded by 2·len + 512 bytes)."""
    buf = bytearray(data)
    limit = 2 * len(data) + 512
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        n = len(buf)
        op = rng.randrange(10)
        if op == 0 and n:  # bit flip
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # interesting byte
            buf[_pos(rng, n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # insert random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.choice((1, 2, 4, 8, 16, 33)))
        elif op == 3 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.choice((1, 2, 4, 8, 32, 256))]
        elif op == 4 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 5 and n:  # corrupt a length/count field
            width = rng.choice((1, 2, 4, 8))
            i = _pos(rng, max(n - width + 1, 1))
            buf[i : i + width] = _int_bytes(rng, width)
        elif op == 6 and pool:  # splice a range of another seed in
            other = rng.choice(pool)
            if other:
                a = rng.randrange(len(other))
                piece = other[a : a + rng.randrange(1, 128)]
                i = rng.randrange(n + 1)
                if rng.random() < 0.5:
                    buf[i : i + len(piece)] = piece
                else:
                    buf[i:i] = piece
        elif op == 7 and n:  # duplicate a range
            a = rng.randrange(n)
            buf[a:a] = buf[a : a + rng.randrange(1, 64)]
        elif op == 8 and n:  # zero or saturate a range
            a = rng.randrange(n)
            k = rng.randrange(1, 16)
            buf[a : a + k] = bytes([rng.choice((0, 0xFF))]) * len(buf[a : a + k])
        else:  # append junk
            buf += rng.randbytes(rng.randrange(1, 32))
    return bytes(buf[:limit])


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def mutate_text(rng: random.Random, text: str, pool: Sequence[str] = ()) -> str:
    """Byte mutations of UTF-8 text, decoded back leniently (what a file reader would see)."""
    raw = mutate_bytes(rng, _utf8(text), [_utf8(p) for p in pool])
    return raw.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- object mutations
def deep(depth: int, *, mapping: bool = False) -> Any:
    """A list (or dict) nested ``depth`` levels, built without recursion."""
    value: Any = []
    for _ in range(depth):
        value = {"a": value} if mapping else [value]
    return value


def _paths(obj: Any, prefix: tuple[Any, ...] = (), limit: int = 400) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix]
    stack: list[tuple[tuple[Any, ...], Any]] = [(prefix, obj)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        items: list[tuple[Any, Any]] = []
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        for k, v in items:
            out.append((*path, k))
            stack.append(((*path, k), v))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _copy(obj: Any) -> Any:
    """Copy dicts and lists (leaves are immutable); iterative so deep inputs are fine."""
    if not isinstance(obj, dict | list):
        return obj
    root: Any = {} if isinstance(obj, dict) else []
    stack = [(obj, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for k, v in items:
            if isinstance(v, dict | list):
                new: Any = {} if isinstance(v, dict) else []
                stack.append((v, new))
                v = new
            if isinstance(dst, dict):
                dst[k] = v
            else:
                dst.append(v)
    return root


def _interesting_value(rng: random.Random, old: Any, pool: Sequence[Any]) -> Any:
    """A replacement for ``old``: an edge value, a same-type perturbation or a type change."""
    pick = rng.randrange(8)
    if pick == 0 and isinstance(old, bool):
        return not old
    if pick <= 1 and isinstance(old, int) and not isinstance(old, bool):
        return rng.choice((old + 1, old - 1, -old, old * 2**32, old * 2**64, -1, 0))
    if pick <= 1 and isinstance(old, float):
        return rng.choice((-old, old * 1e300, math.nextafter(old, math.inf), 0.0, -0.0, 1e-320))
    if pick <= 1 and isinstance(old, str):
        return mutate_text(rng, old)
    if pick <= 1 and isinstance(old, bytes):
        return mutate_bytes(rng, old, [p for p in pool if isinstance(p, bytes)])
    if pick == 2:
        return rng.choice(INTERESTING_INTS)
    if pick == 3:
        return rng.choice((math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324))
    if pick == 4:
        return deep(rng.choice(_OBJ_DEPTHS), mapping=rng.random() < 0.5)
    if pick == 5 and pool:
        return _copy(rng.choice(pool))
    odd: tuple[Any, ...] = (None, True, False, "", "x", "\ud800", "A" * 20000, b"", b"\x00" * 33)
    return rng.choice((*odd, [], {}, [1], {"a": 1}))


def mutate_obj(
    rng: random.Random, obj: Any, pool: Sequence[Any] = (), *, keep_root: bool = False
) -> Any:
    """1–3 structural mutations of a JSON-like object (dicts, lists, scalars, bytes).

    ``keep_root`` keeps the top-level container (for records that are always mappings).
    """
    obj = _copy(obj)
    leaves = [v for p in _paths(obj) if not isinstance(v := _get(obj, p), dict | list)]
    donors = [*pool, *leaves]
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = _paths(obj)
        path = rng.choice(paths[1:] if keep_root and len(paths) > 1 else paths)
        node = _get(obj, path)
        op = rng.randrange(6)
        if op == 0 and isinstance(node, dict) and node:  # delete a key
            del node[rng.choice(list(node))]
        elif op == 0 and isinstance(node, list) and node:
            del node[rng.randrange(len(node))]
        elif op == 1 and isinstance(node, dict):  # add a key (unknown or borrowed)
            keys = [p[-1] for p in paths if p and isinstance(p[-1], str)]
            node[rng.choice([*keys, "unknown", ""])] = _interesting_value(rng, None, donors)
        elif op == 1 and isinstance(node, list):  # grow or duplicate
            extra = _copy(node) if node and rng.random() < 0.5 else [rng.choice([*donors, 0])]
            node.extend(extra)
        elif op == 2:  # wrap
            obj = _set(obj, path, [node] if rng.random() < 0.5 else {"a": node})
        else:  # replace
            obj = _set(obj, path, _interesting_value(rng, node, donors))
    return obj


def _to_json(obj: Any, raws: list[str]) -> str:
    """JSON text of ``obj`` where strings "\\0FUZZ<i>\\0" become the raw token ``raws[i]``."""

    def default(o: Any) -> Any:
        return o.hex() if isinstance(o, bytes) else str(o)

    try:
        text = json.dumps(obj, default=default)
    except (RecursionError, ValueError):
        return "[]"
    return _RAW.sub(lambda m: raws[int(m.group(1))], text)


def mutate_json(rng: random.Random, text: str, pool: Sequence[str] = ()) -> str:
    """Structural JSON mutations (raw tokens, duplicate keys, deep nesting) or byte-level ones."""
    if rng.random() < 0.25:
        return mutate_text(rng, text, pool)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return mutate_text(rng, text, pool)
    raws: list[str] = []
    choice = rng.randrange(4)
    if choice == 0:  # a raw token somewhere
        token = rng.choice(JSON_TOKENS)
        raws.append(token)
        paths = _paths(obj)
        obj = _set(_copy(obj), rng.choice(paths), "\0FUZZ0\0")
        return _to_json(obj, raws)
    if choice == 1:  # deep nesting somewhere
        d = rng.choice(_DEPTHS)
        raws.append("[" * d + "]" * d if rng.random() < 0.5 else '{"a":' * d + "1" + "}" * d)
        obj = _set(_copy(obj), rng.choice(_paths(obj)), "\0FUZZ0\0")
        return _to_json(obj, raws)
    out = _to_json(mutate_obj(rng, obj, [json.loads(p) for p in pool[:4]]), raws)
    if choice == 3:  # duplicate a key: the second occurrence wins in Python's json
        keys = re.findall(r'"([^"\\]{1,40})":', out)
        if keys:
            k = rng.choice(keys)
            token = rng.choice(JSON_TOKENS)
            out = out.replace(f'"{k}":', f'"{k}":{token},"{k}":', 1)
    return out


_TOML_KEY = re.compile(r"^(\s*)([A-Za-z0-9_\-\"'.]+)(\s*=\s*)(.*)$")


def mutate_toml(rng: random.Random, text: str, pool: Sequence[str] = ()) -> str:
    """Line-level TOML mutations (values, duplicate keys/tables, deep arrays) or byte-level."""
    if rng.random() < 0.2:
        return mutate_text(rng, text, pool)
    lines = text.splitlines()
    names = [m.group(2) for line in lines if (m := _TOML_KEY.match(line))]
    for _ in range(rng.choice((1, 1, 2, 3))):
        keyed = [i for i, line in enumerate(lines) if _TOML_KEY.match(line)]
        headers = [i for i, line in enumerate(lines) if line.strip().startswith("[")]
        op = rng.randrange(8)
        if op <= 2 and keyed:  # new value for a key
            i = rng.choice(keyed)
            m = _TOML_KEY.match(lines[i])
            if m is not None:
                d = rng.choice(_DEPTHS[:3])
                value = rng.choice((*TOML_TOKENS, "[" * d + "]" * d, "{ a = " * d + "1" + " }" * d))
                lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3)}{value}"
        elif op == 3 and lines:  # duplicate a line (duplicate key or table)
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 4 and lines:  # delete a line
            del lines[rng.randrange(len(lines))]
        elif op == 5:  # insert a known key somewhere (possibly in the wrong table)
            key = rng.choice([*names, "unknown"]) if names else "unknown"
            lines.insert(rng.randrange(len(lines) + 1), f"{key} = {rng.choice(TOML_TOKENS)}")
        elif op == 6 and headers:  # table ↔ array of tables, or a header renamed
            i = rng.choice(headers)
            name = lines[i].strip().strip("[]").strip()
            lines[i] = rng.choice((f"[[{name}]]", f"[{name}.x]", f"[{rng.choice(names or ['a'])}]"))
        elif pool:  # splice lines of another seed
            other = rng.choice(pool).splitlines()
            if other:
                a = rng.randrange(len(other))
                lines[rng.randrange(len(lines) + 1) : 0] = other[a : a + rng.randrange(1, 6)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- targets and runs
@dataclass(frozen=True)
class Target:
    """One decoder: how to mutate an input from its seeds, and how to decode it."""

    name: str
    owner: str  # the helper/area that owns the decoder (for routing findings)
    seeds: tuple[Any, ...]
    mutate: Callable[[random.Random, Any, Sequence[Any]], Any]
    decode: Callable[[Any], object]

    def input(self, rng: random.Random) -> Any:
        return self.mutate(rng, rng.choice(self.seeds), self.seeds)


@dataclass(frozen=True)
class KnownIssue:
    """An untyped escape or hang already routed to the owner of that decoder."""

    target: str
    exception: str  # exception type name, or "hang"
    owner: str
    reproducer: Callable[[Target], Any]  # builds the input that shows it (from the seeds)
    note: str


@dataclass
class Finding:
    target: str
    kind: str  # "escape" or "hang"
    exception: str
    where: str  # innermost securefl frame, "file:line"
    message: str
    seconds: float
    reproducer: Any
    known: str | None = None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "exception": self.exception,
            "where": self.where,
            "message": self.message[:200],
            "seconds": round(self.seconds, 3),
            "reproducer": describe(self.reproducer),
            "known": self.known,
            "count": self.count,
        }


@dataclass
class TargetReport:
    name: str
    mutations: int = 0
    accepted: int = 0
    typed: int = 0
    escapes: int = 0
    hangs: int = 0
    known: int = 0
    max_seconds: float = 0.0  # slowest decode, wall clock
    max_cpu_seconds: float = 0.0  # slowest decode, CPU time
    seconds: float = 0.0
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mutations": self.mutations,
            "accepted": self.accepted,
            "typed": self.typed,
            "untyped_escapes": self.escapes,
            "hangs_over_1s": self.hangs,
            "known": self.known,
            "max_ms": round(1000 * self.max_seconds, 1),
            "max_cpu_ms": round(1000 * self.max_cpu_seconds, 1),
            "seconds": round(self.seconds, 2),
        }


def describe(value: Any, limit: int = 160) -> str:
    """Short printable form of a reproducer: hex for bytes, repr otherwise (truncated)."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).hex()
        return text if len(text) <= limit else f"{text[:limit]}… ({len(value)} bytes)"
    try:
        text = value if isinstance(value, str) else repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


class _Timeout(BaseException):
    """Raised by the alarm inside a decode that ran past the hard limit."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread only; elsewhere only measured)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise _Timeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "securefl" in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename.rsplit('securefl/', 1)[-1]}:{f.lineno}"


@dataclass(frozen=True)
class Outcome:
    kind: str  # "accepted", "typed", "escape", "timeout"
    seconds: float  # wall clock
    cpu_seconds: float  # CPU time of this process
    exception: BaseException | None = None

    def is_hang(self, hang_s: float) -> bool:
        """Over ``hang_s`` of CPU, or over 5·``hang_s`` of wall clock (a decode blocked on a
        lock), or interrupted. Wall clock alone over ``hang_s`` is not a hang: a loaded CI
        machine stalls a process for longer than that now and then."""
        return self.kind == "timeout" or self.cpu_seconds > hang_s or self.seconds > 5 * hang_s


def check_one(target: Target, data: Any, *, timeout_s: float = 10.0) -> Outcome:
    """Decode one input under a hard time limit and classify what came out."""
    start, cpu = time.perf_counter(), time.process_time()

    def outcome(kind: str, exc: BaseException | None = None) -> Outcome:
        return Outcome(kind, time.perf_counter() - start, time.process_time() - cpu, exc)

    try:
        with _deadline(timeout_s):
            target.decode(data)
    except SecureFLError as exc:
        return outcome("typed", exc)
    except _Timeout as exc:
        return outcome("timeout", exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # anything else, SystemExit included, is an escape
        return outcome("escape", exc)
    return outcome("accepted")


def _known(target: str, exception: str, known: Sequence[KnownIssue]) -> str | None:
    for issue in known:
        if issue.target == target and issue.exception == exception:
            return f"{issue.owner}: {issue.note}"
    return None


def run_target(
    target: Target,
    count: int,
    *,
    seed: int = 0,
    hang_s: float = 1.0,
    timeout_s: float = 10.0,
    known: Sequence[KnownIssue] = (),
) -> TargetReport:
    """``count`` mutations of ``target`` from ``random.Random((seed, name))``; first the seeds."""
    rng = random.Random(f"{seed}/{target.name}")
    report = TargetReport(target.name)
    began = time.perf_counter()
    for i in range(count):
        data = target.seeds[i] if i < len(target.seeds) else target.input(rng)
        out = check_one(target, data, timeout_s=timeout_s)
        report.mutations += 1
        report.max_seconds = max(report.max_seconds, out.seconds)
        report.max_cpu_seconds = max(report.max_cpu_seconds, out.cpu_seconds)
        if out.kind == "accepted":
            report.accepted += 1
        elif out.kind == "typed":
            report.typed += 1
        hang = out.is_hang(hang_s)
        if out.kind != "escape" and not hang:
            continue
        exc = out.exception
        if hang:
            kind, name = "hang", "hang"
        else:
            kind, name = "escape", type(exc).__name__
        where = _where(exc) if exc is not None and not hang else "-"
        note = _known(target.name, name, known)
        if note is not None:
            report.known += 1
        elif hang:
            report.hangs += 1
        else:
            report.escapes += 1
        key = (kind, name, where)
        if key in report.findings:
            report.findings[key].count += 1
        else:
            report.findings[key] = Finding(
                target.name, kind, name, where, str(exc), out.seconds, data, note
            )
    report.seconds = time.perf_counter() - began
    return report


def summary(reports: Sequence[TargetReport]) -> dict[str, Any]:
    """The benchmark's JSON line: totals plus per-target counts."""
    return {
        "mutations": sum(r.mutations for r in reports),
        "untyped_escapes": sum(r.escapes for r in reports),
        "hangs_over_1s": sum(r.hangs for r in reports),
        "known_issues_hit": sum(r.known for r in reports),
        "targets": {r.name: r.to_dict() for r in reports},
    }
