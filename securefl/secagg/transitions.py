"""SecAgg(+) state machines as data: (state, event) → next state (spec ``protocols/secagg.md``
§6; the shape of h11's ``_state.py``).

:class:`~securefl.secagg.client.ClientProtocol` and :class:`~securefl.secagg.server.ServerProtocol`
ask these tables whether an event is allowed in their current state and which state follows;
nothing else moves them. ``tests/secagg/test_secagg_transitions.py`` parses the tables of §6
and checks that they equal these, so the spec and the code cannot drift apart.
"""

from __future__ import annotations

from enum import Enum

from securefl.errors import LocalProtocolError


class ClientState(Enum):
    """Client states (spec §6)."""

    IDLE = "idle"
    ADVERTISED = "advertised"  # sent AdvertiseKeys, awaits ShareKeysRequest
    SHARED = "shared"  # sent ShareKeys, awaits MaskedInputRequest
    MASKED = "masked"  # sent MaskedInput, awaits ConsistencyRequest
    SIGNED = "signed"  # sent ConsistencyCheck, awaits UnmaskRequest
    UNMASKED = "unmasked"  # answered ≥ 1 UnmaskRequest (further ones allowed, same rules)
    FAILED = "failed"  # refused a request; accepts nothing more


class ClientEvent(Enum):
    """What happens to a client; a value is the spec's name for it (§6, column "event")."""

    ADVERTISE = "advertise_keys()"
    SHARE_KEYS_REQUEST = "ShareKeysRequest"
    MASKED_INPUT_REQUEST = "MaskedInputRequest"
    CONSISTENCY_REQUEST = "ConsistencyRequest"
    UNMASK_REQUEST = "UnmaskRequest"
    OTHER_STAGE = "message of another stage"
    REFUSAL = "refused request"


class ServerState(Enum):
    """Server states (spec §6)."""

    COLLECT_ADVERTISE = "collect-advertise"
    COLLECT_SHARES = "collect-shares"
    COLLECT_MASKED = "collect-masked"
    COLLECT_CONSISTENCY = "collect-consistency"
    COLLECT_UNMASK = "collect-unmask"
    DONE = "done"
    ABORTED = "aborted"


class ServerEvent(Enum):
    """What happens to the server; a value is the spec's name for it (§6)."""

    ADVERTISE_KEYS = "AdvertiseKeys"
    SHARE_KEYS = "ShareKeys"
    MASKED_INPUT = "MaskedInput"
    CONSISTENCY_CHECK = "ConsistencyCheck"
    UNMASK_RESPONSE = "UnmaskResponse"
    CLOSE_STAGE = "close_stage()"
    ABORT = "abort condition"


_C, _CE = ClientState, ClientEvent
_ANSWERING = (_C.ADVERTISED, _C.SHARED, _C.MASKED, _C.SIGNED, _C.UNMASKED)

#: Client: state → {event → next state}. A pair that is absent is refused.
CLIENT_TRANSITIONS: dict[ClientState, dict[ClientEvent, ClientState]] = {
    _C.IDLE: {_CE.ADVERTISE: _C.ADVERTISED},
    _C.ADVERTISED: {_CE.SHARE_KEYS_REQUEST: _C.SHARED},
    _C.SHARED: {_CE.MASKED_INPUT_REQUEST: _C.MASKED},
    _C.MASKED: {_CE.CONSISTENCY_REQUEST: _C.SIGNED},
    _C.SIGNED: {_CE.UNMASK_REQUEST: _C.UNMASKED},
    _C.UNMASKED: {_CE.UNMASK_REQUEST: _C.UNMASKED},
    _C.FAILED: {},
}
for _s in _ANSWERING:
    CLIENT_TRANSITIONS[_s][_CE.OTHER_STAGE] = _C.FAILED
for _s in ClientState:
    CLIENT_TRANSITIONS[_s][_CE.REFUSAL] = _C.FAILED

_S, _SE = ServerState, ServerEvent
_COLLECTING = {
    _S.COLLECT_ADVERTISE: (_SE.ADVERTISE_KEYS, _S.COLLECT_SHARES),
    _S.COLLECT_SHARES: (_SE.SHARE_KEYS, _S.COLLECT_MASKED),
    _S.COLLECT_MASKED: (_SE.MASKED_INPUT, _S.COLLECT_CONSISTENCY),
    _S.COLLECT_CONSISTENCY: (_SE.CONSISTENCY_CHECK, _S.COLLECT_UNMASK),
    _S.COLLECT_UNMASK: (_SE.UNMASK_RESPONSE, _S.DONE),
}

#: Server: state → {event → next state}. A client message absent here is ignored (§6.1).
SERVER_TRANSITIONS: dict[ServerState, dict[ServerEvent, ServerState]] = {
    state: {message: state, _SE.CLOSE_STAGE: after, _SE.ABORT: _S.ABORTED}
    for state, (message, after) in _COLLECTING.items()
}
SERVER_TRANSITIONS[_S.DONE] = {}
SERVER_TRANSITIONS[_S.ABORTED] = {}


def client_next(state: ClientState, event: ClientEvent) -> ClientState:
    """The client's state after ``event``; our own caller's misuse → LocalProtocolError."""
    nxt = CLIENT_TRANSITIONS[state].get(event)
    if nxt is None:
        raise LocalProtocolError(f"{event.value} is not allowed in client state {state.value}")
    return nxt


def server_next(state: ServerState, event: ServerEvent) -> ServerState:
    """The server's state after ``event``; not allowed → LocalProtocolError."""
    nxt = SERVER_TRANSITIONS[state].get(event)
    if nxt is None:
        raise LocalProtocolError(f"{event.value} is not allowed in server state {state.value}")
    return nxt


def client_expects(state: ClientState) -> frozenset[ClientEvent]:
    """Server messages (by event) the client accepts in ``state``."""
    return frozenset(
        e for e in CLIENT_TRANSITIONS[state] if e.value[0].isupper()
    )  # message events are class names


def server_accepts(state: ServerState) -> ServerEvent | None:
    """The client message (as an event) the server collects in ``state``, if any."""
    for e in SERVER_TRANSITIONS[state]:
        if e.value[0].isupper():
            return e
    return None


__all__ = [
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "ClientEvent",
    "ClientState",
    "ServerEvent",
    "ServerState",
    "client_expects",
    "client_next",
    "server_accepts",
    "server_next",
]
