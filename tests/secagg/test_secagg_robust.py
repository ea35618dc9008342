"""Issue 12 hole 6: one bad share must never give a wrong sum silently.

A client that corrupts a share it reveals in stage 4 is corrected around from the surplus
shares and named (``ServerProtocol.blamed``); when the surplus cannot correct it, the round
aborts with :class:`AbortError` — never a wrong sum (spec §8.1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from securefl.errors import AbortError
from securefl.secagg import ServerState, ShareKind, Stage, UnmaskResponse

from .conftest import Harness, make_harness


def _flip(share: bytes, bit: int) -> bytes:
    return bytes(b ^ (1 << (bit % 8)) if i == 1 + bit // 8 else b for i, b in enumerate(share))


def _unmask_with(h: Harness, tamper: dict[int, int]) -> None:
    """Answer the unmask requests; client u in ``tamper`` flips one bit of its share number
    ``tamper[u]`` (counting its shares in order) before sending."""
    h.run_to(Stage.UNMASK)
    for u, request in h.outbox.items():
        reply = h.clients[u].handle(request)
        assert isinstance(reply, UnmaskResponse)
        if u in tamper:
            shares = list(reply.shares)
            v, kind, share = shares[tamper[u]]
            shares[tamper[u]] = (v, kind, _flip(share, 77))
            reply = dataclasses.replace(reply, shares=tuple(shares))
        assert h.server.receive(reply, transport_sender=u)


def _plain_sum(h: Harness) -> np.ndarray:
    total = sum(h.inputs[u].astype(np.uint64) for u in h.server.survivors)
    return (np.asarray(total) % (1 << h.config.bits)).astype(h.server.word)


@pytest.mark.parametrize(("n", "t", "degree"), [(9, 6, None), (11, 5, 8)])
def test_one_flipped_share_bit_gives_the_exact_sum_and_names_the_client(
    n: int, t: int, degree: int | None
) -> None:
    """Complete graph n = 9, t = 6 (8 holders per dealer) and SecAgg+ n = 11, k = 8, t = 5:
    one wrong share is corrected from the surplus. The old server interpolated the t smallest
    holders' shares and released a wrong sum without an error."""
    h = make_harness(n=n, t=t, degree=degree, threat_model="malicious")
    _unmask_with(h, {3: 0})
    h.server.close_stage()
    assert h.server.state is ServerState.DONE
    assert h.server.result is not None
    np.testing.assert_array_equal(h.server.result, _plain_sum(h))
    assert set(h.server.blamed) == {3}
    assert "corrected" in h.server.blamed[3]


def test_flipped_share_of_a_dropped_client_mask_key_is_corrected() -> None:
    """The mask-key share of a client that dropped before its masked input, likewise."""
    h = make_harness(n=9, t=6, threat_model="malicious")
    h.advertise()
    h.step()  # share keys
    h.step(skip=frozenset({9}))  # 9 drops before its masked input
    h.step()  # consistency
    for u, request in h.outbox.items():
        reply = h.clients[u].handle(request)
        assert isinstance(reply, UnmaskResponse)
        if u == 2:
            shares = [(v, k, _flip(s, 5) if v == 9 else s) for v, k, s in reply.shares]
            reply = dataclasses.replace(reply, shares=tuple(shares))
        h.server.receive(reply, transport_sender=u)
    h.server.close_stage()
    assert h.server.result is not None
    np.testing.assert_array_equal(h.server.result, _plain_sum(h))
    assert set(h.server.blamed) == {2} and "MASK_KEY share of 9" in h.server.blamed[2]


def test_too_many_bad_shares_abort_instead_of_a_wrong_sum() -> None:
    """n = 7, t = 4: 6 holders per dealer correct one wrong share; two colluding holders that
    corrupt the same dealer's share exceed it — the round aborts."""
    h = make_harness(n=7, t=4, threat_model="malicious")
    h.run_to(Stage.UNMASK)
    for u, request in h.outbox.items():
        reply = h.clients[u].handle(request)
        assert isinstance(reply, UnmaskResponse)
        if u in (2, 3):
            shares = [(v, k, _flip(s, 9 * u) if v == 1 else s) for v, k, s in reply.shares]
            reply = dataclasses.replace(reply, shares=tuple(shares))
        h.server.receive(reply, transport_sender=u)
    with pytest.raises(AbortError, match="SELF_MASK_SEED of 1"):
        h.server.close_stage()
    assert h.server.state is ServerState.ABORTED
    assert h.server.result is None


def test_exactly_t_shares_cannot_be_checked_and_say_so() -> None:
    """SecAgg+ with t = k: no surplus share, so a wrong share cannot be detected; the server
    says which secrets it could not check (spec §8.1) instead of claiming robustness."""
    h = make_harness(n=9, t=6, degree=6, threat_model="malicious")
    h.run_to(Stage.UNMASK)
    h.step()
    assert h.server.result is not None
    np.testing.assert_array_equal(h.server.result, _plain_sum(h))
    assert h.server.unchecked == {(w, ShareKind.SELF_MASK_SEED) for w in h.server.u3}
    full = make_harness(n=9, t=6, threat_model="malicious")
    full.run_to(Stage.UNMASK)
    full.step()
    assert full.server.unchecked == set() and full.server.blamed == {}
