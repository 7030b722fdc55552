"""Hostile clients (issue 25): one test per finding, each against a live `server` as production starts it.

Each test asserts the target behaviour of the round's design contract and says, at its top, how it
fails on the code this branch started from. The clients are in tests/hostile_clients.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.conftest import wait_for
from tests.hostile_clients import (
    HealthPoller,
    Server,
    StandardMcp,
    SteppingClient,
    exchange,
    http_head,
    json_bytes,
    openenv_rpc,
    raw_request,
    receive,
    running_server,
    start_server,
    step_frame,
    ws_open,
)

# Together they take a minute or more; on one pytest-xdist worker, so that their timing bounds do not
# compete with each other's attacks.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile")]

MAX_MESSAGE_LENGTH = 1_048_576  # models.py: the longest message, in characters
MAX_PAYLOAD_BYTES = 12 * 1_048_576 + 64 * 1024  # ROOMS_MAX_PAYLOAD_BYTES' default
SMALL_REPLY_BYTES = 4096  # an error reply quotes at most ~200 characters of its input
STALL_S = 1.0  # the bound issue 25 sets on /health and on other sessions' steps during an attack
EVENTUALLY_S = 60.0  # what must happen eventually, polled until then
IDLE_TIMEOUT_S = 2
IDLE_TIMEOUT = {"SESSION_TIMEOUT_S": str(IDLE_TIMEOUT_S)}
# What the tests of sessions without a connection, of the idle rule and of every door share.
HOSTILE_SETTINGS = {"MAX_CONCURRENT_ENVS": "8", "ROOMS_HEADER_TIMEOUT_S": "2", **IDLE_TIMEOUT}

ServerFactory = Callable[..., Server]
Outcome = TypeVar("Outcome")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """`servers(workers=1, **env)`: a live `server` with `env` set, stopped at the end of the test."""
    started: list[Server] = []

    def start(workers: int = 1, **env: str) -> Server:
        server = start_server(tmp_path, env, workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def module_default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("default-server")) as server:
        yield server


@pytest.fixture(scope="module")
def module_hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("hostile-server"), HOSTILE_SETTINGS) as server:
        yield server


# The tests that share a server check what holds whatever ran before them on it: they measure growth
# rather than totals, and they leave no session behind.
@pytest.fixture
def default_server(module_default_server: Server) -> Server:
    """The module's `server` with the default settings, once it holds no session."""
    wait_until_no_session(module_default_server)
    return module_default_server


@pytest.fixture
def hostile_server(module_hostile_server: Server) -> Server:
    """The module's `server` with `HOSTILE_SETTINGS`, once it holds no session."""
    wait_until_no_session(module_hostile_server)
    return module_hostile_server


# --- small helpers ------------------------------------------------------------------------------


def held_ws(server: Server, query: str = "") -> ClientConnection:
    """An open /ws connection, entered as its context (close it with `.close()`)."""
    connection = ws_open(server, query)
    return connection.__enter__()


def first_answer(ws: ClientConnection, frame: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first frame the server sends after `frame` (or before it: a refusal), None if it closed without one."""
    with contextlib.suppress(ConnectionClosed):
        ws.send(json.dumps(frame))
    try:
        return receive(ws)
    except ConnectionClosed:
        return None


def until_closed(ws: ClientConnection, timeout_s: float) -> tuple[list[dict[str, Any]], int | None, str]:
    """The frames the server sends until it closes the socket, the close code and reason (None, "": still open)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            frames.append(receive(ws, max(0.01, deadline - time.monotonic())))
    except TimeoutError:
        return frames, None, ""
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else ""


def error_code(frame: Mapping[str, Any] | None) -> str | None:
    if frame is None or frame.get("type") != "error":
        return None
    code: str | None = frame.get("data", {}).get("code")
    return code


def active(server: Server) -> int:
    count: int = server.capacity()["active_sessions"]
    return count


def wait_until_no_session(server: Server) -> None:
    wait_for(lambda: active(server) == 0, EVENTUALLY_S, "/capacity says no session is held", every_s=0.25)


def within_the_idle_timeout(server: Server, attempt: Callable[[], Outcome]) -> Outcome:
    """What `attempt()` returns from a run shorter than the idle timeout, so that no session it opened expired
    meanwhile: a slower run (a busy machine) proves nothing and is made again once the server holds no session."""
    for _ in range(3):
        started = time.monotonic()
        outcome = attempt()
        if time.monotonic() - started < IDLE_TIMEOUT_S:
            return outcome
        wait_until_no_session(server)
    pytest.fail(f"three runs each took longer than the {IDLE_TIMEOUT_S} s idle timeout: the machine is too busy")


def tool_result_refused(response: httpx.Response, answer: dict[str, Any] | None) -> bool:
    """Whether a standard MCP tool call was refused: an HTTP 4xx, a JSON-RPC error or an `isError` result."""
    if 400 <= response.status_code < 500:
        return True
    return answer is not None and ("error" in answer or bool(answer.get("result", {}).get("isError")))


def outcome_of_call(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The observation a successful `tools/call` answer carries, on either MCP dialect."""
    result = answer["result"]
    content: dict[str, Any] = result.get("structuredContent") or result.get("structured_content")
    return content


def reward_of_call(answer: Mapping[str, Any]) -> float:
    reward: float = outcome_of_call(answer)["reward"]
    return reward


def amplified(prefix: bytes, suffix: bytes, size: int = 12_600_000) -> bytes:
    """`prefix` + `[],[],…[]` + `suffix`, `size` bytes in all: millions of objects for a few bytes each."""
    count = (size - len(prefix) - len(suffix) - 2) // 3
    return prefix + b"[]," * count + b"[]" + suffix


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def refused_or_closed(sock: socket.socket, timeout_s: float) -> int | str:
    """What the server did with a request it was sent: its status code, or "closed"; "open" if neither."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return "open" if not data else "closed"
    except OSError:
        pass
    if data.startswith(b"HTTP/1."):
        return int(data.split(b" ", 2)[1])
    return "closed"


# --- 1. the standard transport's session table -------------------------------------------------


def test_oversized_session_ids_leave_the_memory_as_it_was(servers: ServerFactory) -> None:
    # Today: RSS grows by ~210 MiB (StandardSessions.seen records every 1 MB id), each request answered 413.
    server = servers(workers=2)
    for _ in range(6):  # every worker warm: its MCP transport started, one session of each door served
        with ws_open(server) as ws:
            exchange(ws, {"type": "reset", "data": {}})
            exchange(ws, step_frame("warm"))
        client = StandardMcp(server)
        client.initialize()
        client.call_tool("echo", {"message": "warm"})
        client.delete()
        client.close()
        openenv_rpc(server, "tools/call", {"name": "echo", "arguments": {"message": "warm"}})
    time.sleep(1)
    idle = server.rss_bytes()

    statuses: list[int | None] = []
    for _ in range(200):
        session_id = os.urandom(512 * 1024).hex()  # 1 MiB, a new one each time
        head = http_head(
            "POST",
            "/mcp",
            {
                "Host": "127.0.0.1",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "Mcp-Session-Id": session_id,
                "Content-Length": "4194305",
            },
        )
        statuses.append(raw_request(server.port, head))  # no body
    time.sleep(1)
    grown = server.rss_bytes() - idle

    unexpected = [status for status in statuses if status is not None and not 400 <= status < 500]
    assert not unexpected, f"oversized requests were not refused with a 4xx: {sorted(set(unexpected))}"
    assert grown < 50 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB after 200 oversized session ids"
    assert server.healthy()


# --- 2. amplification ------------------------------------------------------------------------------


def test_an_amplified_body_is_refused_cheaply_on_step_and_ws(default_server: Server) -> None:
    # Today: POST /step is answered 200 (three at once: /health stalled ~9 s); on /ws, /health stalls
    # ~7 s and the error frame echoes the 12.6 MB input back (16.8 MB).
    server = default_server
    body = amplified(b'{"action":{"message":"hi"},"pad":[', b"]}")
    assert len(body) < MAX_PAYLOAD_BYTES  # within the byte limit: only the element bound refuses it
    with HealthPoller(server) as health, ThreadPoolExecutor(3) as pool:
        time.sleep(0.3)
        posts = [
            pool.submit(
                httpx.post,
                f"{server.url}/step",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
            for _ in range(3)  # three at once
        ]
        responses = [post.result() for post in posts]
        time.sleep(0.3)
    for response in responses:
        assert 400 <= response.status_code < 500, f"/step answered {response.status_code} to the amplified body"
        assert len(response.content) < SMALL_REPLY_BYTES, f"a {len(response.content)}-byte error reply"
    assert not health.failures, health.failures
    assert len(health.latencies) >= 2
    assert max(health.latencies) < STALL_S, f"/health took {max(health.latencies):.2f} s during the attack"

    frame = amplified(b'{"type":"step","data":{"message":"hi","pad":[', b"]}}").decode()
    with HealthPoller(server) as health, ws_open(server) as ws:
        exchange(ws, {"type": "reset", "data": {}})
        ws.send(frame)
        raw = ws.recv(timeout=120)
        assert len(raw) < SMALL_REPLY_BYTES, f"the error frame is {len(raw)} bytes: it echoes the input"
        answer = json.loads(raw)
        assert answer["type"] == "error", answer
        after = exchange(ws, step_frame("still here"))
        assert after["type"] == "observation" and after["data"]["reward"] == 1.0
    assert not health.failures, health.failures
    assert max(health.latencies) < STALL_S, f"/health took {max(health.latencies):.2f} s during the /ws frame"


# --- 3. slots held with no connection; simple cross-site requests -----------------------------------


def test_sessions_without_a_connection_are_freed_and_non_json_bodies_are_refused(hostile_server: Server) -> None:
    # Today: the slots are freed (OpenEnv's reaper), but a text/plain POST /mcp is answered 200 and
    # creates a session (a page on any site can send it without a preflight); text/plain /step gets 422.
    server = hostile_server

    def fill_then_ask_for_more() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(lambda _: openenv_rpc(server, "openenv/session/create"), range(8)))
        ninth = openenv_rpc(server, "openenv/session/create")
        with ws_open(server) as ws:
            return created, ninth, first_answer(ws, {"type": "reset", "data": {}})

    created, ninth, on_ws = within_the_idle_timeout(server, fill_then_ask_for_more)
    assert all("session_id" in answer.get("result", {}) for answer in created), created
    assert "error" in ninth, "a 9th session under a limit of 8"
    assert error_code(on_ws) == "CAPACITY_REACHED", on_ws

    wait_until_no_session(server)  # idle for SESSION_TIMEOUT_S: no connection holds them
    with ws_open(server) as ws:
        assert exchange(ws, {"type": "reset", "data": {}})["type"] == "observation"
        assert exchange(ws, step_frame("free"))["data"]["reward"] == 0.4
    wait_until_no_session(server)

    create = json_bytes({"jsonrpc": "2.0", "id": 1, "method": "openenv/session/create", "params": {}})
    simple_types = ["text/plain", "application/x-www-form-urlencoded"]  # what a page may POST without a preflight
    for content_type in simple_types:
        response = httpx.post(f"{server.url}/mcp", content=create, headers={"Content-Type": content_type})
        assert response.status_code == 415, f"POST /mcp as {content_type}: {response.status_code} {response.text}"
    assert active(server) == 0, "a refused text/plain request took a slot"
    for path, body in [("/step", {"action": {"message": "hi"}}), ("/reset", {})]:
        response = httpx.post(f"{server.url}{path}", content=json_bytes(body), headers={"Content-Type": "text/plain"})
        assert response.status_code == 415, f"POST {path} as text/plain: {response.status_code}"


# --- 4. one limit ---------------------------------------------------------------------------------


def test_one_limit_counts_every_door(servers: ServerFactory) -> None:
    # Today: all 9 are accepted (standard MCP sessions take no slot at initialize) and /capacity says 6.
    server = servers(MAX_CONCURRENT_ENVS="8")
    start = threading.Barrier(9)
    held: list[Callable[[], object]] = []
    lock = threading.Lock()

    def keep(close: Callable[[], object]) -> None:
        with lock:
            held.append(close)

    def open_ws() -> tuple[str, bool, bool]:
        ws = held_ws(server)
        keep(ws.close)
        start.wait(30)
        answer = first_answer(ws, {"type": "reset", "data": {}})
        return "ws", answer is not None and answer["type"] == "observation", error_code(answer) == "CAPACITY_REACHED"

    def open_openenv() -> tuple[str, bool, bool]:
        start.wait(30)
        answer = openenv_rpc(server, "openenv/session/create")
        session_id = answer.get("result", {}).get("session_id")
        if session_id:
            keep(lambda: openenv_rpc(server, "openenv/session/close", {"session_id": session_id}))
        return "mcp-openenv", bool(session_id), "error" in answer

    def open_standard() -> tuple[str, bool, bool]:
        client = StandardMcp(server)
        keep(client.close)
        start.wait(30)
        response = client.initialize()
        if response.status_code == 200:
            keep(client.delete)
        return "mcp-standard", response.status_code == 200, response.status_code == 503

    with ThreadPoolExecutor(9) as pool:
        outcomes = [pool.submit(door).result for door in [open_ws, open_openenv, open_standard] * 3]
        results = [outcome(60) for outcome in outcomes]
    try:
        refused = [(door, proper) for door, accepted, proper in results if not accepted]
        assert len(refused) == 1, f"{len(refused)} of 9 refused under a limit of 8: {results}"
        door, proper = refused[0]
        assert proper, f"the refused {door} session was not refused as its door refuses: {results}"
        capacity = server.capacity()
        assert capacity["active_sessions"] == 8, capacity
        doors = ("ws", "mcp-openenv", "mcp-standard")
        accepted_by_door = {name: sum(1 for d, ok, _ in results if d == name and ok) for name in doors}
        assert {name: capacity["by_door"].get(name) for name in doors} == accepted_by_door, capacity
    finally:
        for close in reversed(held):
            with contextlib.suppress(Exception):
                close()


# --- 5. one idle rule, and an ended session is ended for real ----------------------------------------


def test_idle_sessions_of_every_door_are_ended(hostile_server: Server) -> None:
    # Today: the idle /ws session gets no frame and its socket stays open (no SESSION_EXPIRED within 30 s);
    # past that, /capacity never says 0 (standard MCP sessions are not reaped).
    server = hostile_server
    with contextlib.ExitStack() as stack:
        ws = stack.enter_context(ws_open(server))
        exchange(ws, {"type": "reset", "data": {}})
        assert exchange(ws, step_frame("one"))["type"] == "observation"

        standard = StandardMcp(server)
        stack.callback(standard.close)
        assert standard.initialize().status_code == 200
        assert standard.call_tool("echo", {"message": "one"})[1] is not None

        session_id = openenv_rpc(server, "openenv/session/create")["result"]["session_id"]
        call = {"name": "echo", "arguments": {"message": "one"}, "session_id": session_id}
        assert "result" in openenv_rpc(server, "tools/call", call)

        # A standard MCP session whose only traffic is its GET stream, held open meanwhile.
        streamed = StandardMcp(server)
        stack.callback(streamed.close)
        assert streamed.initialize().status_code == 200
        _, first = streamed.call_tool("echo", {"message": "one"})
        assert first is not None and outcome_of_call(first)["metadata"]["step"] == 1
        stream = httpx.Client(timeout=httpx.Timeout(10, read=EVENTUALLY_S))
        stack.callback(stream.close)

        def hold_get_stream() -> None:
            with (
                contextlib.suppress(Exception),
                stream.stream("GET", f"{server.url}/mcp", headers=streamed.headers()) as response,
            ):
                for _ in response.iter_lines():
                    pass

        threading.Thread(target=hold_get_stream, daemon=True).start()

        frames, code, reason = until_closed(ws, 30)
        assert [error_code(frame) for frame in frames] == ["SESSION_EXPIRED"], frames or "no frame within 30 s"
        assert code == 4408, f"closed with {code} {reason!r}"
        assert reason.startswith("SESSION_EXPIRED"), reason

        wait_until_no_session(server)
        response, answer = standard.call_tool("echo", {"message": "two"})
        assert response.status_code == 404, f"an expired standard MCP session answered {response.status_code}: {answer}"
        expired = openenv_rpc(server, "tools/call", call)
        assert "error" in expired, expired
        assert "SESSION_EXPIRED" in expired["error"]["message"] or "Unknown session_id" in expired["error"]["message"]
        response, answer = streamed.call_tool("echo", {"message": "two"})
        assert response.status_code == 404, f"a session held by its GET stream answered: {answer}"
        assert active(server) == 0


def test_an_ended_session_never_keeps_working(servers: ServerFactory) -> None:
    # Today: openenv/session/close of a session attached on /ws is answered with a success
    # ({"closed": false, "closing": true}) rather than refused; past that, all 4 reaped /ws sessions still
    # answer steps beside the 4 new ones (8 stepping under a limit of 4).
    server = servers(MAX_CONCURRENT_ENVS="4", **IDLE_TIMEOUT)
    session_id = openenv_rpc(server, "openenv/session/create")["result"]["session_id"]
    with ws_open(server, f"session_id={session_id}") as owner:
        assert exchange(owner, {"type": "reset", "data": {}})["type"] == "observation"
        closed = openenv_rpc(server, "openenv/session/close", {"session_id": session_id})
        assert "error" in closed, f"another client closed a session attached on /ws: {closed}"
        for step in range(1, 4):
            answer = exchange(owner, step_frame("mine"))
            assert answer["type"] == "observation" and answer["data"]["observation"]["metadata"]["step"] == step
        assert active(server) == 1
    wait_until_no_session(server)

    with contextlib.ExitStack() as stack:
        old = [stack.enter_context(ws_open(server)) for _ in range(4)]
        for ws in old:
            assert exchange(ws, step_frame("old"))["type"] == "observation"
        wait_until_no_session(server)  # all four idle past SESSION_TIMEOUT_S

        def fill_then_ask_for_a_fifth() -> dict[str, Any] | None:
            new = [stack.enter_context(ws_open(server)) for _ in range(4)]
            for ws in new:
                assert exchange(ws, step_frame("new"))["type"] == "observation", "a new session did not fit"
            with ws_open(server) as fifth:
                return first_answer(fifth, step_frame("fifth"))

        assert error_code(within_the_idle_timeout(server, fill_then_ask_for_a_fifth)) == "CAPACITY_REACHED"
        stepped = []
        for ws in old:
            with contextlib.suppress(ConnectionClosed):
                ws.send(json.dumps(step_frame("still there?")))
            frames, _, _ = until_closed(ws, 5)
            stepped += [frame for frame in frames if frame.get("type") == "observation"]
        assert not stepped, f"{len(stepped)} steps answered on ended sessions, beyond the limit of 4"


# --- 6. one bad tool call ---------------------------------------------------------------------------


def test_a_huge_bad_tool_call_is_refused_without_stalling_others_or_filling_the_log(default_server: Server) -> None:
    # Today: another session's step waits 3-4 s (each 2 M-character call takes that long), and the log
    # grows by ~14 MB (FastMCP logs the whole rejected input).
    server = default_server
    too_long = "a" * (2 * MAX_MESSAGE_LENGTH)
    standard = StandardMcp(server)
    assert standard.initialize().status_code == 200  # the transport started before the clock runs
    with SteppingClient(server) as other:
        time.sleep(0.3)
        log_before = server.log_size()
        response, answer = standard.call_tool("echo", {"message": too_long})
        assert tool_result_refused(response, answer), f"standard MCP: {response.status_code} {str(answer)[:300]}"
        openenv = openenv_rpc(server, "tools/call", {"name": "echo", "arguments": {"message": too_long}})
        assert "error" in openenv, str(openenv)[:300]
        with ws_open(server) as ws:
            call = {"type": "call_tool", "tool_name": "echo", "arguments": {"message": too_long}}
            tool_step = {"type": "step", "data": call}
            stepped = exchange(ws, tool_step, timeout_s=120)
            refused = stepped["type"] == "error" or stepped["data"]["observation"].get("error") is not None
            assert refused, str(stepped)[:300]
        time.sleep(0.5)
        log_growth = server.log_size() - log_before
    standard.delete()
    standard.close()
    assert not other.errors, other.errors
    assert len(other.latencies) >= 3
    assert max(other.latencies) < STALL_S, f"another session's step took {max(other.latencies):.2f} s"
    assert log_growth < 64 * 1024, f"the log grew by {log_growth} bytes"


# --- 7. a valid message at every door -----------------------------------------------------------------


def test_a_4_mib_emoji_message_is_accepted_at_every_door(default_server: Server) -> None:
    # Today: the standard MCP transport answers 413 (mcp's own 4 MiB body limit).
    server = default_server
    message = "😀" * MAX_MESSAGE_LENGTH  # 4 MiB of UTF-8, the longest message the model allows
    reward = MAX_MESSAGE_LENGTH / 10

    standard = StandardMcp(server, timeout_s=120)
    assert standard.initialize().status_code == 200
    response, answer = standard.call_tool("echo", {"message": message})
    assert response.status_code == 200, f"standard MCP: {response.status_code} {response.text[:300]}"
    assert answer is not None and not answer["result"].get("isError"), str(answer)[:300]
    assert reward_of_call(answer) == reward
    standard.delete()
    standard.close()

    openenv = openenv_rpc(server, "tools/call", {"name": "echo", "arguments": {"message": message}}, timeout_s=120)
    assert "result" in openenv, str(openenv)[:300]
    assert reward_of_call(openenv) == reward

    with ws_open(server) as ws:
        exchange(ws, {"type": "reset", "data": {}})
        stepped = exchange(ws, step_frame(message), timeout_s=120)
        assert stepped["type"] == "observation", str(stepped)[:300]
        assert stepped["data"]["reward"] == reward
        assert stepped["data"]["observation"]["message_length"] == MAX_MESSAGE_LENGTH

    response = httpx.post(
        f"{server.url}/step",
        content=json_bytes({"action": {"message": message}}),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 200, f"/step: {response.status_code} {response.text[:300]}"
    assert response.json()["reward"] == reward


# --- 8. nesting -------------------------------------------------------------------------------------


def test_deep_nesting_gets_typed_errors_and_the_session_goes_on(default_server: Server) -> None:
    # Today: a frame nested 254 deep ends the /ws session (SESSION_ERROR "Maximum serialization depth
    # exceeded"); POST /mcp nested 100,000 deep answers 500.
    server = default_server
    with ws_open(server) as ws:
        exchange(ws, {"type": "reset", "data": {}})
        for step, depth in enumerate([254, 600, 980], start=1):
            ws.send(f'{{"type":"step","data":{{"message":"hi","x":{nested(depth)}}}}}')
            raw = ws.recv(timeout=30)
            assert len(raw) < SMALL_REPLY_BYTES, f"a {len(raw)}-byte error frame"
            answer = json.loads(raw)
            assert error_code(answer) == "INVALID_JSON", f"nested {depth} deep: {raw[:300]!r}"
            after = exchange(ws, step_frame("hi"))
            assert after["type"] == "observation", f"after a frame nested {depth} deep: {str(after)[:300]}"
            assert after["data"]["observation"]["metadata"]["step"] == step

    deep = nested(100_000)
    bodies = {
        "/mcp": f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{deep}}}}}',
        "/step": f'{{"action":{{"message":{deep}}}}}',
    }
    for path, body in bodies.items():
        response = httpx.post(f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, f"{path} nested 100,000 deep: {response.status_code}"
        assert "Traceback" not in response.text
        assert len(response.content) < SMALL_REPLY_BYTES
        response.json()  # a JSON error
    assert server.healthy()


# --- 9. before any token ----------------------------------------------------------------------------


def test_idle_and_slowloris_connections_are_closed_and_health_answers(servers: ServerFactory) -> None:
    # Today: none of the 600 connections is closed by the server (no header-read timeout).
    server = servers(workers=2, ROOMS_HEADER_TIMEOUT_S="2")
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
    every = idle + slow
    opened = time.monotonic()
    stop_trickling = threading.Event()

    def trickle() -> None:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not stop_trickling.wait(0.5):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-S: 1\r\n")  # never the blank line that ends the head

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        for _ in range(3):  # while they are all open
            response = httpx.get(f"{server.url}/health", timeout=5)
            assert response.status_code == 200
            time.sleep(0.2)

        closed: set[socket.socket] = set()
        with selectors.DefaultSelector() as selector:
            for sock in every:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, sock)
            deadline = opened + 2 + 10  # ROOMS_HEADER_TIMEOUT_S plus margin
            while len(closed) < len(every) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    ready: socket.socket = key.data
                    try:
                        ended = not ready.recv(65536)  # a 408 first is fine; then the end
                    except BlockingIOError:
                        continue
                    except OSError:
                        ended = True
                    if ended:
                        closed.add(ready)
                        selector.unregister(ready)
        still_open, waited = len(every) - len(closed), time.monotonic() - opened
        assert not still_open, f"{still_open} of {len(every)} connections still open {waited:.0f} s after opening"
        assert server.healthy()
    finally:
        stop_trickling.set()
        trickler.join(10)
        for sock in every:
            sock.close()


def test_a_32_mb_header_is_refused_before_it_is_read(servers: ServerFactory) -> None:
    # Today: the server reads all 32 MB of header, then answers 401.
    server = servers(ROOMS_API_TOKEN="hostile-tests-token")
    total = 32 * 2**20
    chunk = b"a" * 65536
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /capacity HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        sent = 0
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # an answer (or the end) while the client is still sending
            try:
                sock.sendall(chunk)
            except OSError:
                break  # refused: the server closed the connection
            sent += len(chunk)
        else:
            with contextlib.suppress(OSError):
                sock.sendall(b"\r\n\r\n")
        outcome = refused_or_closed(sock, 10)
    assert sent < total, f"the server read all {total} bytes of header (then answered {outcome})"
    assert outcome in (431, "closed"), f"a 32 MB header was answered {outcome}"
    assert server.healthy()


# TODO playground: two /web visitors get an environment each and do not see each other's log on /ws/ui
# (issue 25's last finding); the lead designs the playground, and its test.


# --- every door's normal path, under these settings ------------------------------------------------


def test_every_door_still_works_under_the_hostile_settings(hostile_server: Server) -> None:
    # Today: passes (the guard against the fixes above breaking a normal client).
    server = hostile_server
    with ws_open(server) as ws:
        assert exchange(ws, {"type": "reset", "data": {}})["data"]["observation"]["echoed_message"]
        rewards = [exchange(ws, step_frame(message))["data"]["reward"] for message in ["Hi", "Hello, World!", ""]]
        assert rewards == [0.2, 1.3, 0.0]
        assert exchange(ws, {"type": "state"})["data"]["step_count"] == 3

    listed = openenv_rpc(server, "tools/list")
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["echo"]
    assert reward_of_call(openenv_rpc(server, "tools/call", {"name": "echo", "arguments": {"message": "hello"}})) == 0.5
    session_id = openenv_rpc(server, "openenv/session/create")["result"]["session_id"]
    for step in (1, 2):
        call = {"name": "echo", "arguments": {"message": "hello"}, "session_id": session_id}
        answer = openenv_rpc(server, "tools/call", call)
        assert outcome_of_call(answer)["metadata"]["step"] == step
    assert openenv_rpc(server, "openenv/session/close", {"session_id": session_id})["result"]["closed"] is True

    async def standard_session() -> list[int]:
        async with (
            streamable_http_client(f"{server.url}/mcp") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            steps = []
            for message in ["hello", "hello rooms"]:
                result = await session.call_tool("echo", {"message": message})
                assert not result.isError and result.structuredContent is not None
                steps.append(result.structuredContent["metadata"]["step"])
            return steps

    assert asyncio.run(standard_session()) == [1, 2]

    json_headers = {"Content-Type": "application/json"}
    assert httpx.post(f"{server.url}/reset", content=b"{}", headers=json_headers).status_code == 200
    stepped = httpx.post(f"{server.url}/step", content=json_bytes({"action": {"message": "Hi"}}), headers=json_headers)
    assert stepped.status_code == 200 and stepped.json()["reward"] == 0.2
    wait_until_no_session(server)
