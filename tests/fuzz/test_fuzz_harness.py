"""The harness itself: deterministic, and it does report escapes, hangs and known issues."""

from __future__ import annotations

import json
import random
import time
import tomllib
from typing import Any

import pytest

from securefl.errors import MalformedMessageError
from securefl.testing.fuzz import (
    KnownIssue,
    Target,
    check_one,
    deep,
    mutate_bytes,
    mutate_json,
    mutate_obj,
    mutate_toml,
    run_target,
    summary,
)


def _decoder(data: bytes) -> object:
    if data[:1] == b"K":
        raise KeyError("untyped")
    if data[:1] == b"S":  # slow: busy for 1.2 s of CPU
        end = time.process_time() + 1.2
        while time.process_time() < end:
            pass
    if data[:1] == b"T":
        time.sleep(30)
    if len(data) % 2:
        raise MalformedMessageError("odd")
    return data


def _target(*seeds: bytes) -> Target:
    return Target("toy", "test", seeds, mutate_bytes, _decoder)


def test_check_one_classifies() -> None:
    t = _target(b"ok")
    assert check_one(t, b"ab").kind == "accepted"
    assert check_one(t, b"abc").kind == "typed"
    assert check_one(t, b"K").kind == "escape"
    slow = check_one(t, b"SS")
    assert slow.kind == "accepted" and slow.is_hang(1.0)
    assert not check_one(t, b"ab").is_hang(1.0)


def test_only_cpu_time_or_a_long_block_makes_a_hang() -> None:
    from securefl.testing.fuzz import Outcome

    assert not Outcome("typed", seconds=1.7, cpu_seconds=0.01).is_hang(1.0)  # a stalled CI box
    assert Outcome("typed", seconds=1.7, cpu_seconds=1.5).is_hang(1.0)
    assert Outcome("accepted", seconds=6.0, cpu_seconds=0.0).is_hang(1.0)  # blocked on a lock
    assert Outcome("timeout", seconds=0.3, cpu_seconds=0.0).is_hang(1.0)


def test_a_decode_past_the_hard_limit_is_interrupted() -> None:
    start = time.perf_counter()
    out = check_one(_target(b"ok"), b"T", timeout_s=0.3)
    assert out.kind == "timeout" and time.perf_counter() - start < 5


def test_run_target_counts_escapes_hangs_and_known() -> None:
    t = _target(b"K", b"SS", b"ab", b"abc")
    report = run_target(t, 4, hang_s=1.0)
    assert (report.escapes, report.hangs, report.accepted, report.typed) == (1, 1, 2, 1)
    [escape] = [f for f in report.findings.values() if f.kind == "escape"]
    assert escape.exception == "KeyError" and escape.reproducer == b"K"
    known = KnownIssue("toy", "KeyError", "someone", lambda t: b"K", "routed")
    again = run_target(t, 4, hang_s=1.0, known=[known])
    assert (again.escapes, again.known) == (0, 1)
    out = summary([report, again])
    assert (out["mutations"], out["untyped_escapes"], out["hangs_over_1s"]) == (8, 1, 2)
    assert out["targets"]["toy"]["mutations"] == 4


def _flat(value: Any) -> list[str]:
    """Tokens of a (possibly very deep) object, without recursion."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            out.append(f"{{{len(v)}")
            for k, x in v.items():
                out.append(repr(k))
                stack.append(x)
        elif isinstance(v, list):
            out.append(f"[{len(v)}")
            stack.extend(v)
        else:
            out.append(repr(v))
    return out


def test_mutations_are_deterministic_given_a_seed() -> None:
    seed_json = json.dumps({"a": [1, 2.5, "x"], "b": {"c": None}})
    seed_toml = 'name = "x"\n[budget]\nmax_epsilon = 8.0\n'
    for seed in range(5):
        a, b = random.Random(seed), random.Random(seed)
        for _ in range(50):
            assert mutate_bytes(a, b"\x00\x01hello", [b"zz"]) == mutate_bytes(
                b, b"\x00\x01hello", [b"zz"]
            )
            assert mutate_json(a, seed_json) == mutate_json(b, seed_json)
            assert mutate_toml(a, seed_toml) == mutate_toml(b, seed_toml)
            assert _flat(mutate_obj(a, json.loads(seed_json))) == _flat(
                mutate_obj(b, json.loads(seed_json))
            )


def test_mutations_stay_bounded_and_reach_the_edge_cases() -> None:
    rng = random.Random(1)
    seed = json.dumps({"n": 3, "xs": [1, 2], "s": "v"})
    texts = [mutate_json(rng, seed) for _ in range(3000)]
    joined = "\n".join(texts)
    for token in ("1e400", "NaN", "Infinity", "[[[[", "-1"):
        assert token in joined
    assert any(t.count('"n":') > 1 for t in texts)  # duplicate keys
    assert all(len(t) < 1_000_000 for t in texts)
    out = [mutate_bytes(rng, b"x" * 100) for _ in range(2000)]
    assert max(map(len, out)) <= 2 * 100 + 512 and min(map(len, out)) < 100
    tomls = [mutate_toml(rng, 'a = 1\n[t]\nb = "x"\n') for _ in range(500)]
    parsed = 0
    for text in tomls:
        try:
            tomllib.loads(text)
            parsed += 1
        except (tomllib.TOMLDecodeError, RecursionError, ValueError):
            pass
    assert 0 < parsed < len(tomls)


def test_deep_values_are_built_without_recursion() -> None:
    value = deep(100_000)
    depth = 0
    while value:
        value = value[0]
        depth += 1
    assert depth == 100_000
    with pytest.raises(RecursionError):
        json.dumps(deep(5000))
