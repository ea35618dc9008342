"""Issue 10 item 5: the SecAgg state machines are tables that the code uses, and the tables
in ``protocols/secagg.md`` §6 are exactly those tables (parsed here, not copied)."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import TypeVar

import pytest

from securefl.errors import LocalProtocolError
from securefl.secagg import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientEvent,
    ClientState,
    ServerEvent,
    ServerState,
)
from securefl.secagg.transitions import client_next, server_next

from .conftest import make_harness

SPEC = Path(__file__).resolve().parents[2] / "protocols" / "secagg.md"
S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


def _section_6() -> str:
    text = SPEC.read_text()
    return text[text.index("## 6. State machines") : text.index("### 6.1")]


def _cells(line: str) -> list[str]:
    """Split a table row on ``|`` outside backticks (``|U1|`` is a set size, not a cell)."""
    cells, cell, quoted = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "`":
            quoted = not quoted
        if ch == "|" and not quoted:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    return [*cells, cell.strip()]


def _tables() -> list[list[list[str]]]:
    """The markdown tables of §6 as rows of cells (header and rule lines dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in _section_6().splitlines():
        if line.startswith("|"):
            cells = _cells(line)
            if current is None:
                current = []  # header row
                tables.append(current)
            elif not set(line) <= set("|- "):
                current.append(cells)
        else:
            current = None
    return tables


def _states(cell: str, kind: type[S]) -> list[S]:
    names = re.findall(r"`([A-Z_]+)`", cell)
    if cell.startswith("any but"):
        return [s for s in kind if s.name not in names]
    if cell == "any":
        return list(kind)
    return [kind[n] for n in names]


def _parse(table: list[list[str]], states: type[S], events: type[E]) -> dict[S, dict[E, S]]:
    out: dict[S, dict[E, S]] = {s: {} for s in states}
    known = {e.value: e for e in events}
    for state_cell, event_cell, _, next_cell, *_ in table:
        quoted = re.match(r"`([^`]+)`", event_cell)
        name = quoted.group(1) if quoted else event_cell
        if name not in known:  # an effect within a state (sender rule, §6.1)
            assert next_cell == "same", event_cell
            continue
        for s in _states(state_cell, states):
            nxt = s if next_cell == "same" else states[next_cell.strip("`")]
            assert known[name] not in out[s], f"{s.name} × {name} listed twice"
            out[s][known[name]] = nxt
    return out


def test_spec_tables_equal_the_code_tables() -> None:
    client, server = _tables()[:2]
    assert _parse(client, ClientState, ClientEvent) == CLIENT_TRANSITIONS
    assert _parse(server, ServerState, ServerEvent) == SERVER_TRANSITIONS


def test_the_parser_sees_a_changed_spec_row() -> None:
    """A spec that disagrees with the code is detected (the test above can fail)."""
    client, _ = _tables()[:2]
    edited = [row[:] for row in client]
    edited[0][3] = "`SHARED`"  # IDLE --advertise_keys()--> SHARED: not what the code does
    assert _parse(edited, ClientState, ClientEvent) != CLIENT_TRANSITIONS


def test_code_refuses_what_the_tables_do_not_list() -> None:
    for state in ClientState:
        for event in ClientEvent:
            if event not in CLIENT_TRANSITIONS[state]:
                with pytest.raises(LocalProtocolError):
                    client_next(state, event)
    with pytest.raises(LocalProtocolError):
        server_next(ServerState.DONE, ServerEvent.CLOSE_STAGE)


def test_protocol_objects_move_along_the_tables() -> None:
    """A full honest round: the server's states follow close_stage() through its table, and a
    client's follow the request events through its table."""
    h = make_harness(n=5, t=3)
    server_path = [h.server.state]
    client_path = [h.clients[1].state]
    h.advertise()
    server_path.append(h.server.state)
    client_path.append(h.clients[1].state)
    while h.stage is not None:
        h.step()
        server_path.append(h.server.state)
        client_path.append(h.clients[1].state)
    expect_server = [ServerState.COLLECT_ADVERTISE]
    while SERVER_TRANSITIONS[expect_server[-1]]:
        expect_server.append(server_next(expect_server[-1], ServerEvent.CLOSE_STAGE))
    assert server_path == expect_server
    requests = [
        ClientEvent.SHARE_KEYS_REQUEST,
        ClientEvent.MASKED_INPUT_REQUEST,
        ClientEvent.CONSISTENCY_REQUEST,
        ClientEvent.UNMASK_REQUEST,
    ]
    expect_client = [ClientState.IDLE, client_next(ClientState.IDLE, ClientEvent.ADVERTISE)]
    for event in requests:
        expect_client.append(client_next(expect_client[-1], event))
    assert client_path == expect_client
