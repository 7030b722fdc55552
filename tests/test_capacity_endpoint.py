"""`/capacity`, the default session limit, the start-up message, and half-open peers freeing their slot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from websockets.sync.client import connect

from rooms.kit.command import main
from rooms.kit.settings import DEFAULT_MAX_CONCURRENT_ENVS
from tests.conftest import Served, SharedServers, wait_for

RESET = json.dumps({"type": "reset", "data": {}})


def capacity(server: Served) -> dict[str, Any]:
    response = requests.get(f"{server.url}/capacity", timeout=10)
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    return payload


def test_capacity_counts_open_sessions_and_frees_them_on_close(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "3"})
    idle = capacity(server)
    by_door = {"ws": 0, "mcp-openenv": 0, "mcp-standard": 0}
    this = {"active_sessions": 0, "max_sessions": 3, "free_slots": 3, "by_door": by_door, "pid": idle["pid"]}
    assert idle == {**this, "workers": [this]}
    assert isinstance(idle["pid"], int) and idle["pid"] > 0

    with ExitStack() as sessions:
        for ws in [sessions.enter_context(connect(server.ws_url)) for _ in range(2)]:
            ws.send(RESET)
            assert json.loads(ws.recv(timeout=10))["type"] == "observation"
        busy = capacity(server)
        assert (busy["active_sessions"], busy["free_slots"]) == (2, 1)
        requests.post(f"{server.url}/reset", json={}, timeout=10).raise_for_status()
        assert capacity(server)["active_sessions"] == 2, "a stateless HTTP call holds no session"
    wait_for(lambda: capacity(server)["active_sessions"] == 0, 30, "every session released")
    assert capacity(server)["free_slots"] == 3


def test_capacity_reports_no_free_slot_at_the_limit(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "1"})
    with connect(server.ws_url) as first:
        first.send(RESET)
        first.recv(timeout=10)
        reported = capacity(server)
        assert (reported["active_sessions"], reported["max_sessions"], reported["free_slots"]) == (1, 1, 0)
        with connect(server.ws_url) as refused:
            assert json.loads(refused.recv(timeout=10))["data"]["code"] == "CAPACITY_REACHED"
        assert capacity(server)["active_sessions"] == 1


def test_default_limit_runs_asyncgrpo_128_rollouts(shared_server: SharedServers) -> None:
    """TRL's AsyncGRPO keeps 128 rollouts in flight: the default limit takes them all, with room to spare.
    (The `server` command announces its limit: tests/test_light_server.py.)"""
    from websockets.asyncio.client import connect as async_connect

    server = shared_server()  # every setting at its default
    assert capacity(server)["max_sessions"] == DEFAULT_MAX_CONCURRENT_ENVS >= 2 * 128

    async def rollouts(count: int) -> list[str]:
        sockets = [await async_connect(server.ws_url) for _ in range(count)]
        try:
            for ws in sockets:
                await ws.send(RESET)
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] for ws in sockets]
            assert capacity(server)["active_sessions"] == count
            return replies
        finally:
            for ws in sockets:
                await ws.close()

    assert asyncio.run(rollouts(128)) == ["observation"] * 128


def test_workers_announce_their_limit_per_worker() -> None:
    from rooms.kit.command import capacity_message

    assert capacity_message(512, 1).startswith("Rooms accepts up to 512 concurrent WebSocket sessions")
    assert "512 concurrent WebSocket sessions per worker, 1024 in all over 2 workers" in capacity_message(512, 2)


def blackholed_session(ws_url: str) -> socket.socket:
    """A client that completes the WebSocket handshake, starts a session, then never reads or answers again."""
    host_port = ws_url.removeprefix("ws://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    peer = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    peer.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += peer.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload = RESET.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    peer.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # one masked text frame (< 126 bytes)
    return peer  # from here on nothing is read, so no pong ever goes back


def test_half_open_peer_is_closed_by_pings_and_frees_its_slot(shared_server: SharedServers) -> None:
    server = shared_server(
        env={"MAX_CONCURRENT_ENVS": "1", "ROOMS_WS_PING_INTERVAL_S": "1", "ROOMS_WS_PING_TIMEOUT_S": "1"}
    )
    peer = blackholed_session(server.ws_url)
    try:
        wait_for(lambda: capacity(server)["active_sessions"] == 1, 10, "the session started")
        # interval + timeout is 2 s; the generous bound only keeps a loaded machine from failing the test
        wait_for(lambda: capacity(server)["active_sessions"] == 0, 60, "the vanished peer's slot freed")
        with connect(server.ws_url) as ws:
            ws.send(RESET)
            assert json.loads(ws.recv(timeout=10))["type"] == "observation"
    finally:
        peer.close()


def test_bad_ping_setting_stops_the_server_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """(How the process exits on such a line: tests/test_settings.py.)"""
    monkeypatch.setenv("ROOMS_WS_PING_TIMEOUT_S", "soon")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == "server: ROOMS_WS_PING_TIMEOUT_S must be a positive number, got 'soon'"
