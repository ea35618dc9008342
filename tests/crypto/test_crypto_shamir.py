"""Shamir t-of-n: any t shares reconstruct, t−1 do not, malformed shares are rejected."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.crypto import shamir
from securefl.crypto.errors import InsufficientSharesError, InvalidShareError
from securefl.errors import AbortError, ConfigurationError, RemoteProtocolError


def test_field_prime_is_prime_and_above_2_256() -> None:
    p = shamir.PRIME
    assert 2**256 < p < 2 ** (8 * shamir.SHARE_BYTES)
    d, s = p - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(40):  # Miller–Rabin: a composite passes with probability ≤ 4^-40
        a = 2 + secrets.randbelow(p - 3)
        x = pow(a, d, p)
        if x in (1, p - 1):
            continue
        for _ in range(s - 1):
            x = x * x % p
            if x == p - 1:
                break
        else:
            pytest.fail("PRIME is composite")
    assert all(p % q for q in range(2, 2000))


@st.composite
def sharings(draw: st.DrawFn) -> tuple[bytes, int, list[int], list[int]]:
    n = draw(st.integers(1, 12))
    holders = draw(st.lists(st.integers(0, 2**32 - 2), min_size=n, max_size=n, unique=True))
    t = draw(st.integers(1, n))
    subset = draw(st.permutations(holders))[: draw(st.integers(t, n))]
    return draw(st.binary(min_size=32, max_size=32)), t, holders, list(subset)


@given(sharings())
def test_any_t_subset_reconstructs(case: tuple[bytes, int, list[int], list[int]]) -> None:
    secret, t, holders, subset = case
    shares = shamir.split(secret, t, holders)
    assert set(shares) == set(holders)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    chosen = {h: shares[h] for h in subset}
    assert shamir.reconstruct(chosen, t) == secret
    assert shamir.reconstruct(list(chosen.items()), t, check_consistency=True) == secret


@given(sharings())
def test_t_minus_one_shares_do_not_reconstruct(
    case: tuple[bytes, int, list[int], list[int]],
) -> None:
    secret, t, holders, _ = case
    if t < 2:
        return
    shares = shamir.split(secret, t, holders)
    few = dict(list(shares.items())[: t - 1])
    with pytest.raises(InsufficientSharesError):
        shamir.reconstruct(few, t)
    # Claiming a lower threshold interpolates a wrong (lower-degree) polynomial.
    try:
        wrong = shamir.reconstruct(few, t - 1)
    except InvalidShareError:  # value ≥ 2^256: not a 32-byte secret at all
        return
    assert wrong != secret


def test_a_single_share_is_uniform_whatever_the_secret() -> None:
    """Byte 16 of holder 0's share for t = 2 over 4096 splits, secret all-0 vs all-1 bits:
    chi-square over 256 bins, z = 5 (false-failure rate ≈ 3e-7 per secret)."""
    for secret in (bytes(32), b"\xff" * 32):
        counts = np.zeros(256)
        for _ in range(4096):
            counts[shamir.split(secret, 2, [0, 1])[0][16]] += 1
        stat = float(((counts - 16) ** 2 / 16).sum())
        df = 255
        assert stat < df * (1 - 2 / (9 * df) + 5.0 * (2 / (9 * df)) ** 0.5) ** 3


def test_injected_randomness_is_deterministic_and_checked() -> None:
    rnd = bytes(range(96))
    a = shamir.split(b"k" * 32, 3, [1, 2, 3], randomness=rnd)
    assert a == shamir.split(b"k" * 32, 3, [1, 2, 3], randomness=rnd)
    with pytest.raises(ConfigurationError, match="randomness"):
        shamir.split(b"k" * 32, 3, [1, 2, 3], randomness=rnd[:-1])


def test_split_validates_its_inputs() -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(ConfigurationError, match="distinct"):
        shamir.split(bytes(32), 2, [1, 1])
    with pytest.raises(ConfigurationError, match="threshold"):
        shamir.split(bytes(32), 3, [1, 2])
    with pytest.raises(ConfigurationError, match="threshold"):
        shamir.split(bytes(32), 0, [1, 2])
    with pytest.raises(ConfigurationError, match="holder"):
        shamir.split(bytes(32), 1, [-1])
    with pytest.raises(ConfigurationError, match="holder"):
        shamir.split(bytes(32), 1, [2**32 - 1])  # x = id + 1 would not fit in u32


def test_malformed_shares_are_remote_errors() -> None:
    shares = shamir.split(os.urandom(32), 2, [0, 1, 2])
    items = list(shares.items())
    with pytest.raises(InvalidShareError, match="duplicate"):
        shamir.reconstruct([items[0], items[0], items[1]], 2)
    with pytest.raises(InvalidShareError, match="33 bytes"):
        shamir.reconstruct({0: shares[0][:-1], 1: shares[1]}, 2)
    with pytest.raises(InvalidShareError, match="field"):
        shamir.reconstruct({0: shamir.PRIME.to_bytes(33, "big"), 1: shares[1]}, 2)
    with pytest.raises(InvalidShareError, match="out of range"):
        shamir.reconstruct({-1: shares[0], 1: shares[1]}, 2)
    assert issubclass(InvalidShareError, RemoteProtocolError)
    assert issubclass(InsufficientSharesError, AbortError)


def test_consistency_check_catches_a_corrupted_extra_share() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, list(range(6)))
    bad = dict(shares)
    y = (int.from_bytes(bad[5], "big") + 1) % shamir.PRIME
    bad[5] = y.to_bytes(33, "big")
    assert shamir.reconstruct(bad, 3) == secret  # uses ids 0, 1, 2 only
    with pytest.raises(InvalidShareError, match="holder 5"):
        shamir.reconstruct(bad, 3, check_consistency=True)


# ------------------------------------------------------------------ robust reconstruction


def _corrupt(share: bytes, delta: int) -> bytes:
    """Another field element (delta ≠ 0 mod p)."""
    return ((int.from_bytes(share, "big") + delta) % shamir.PRIME).to_bytes(33, "big")


@st.composite
def corrupted_sharings(
    draw: st.DrawFn, *, beyond: bool, odd_surplus: bool = False
) -> tuple[bytes, int, dict[int, bytes], dict[int, bytes], frozenset[int]]:
    """(secret, t, honest subset of shares, the same with e corrupted, corrupted holders).

    ``beyond=False``: e ≤ ⌊(s − t)/2⌋ (correctable); ``beyond=True``: ⌊(s − t)/2⌋ < e ≤ s − t
    (detectable, not correctable); ``odd_surplus``: s − t odd and e = ⌊(s − t)/2⌋ + 1.
    """
    t = draw(st.integers(1, 10))
    if odd_surplus:
        s = t + 2 * draw(st.integers(0, 11)) + 1
    else:
        s = draw(st.integers(t + (2 if beyond else 0), t + 24))
    holders = draw(st.lists(st.integers(0, 2**32 - 2), min_size=s, max_size=s, unique=True))
    secret = draw(st.binary(min_size=32, max_size=32))
    shares = shamir.split(secret, t, holders)
    lo, hi = ((s - t) // 2 + 1, s - t) if beyond else (0, (s - t) // 2)
    if odd_surplus:
        hi = lo
    e = draw(st.integers(lo, hi))
    bad = frozenset(draw(st.permutations(holders))[:e])
    corrupted = dict(shares)
    for h in bad:
        how = draw(st.sampled_from(["bitflip", "random", "out-of-field"]))
        if how == "bitflip":  # one bit of the 33-byte encoding; stays below p or not
            bit = draw(st.integers(0, 8 * 33 - 1))
            y = int.from_bytes(shares[h], "big") ^ (1 << bit)
            corrupted[h] = y.to_bytes(33, "big")
        elif how == "random":
            corrupted[h] = _corrupt(shares[h], draw(st.integers(1, shamir.PRIME - 1)))
        else:
            corrupted[h] = (
                shamir.PRIME + draw(st.integers(0, 2**264 - 1 - shamir.PRIME))
            ).to_bytes(33, "big")
    return secret, t, shares, corrupted, bad


@given(corrupted_sharings(beyond=False))
def test_robust_reconstruction_corrects_and_names_bad_holders(
    case: tuple[bytes, int, dict[int, bytes], dict[int, bytes], frozenset[int]],
) -> None:
    """Up to ⌊(s − t)/2⌋ corrupted shares: the exact secret, and exactly the corrupted holders
    named (Gao 2003 decoding of the Reed–Solomon code that Shamir shares form)."""
    secret, t, _, corrupted, bad = case
    got = shamir.reconstruct_robust(corrupted, t)
    assert got.secret == secret
    assert got.inconsistent == bad


@given(corrupted_sharings(beyond=True), st.data())
def test_robust_reconstruction_refuses_random_corruption_it_cannot_correct(
    case: tuple[bytes, int, dict[int, bytes], dict[int, bytes], frozenset[int]],
    data: st.DataObject,
) -> None:
    """⌊(s − t)/2⌋ < e ≤ s − t shares replaced by independent uniform field elements: a typed
    error, never a value (they lie on one polynomial of degree < t with the honest majority
    only with probability ≈ s/p). Values from the OS, since hypothesis would search for the
    coordinated corruption that no decoder can tell from the truth."""
    _, t, _, corrupted, bad = case
    for h in bad:
        corrupted[h] = secrets.randbelow(shamir.PRIME).to_bytes(33, "big")
    with pytest.raises(shamir.UncorrectableSharesError):
        shamir.reconstruct_robust(corrupted, t)


@given(corrupted_sharings(beyond=True, odd_surplus=True))
def test_robust_reconstruction_never_errs_one_beyond_when_surplus_is_odd(
    case: tuple[bytes, int, dict[int, bytes], dict[int, bytes], frozenset[int]],
) -> None:
    """Any ⌊(s − t)/2⌋ + 1 wrong shares, however chosen, when s − t is odd: a decoded wrong
    polynomial would agree with ≥ s − ⌊(s − t)/2⌋ shares, hence with ≥ ⌊(s − t)/2⌋ + 2 wrong
    ones. So the result is the exact secret or a typed error — never a wrong value."""
    secret, t, _, corrupted, bad = case
    assert (len(corrupted) - t) % 2 == 1 and len(bad) == (len(corrupted) - t) // 2 + 1
    try:
        got = shamir.reconstruct_robust(corrupted, t)
    except shamir.UncorrectableSharesError:
        return
    assert got.secret == secret  # pragma: no cover - unreachable by the argument above


def test_robust_reconstruction_names_one_flipped_bit() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, list(range(7)))
    bad = dict(shares)
    bad[1] = bytes([bad[1][0]]) + bytes([bad[1][1] ^ 0x10]) + bad[1][2:]
    assert shamir.reconstruct(bad, 3) != secret  # the plain path is fooled (uses ids 0, 1, 2)
    got = shamir.reconstruct_robust(bad, 3)
    assert got == shamir.Recovery(secret, frozenset({1}))
    assert issubclass(shamir.UncorrectableSharesError, InvalidShareError)


def test_robust_reconstruction_edge_cases() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, list(range(4)))
    assert shamir.reconstruct_robust(shares, 3) == shamir.Recovery(secret, frozenset())
    # exactly t shares: nothing to check against (documented), plain interpolation
    exact = dict(list(shares.items())[:3])
    assert shamir.reconstruct_robust(exact, 3).secret == secret
    with pytest.raises(InsufficientSharesError):
        shamir.reconstruct_robust(dict(list(shares.items())[:2]), 3)
    # one bad share among t + 1: detected, not correctable
    bad = dict(shares)
    bad[0] = _corrupt(bad[0], 1)
    with pytest.raises(shamir.UncorrectableSharesError, match="1 surplus"):
        shamir.reconstruct_robust(bad, 3)
    # an out-of-field share is an erasure with its holder named
    many = shamir.split(secret, 2, list(range(6)))
    many[4] = shamir.PRIME.to_bytes(33, "big")
    assert shamir.reconstruct_robust(many, 2) == shamir.Recovery(secret, frozenset({4}))
    with pytest.raises(InvalidShareError, match="duplicate"):
        shamir.reconstruct_robust([(0, many[0]), (0, many[0]), (1, many[1])], 2)
    with pytest.raises(InvalidShareError, match="33 bytes"):
        shamir.reconstruct_robust({0: many[0][:-1], 1: many[1], 2: many[2]}, 2)
