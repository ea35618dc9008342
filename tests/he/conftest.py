"""Key holders are slow-ish to make (context + keys): one per preset for the whole he suite.

Also the setup the parser and wire tests share: an honest client/server pair with one update,
and parsing an envelope the way the receiving role does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from securefl.he import HEClient, HEServer, KeyHolder, wire


@pytest.fixture(scope="session")
def holders() -> dict[str, KeyHolder]:
    # server weights in the tests go up to 2.0: the key holder sizes rounding for that cap
    return {
        name: KeyHolder(name, max_server_weight=2.0) for name in ("fast", "weighted", "precise")
    }


def honest_parties(
    kh: KeyHolder, tensors: dict[str, npt.NDArray[np.float64]], **client_options: Any
) -> tuple[HEClient, HEServer, bytes]:
    """A client and a server (``max_dimension`` 2^16) of ``kh``, and the client's update."""
    client = HEClient(kh.public_context_bytes(), **client_options)
    server = HEServer(kh.server_context_bytes(), max_dimension=2**16)
    return client, server, client.encrypt(tensors)


def parse_envelope(kh: KeyHolder, data: bytes, kind: int) -> wire.Envelope:
    """Parse an envelope the way the receiving role does (no size limits: test helper)."""
    return wire.unpack(
        data,
        kind=kind,
        preset_name=kh.preset.name,
        context_fingerprint=kh.fingerprint,
        slot_count=kh.preset.slot_count,
        max_chunk_bytes=10**7,
        max_bytes=10**9,
    )
