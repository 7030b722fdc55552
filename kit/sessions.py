"""One session model for every door: one limit, one idle rule, one count.

Every environment a worker holds for a client is a `Session` of the worker's `Sessions`,
whatever door opened it: a `/ws` WebSocket, OpenEnv's MCP WebSocket and HTTP sessions
(`openenv/session/create`), or a standard MCP session (`initialize`). A door asks
`admit()` before it opens one (past `MAX_CONCURRENT_ENVS` the answer is no, and the door
refuses in its own protocol), `touch()`es it on each request, and `release()`s it when it
ends. A session idle for `SESSION_TIMEOUT_S` is ended for real by the door's `end`: its
socket closed with an error that says so, or its id forgotten, so that a later request is
refused, never served by a new episode.

`SessionDoors` is the door of OpenEnv's own routes (ASGI middleware); the standard MCP door
is in `mcp.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from openenv.core.env_server.exceptions import SessionCapacityError
from openenv.core.env_server.http_server import HTTPEnvServer
from openenv.core.env_server.mcp_types import JsonRpcErrorCode, JsonRpcResponse
from openenv.core.env_server.types import WSErrorCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .metrics import FrameMeter, Metrics

EXPIRED_CODE = "SESSION_EXPIRED"
EXPIRED_CLOSE_CODE = 4408  # a WebSocket close code of the application range: "request timeout"
WS_PATH = "/ws"
MCP_PATH = "/mcp"
SESSION_QUERY = "session_id"


class Door(str, Enum):
    """How a session was opened."""

    WS = "ws"
    MCP_OPENENV = "mcp-openenv"
    MCP_STANDARD = "mcp-standard"


Ender = Callable[["Session", str], Awaitable[None]]


@dataclass(eq=False)
class Session:
    """One environment held for one client: where it came from, when it was last used, how to end it."""

    door: Door
    end: Ender
    last_active: float = field(default_factory=time.monotonic)
    key: str | None = None  # the id its protocol gives it (OpenEnv's session_id, Mcp-Session-Id)
    busy: bool = False  # a request of it is being served: it is not idle, however long that takes
    ended: bool = False
    idle_since: Callable[[], float | None] | None = None  # where the door keeps the last activity instead

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def idle_for(self, now: float) -> float:
        """Seconds since the session's client last did something."""
        if self.busy:
            return 0.0
        if self.idle_since is None:
            return now - self.last_active
        last = self.idle_since()
        return float("inf") if last is None else now - max(self.last_active, last)  # None: its door forgot it


class Sessions:
    """The sessions a worker holds, at most `limit`, each ended after `idle_timeout_s` idle."""

    def __init__(self, limit: int, idle_timeout_s: float) -> None:
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.open: set[Session] = set()
        self.by_key: dict[tuple[Door, str], Session] = {}
        self.metrics: Metrics | None = None  # metrics.py counts what happens to sessions, when it is on

    def admit(self, door: Door, end: Ender) -> Session | None:
        """A new session, or None when the worker holds `limit` already."""
        if len(self.open) >= self.limit:
            if self.metrics is not None:
                self.metrics.refused(door, "capacity")
            return None
        session = Session(door, end)
        self.open.add(session)
        if self.metrics is not None:
            self.metrics.opened_session(door)
        return session

    def name(self, session: Session, key: str) -> None:
        """Record the id the session's protocol gave it."""
        session.key = key
        self.by_key[(session.door, key)] = session

    def find(self, door: Door, key: str) -> Session | None:
        return self.by_key.get((door, key))

    def release(self, session: Session) -> None:
        """The session has ended: its slot is free."""
        if session in self.open:
            self.open.remove(session)
            if self.metrics is not None:
                self.metrics.closed_session(session.door)
        if session.key is not None and self.by_key.get((session.door, session.key)) is session:
            del self.by_key[(session.door, session.key)]

    def counts(self) -> dict[str, int]:
        """Open sessions by door."""
        counts = {door.value: 0 for door in Door}
        for session in self.open:
            counts[session.door.value] += 1
        return counts

    def refusal(self) -> str:
        """What a client past the limit is told (OpenEnv's wording)."""
        return str(SessionCapacityError(active_sessions=len(self.open), max_sessions=self.limit))

    async def reap_forever(self) -> None:
        """End every session idle past the timeout, checking a few times per timeout."""
        interval = max(0.1, min(self.idle_timeout_s / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            await self.reap()

    async def reap(self) -> None:
        now = time.monotonic()
        expired = [s for s in self.open if not s.ended and s.idle_for(now) > self.idle_timeout_s]
        for session in expired:
            session.ended = True
            if self.metrics is not None:
                self.metrics.reaped_session(session.door)
        reason = (
            f"{EXPIRED_CODE}: the session was idle for more than {self.idle_timeout_s:g} s "
            f"(SESSION_TIMEOUT_S) and the server ended it; reset() starts a new episode"
        )
        await asyncio.gather(*(self.ending(session, reason) for session in expired))

    async def ending(self, session: Session, reason: str) -> None:
        try:
            await session.end(session, reason)
        finally:
            self.release(session)


class SessionDoors:
    """ASGI middleware: OpenEnv's `/ws`, its MCP WebSocket and its HTTP MCP sessions go through `sessions`."""

    def __init__(self, app: ASGIApp, sessions: Sessions, server: HTTPEnvServer) -> None:
        self.app = app
        self.sessions = sessions
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] in (WS_PATH, MCP_PATH):
            await self.websocket(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == MCP_PATH and scope["method"] == "POST":
            await self.app(scope, receive, self.watching_openenv_sessions(send))
        else:
            await self.app(scope, receive, send)

    # --- WebSockets ----------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        jsonrpc = scope["path"] == MCP_PATH
        metrics = self.sessions.metrics
        meter = metrics.frame_meter(scope) if metrics is not None else None
        send_counted = meter.sending(send) if meter is not None else send  # for the frames sent here
        attached = self.attached_session(scope)
        if attached is not None:
            session, owned = attached, False
        else:
            admitted = self.sessions.admit(
                Door.MCP_OPENENV if jsonrpc else Door.WS, ending_socket(send_counted, jsonrpc)
            )
            if admitted is None:
                await refuse_socket(receive, send_counted, self.sessions, jsonrpc)
                return
            session, owned = admitted, True
        previous_end = session.end
        if not owned:
            session.end = also_ending_socket(previous_end, send_counted, jsonrpc)
        closed = (lambda: self.sessions.release(session)) if owned else (lambda: None)
        try:
            await self.app(scope, tracked_receive(session, receive, meter), tracked_send(session, send, closed, meter))
        finally:
            if owned:
                self.sessions.release(session)
            else:
                session.end = previous_end

    def attached_session(self, scope: Scope) -> Session | None:
        """The HTTP MCP session a `/ws?session_id=...` handshake attaches to, if the worker holds it."""
        requested = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(SESSION_QUERY)
        if not requested or scope["path"] != WS_PATH:
            return None
        return self.sessions.find(Door.MCP_OPENENV, requested[0])

    # --- OpenEnv's HTTP MCP sessions -----------------------------------------------------------

    def watching_openenv_sessions(self, send: Send) -> Send:
        """`send` that counts the sessions `openenv/session/create` opens and `close` ends (read from the
        answer, which the server wrote: the request itself is parsed by OpenEnv alone, once)."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_watching(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = await self.counted_answer(b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return send_watching

    async def counted_answer(self, body: bytes) -> bytes:
        if b'"session_id"' not in body:
            return body
        answer = json.loads(body)
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("session_id"), str):
            return body
        session_id: str = result["session_id"]
        if result.get("closed") is True:
            known = self.sessions.find(Door.MCP_OPENENV, session_id)
            if known is not None:
                self.sessions.release(known)
            return body
        if result.get("closing") is True:  # OpenEnv ends an attached session once its WebSocket detaches
            refused = JsonRpcResponse.error_response(
                JsonRpcErrorCode.INVALID_REQUEST,
                f"Session {session_id} is attached to a WebSocket, which owns it: the session ends when that "
                "socket closes, not before",
                request_id=answer.get("id"),
            )
            return refused.model_dump_json().encode()
        if set(result) != {"session_id"} or self.sessions.find(Door.MCP_OPENENV, session_id) is not None:
            return body
        session = self.sessions.admit(Door.MCP_OPENENV, self.closing_openenv_session)
        if session is None:
            await self.close_openenv_session(session_id)
            refused = JsonRpcResponse.error_response(
                JsonRpcErrorCode.SERVER_ERROR, self.sessions.refusal(), request_id=answer.get("id")
            )
            return refused.model_dump_json().encode()
        self.sessions.name(session, session_id)
        session.idle_since = self.openenv_activity(session_id)
        return body

    def openenv_activity(self, session_id: str) -> Callable[[], float | None]:
        """When OpenEnv last saw the session used (its tool calls and attached steps), on our clock."""

        def last_active() -> float | None:
            info = self.server.get_session_info(session_id)
            if info is None:
                return None
            return time.monotonic() - max(0.0, time.time() - info.last_activity_at)

        return last_active

    async def closing_openenv_session(self, session: Session, reason: str) -> None:
        if session.key is not None:
            await self.close_openenv_session(session.key)

    async def close_openenv_session(self, session_id: str) -> None:
        """End an OpenEnv HTTP MCP session through OpenEnv's own `openenv/session/close`, in-process."""
        request = {"jsonrpc": "2.0", "id": 0, "method": "openenv/session/close", "params": {SESSION_QUERY: session_id}}
        await call_in_process(self.app, "POST", MCP_PATH, json.dumps(request).encode())


def tracked_receive(session: Session, receive: Receive, meter: FrameMeter | None = None) -> Receive:
    """`receive` that marks the session used by each frame (and tells `meter`), and ends it for the app once it
    has ended."""

    async def receive_tracked() -> Message:
        message = await receive()
        if meter is not None:
            meter.received(message)
        if session.ended:
            return {"type": "websocket.disconnect", "code": EXPIRED_CLOSE_CODE}
        if message["type"] == "websocket.receive":
            session.busy = True
            session.last_active = time.monotonic()
        return message

    return receive_tracked


def tracked_send(session: Session, send: Send, closed: Callable[[], None], meter: FrameMeter | None = None) -> Send:
    """`send` that marks the session's request answered (and tells `meter`), and calls `closed` as the app closes
    the socket (by then OpenEnv has closed the environment: the slot is free before the client can open another)."""

    async def send_tracked(message: Message) -> None:
        session.busy = False
        if meter is not None:
            meter.sent(message)
        if message["type"] == "websocket.close":
            closed()
        await send(message)

    return send_tracked


def ending_socket(send: Send, jsonrpc: bool) -> Ender:
    """How a WebSocket session ends: an error frame saying why, then a close with `EXPIRED_CLOSE_CODE`."""

    async def end(session: Session, reason: str) -> None:
        with suppress(Exception):  # the client may be gone already
            await send({"type": "websocket.send", "text": error_frame(reason, EXPIRED_CODE, jsonrpc)})
            await send({"type": "websocket.close", "code": EXPIRED_CLOSE_CODE, "reason": reason[:120]})

    return end


def also_ending_socket(end: Ender, send: Send, jsonrpc: bool) -> Ender:
    socket = ending_socket(send, jsonrpc)

    async def end_both(session: Session, reason: str) -> None:
        await socket(session, reason)
        await end(session, reason)

    return end_both


def error_frame(message: str, code: str, jsonrpc: bool, **details: Any) -> str:
    """An error frame in the socket's own protocol: OpenEnv's `/ws` or JSON-RPC (its MCP WebSocket)."""
    if jsonrpc:
        error = JsonRpcResponse.error_response(JsonRpcErrorCode.SERVER_ERROR, message, data={"code": code, **details})
        return error.model_dump_json()
    return json.dumps({"type": "error", "data": {"message": message, "code": code, **details}})


async def refuse_socket(receive: Receive, send: Send, sessions: Sessions, jsonrpc: bool) -> None:
    """Accept a WebSocket only to say why it cannot have a session, then close it (as OpenEnv does)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    counts = {"active_sessions": len(sessions.open), "max_sessions": sessions.limit}
    frame = error_frame(sessions.refusal(), WSErrorCode.CAPACITY_REACHED, jsonrpc, **counts)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": frame})
    await send({"type": "websocket.close", "code": 1000})


async def call_in_process(
    app: ASGIApp, method: str, path: str, body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> int:
    """Make one HTTP request to `app` in this process; return its status."""
    sent = False
    status = 0
    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    await app(scope, receive, send)
    return status


__all__ = ["Door", "Session", "SessionDoors", "Sessions", "call_in_process"]
