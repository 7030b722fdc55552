"""CallingThreadConnection against a websockets server: framing, limits, closing, keepalive.

The Rooms-level behaviour of the connection (results, errors, timeouts, restarts,
pings, TLS) is checked against live servers in test_client.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Iterator

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.protocol import State
from websockets.sync.client import connect

from rooms.client import DIRECT_CONNECTION
from rooms.connection import CallingThreadConnection
from tests.conftest import free_port, websockets_server


@dataclass
class Peer:
    """A websockets server whose behaviour depends on the request path."""

    url: str
    close_codes: list = field(default_factory=list)
    pings_answered: list = field(default_factory=list)


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    port = free_port()
    peer = Peer(f"ws://127.0.0.1:{port}")

    async def handle(ws) -> None:
        path = ws.request.path
        try:
            async for message in ws:
                if path == "/fragments":
                    await ws.send([message[:3], message[3:6], message[6:]])
                elif path == "/later":
                    await asyncio.sleep(0.3)
                    await ws.send(message)
                elif path == "/bye":
                    await ws.close(1001, "bye")
                elif path == "/pings":
                    started = time.monotonic()
                    await ws.send(message)
                    await asyncio.sleep(0.5)  # the client is idle meanwhile
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, 2)
                    peer.pings_answered.append(time.monotonic() - started)
                else:
                    await ws.send(message)
        finally:
            peer.close_codes.append(ws.close_code)

    def redirect(connection, request):
        if request.path == "/moved":
            response = connection.respond(HTTPStatus.FOUND, "")
            response.headers["Location"] = "/echo"
            return response
        if request.path == "/forbidden":
            return connection.respond(HTTPStatus.FORBIDDEN, "no\n")
        return None

    with websockets_server(handle, port, process_request=redirect, max_size=2**16):
        yield peer


def open_connection(url: str, **kwargs) -> CallingThreadConnection:
    ws = connect(url, create_connection=CallingThreadConnection, open_timeout=5, **DIRECT_CONNECTION, **kwargs)
    assert isinstance(ws, CallingThreadConnection)
    return ws


def keepalive_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "rooms-ws-keepalive"}


@pytest.mark.parametrize("path", ["/echo", "/moved"])  # /moved redirects to /echo
def test_request_and_reply_directly_or_through_a_redirect(peer, path):
    ws = open_connection(f"{peer.url}{path}")
    ws.send_text('{"type": "state"}')
    reply = ws.recv(timeout=5)
    assert (type(reply), reply) == (bytes, b'{"type": "state"}')
    ws.close()


def test_a_fragmented_message_is_read_whole(peer):
    ws = open_connection(f"{peer.url}/fragments")
    ws.send_text("ünïcode fragments")
    assert ws.recv(timeout=5).decode() == "ünïcode fragments"
    ws.close()


def test_a_late_reply_is_read_by_the_next_recv(peer):
    ws = open_connection(f"{peer.url}/later")
    ws.send_text("late")
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    assert ws.recv(timeout=5) == b"late"
    ws.close()


def test_close_is_a_closing_handshake_and_stops_the_keepalive_thread(peer):
    before = keepalive_threads()
    ws = open_connection(f"{peer.url}/echo")
    [keepalive] = keepalive_threads() - before
    peer.close_codes.clear()
    ws.close()
    assert ws.state is State.CLOSED
    keepalive.join(5)
    assert not keepalive.is_alive()
    deadline = time.monotonic() + 5
    while not peer.close_codes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peer.close_codes == [1000]


def test_a_server_close_is_seen_before_the_next_request(peer):
    ws = open_connection(f"{peer.url}/bye")
    ws.send_text("leave")
    with pytest.raises(ConnectionClosedOK) as closed:
        ws.recv(timeout=5)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "bye")
    assert not ws.is_open()
    with pytest.raises(ConnectionClosedOK):
        ws.send_text("again")


def test_server_pings_are_answered_while_idle(peer):
    ws = open_connection(f"{peer.url}/pings")
    peer.pings_answered.clear()
    ws.send_text("then wait")
    assert ws.recv(timeout=5) == b"then wait"
    deadline = time.monotonic() + 5
    while not peer.pings_answered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(peer.pings_answered) == 1 and ws.is_open()
    ws.close()


def test_a_message_over_max_size_fails_the_connection(peer):
    ws = open_connection(f"{peer.url}/echo", max_size=1000)
    ws.send_text("x" * 2000)
    with pytest.raises(ConnectionClosedError) as closed:
        ws.recv(timeout=5)
    assert closed.value.sent.code == 1009  # message too big
    assert not ws.is_open()


def test_a_refused_handshake_raises_websockets_error(peer):
    with pytest.raises(InvalidStatus) as refused:
        open_connection(f"{peer.url}/forbidden")
    assert refused.value.response.status_code == 403
