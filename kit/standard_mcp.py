"""The declared tools as a standard MCP server (streamable HTTP) on `/mcp`, for any MCP client.

Each MCP session (`Mcp-Session-Id`) is a session of the worker (`sessions.py`) with an
environment of its own, created and reset when the session is initialized and closed when it
ends: at its client's `DELETE`, after `SESSION_TIMEOUT_S` idle (its id then answers 404, so
the client initializes anew; an open GET stream does not keep an idle session alive), or when
the server stops. An `initialize` past `MAX_CONCURRENT_ENVS` gets HTTP 503.

The transport is mcp's own (`StreamableHTTPSessionManager` over a low-level `Server`), with
the body limit of every other door (`<PREFIX>MAX_PAYLOAD_BYTES`). Which requests are its own:
those carrying an `Mcp-Session-Id`, GET and DELETE, and POSTs whose `Accept` lists
`text/event-stream` (the MCP specification has every client send it); OpenEnv's JSON-RPC
dialect sends none of these, so both share the path and no body is parsed to tell them apart.
The transport is imported and started by the first standard MCP request a process receives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from openenv.core.env_server.interfaces import Environment
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .mcp import ToolCallError, Tools
from .package import NAME
from .sessions import Door, Session, Sessions, call_in_process
from .workers import Workers

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

MCP_PATH = "/mcp"
SESSION_HEADER = "mcp-session-id"
EVENT_STREAM = "text/event-stream"


def is_standard_request(scope: Scope) -> bool:
    """Whether an `/mcp` request is the standard transport's (not OpenEnv's JSON-RPC dialect)."""
    if scope["method"] in ("GET", "DELETE"):
        return True
    headers = Headers(scope=scope)
    return SESSION_HEADER in headers or EVENT_STREAM in headers.get("accept", "")


class StandardMcp:
    """mcp's streamable HTTP transport for the tools, each MCP session on an environment of its own."""

    def __init__(self, tools: Tools, env: type[Environment[Any, Any, Any]], max_body_bytes: int) -> None:
        self.tools = tools
        self.env = env
        self.max_body_bytes = max_body_bytes
        self.start: Callable[[], Awaitable[ASGIApp]] | None = None
        self.started: ASGIApp | None = None
        self.starting = anyio.Lock()

    def server(self) -> Server[Any, Any]:
        """A low-level MCP server whose sessions each hold an environment (its lifespan)."""
        from mcp import types
        from mcp.server.lowlevel import Server

        env_class = self.env

        @asynccontextmanager
        async def environment(_: Server[Any, Any]) -> AsyncIterator[Environment[Any, Any, Any]]:
            env = env_class()
            try:
                reset = env.reset_async()
                if hasattr(reset, "__await__"):
                    await reset
                yield env
            finally:
                env.close()

        server: Server[Any, Any] = Server(NAME, lifespan=environment)

        @server.list_tools()  # type: ignore[no-untyped-call,untyped-decorator]
        async def list_tools() -> list[types.Tool]:
            return self.tools.list()

        @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]  # arguments: mcp.py validates
        async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            env = server.request_context.lifespan_context
            try:
                result = await self.tools.call(env, name, arguments)
            except ToolCallError as error:
                return types.CallToolResult(content=[types.TextContent(type="text", text=str(error))], isError=True)
            return types.CallToolResult(content=list(result.content), structuredContent=result.structured_content)

        return server

    def manager(self) -> StreamableHTTPSessionManager:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        logging.getLogger("mcp.server.streamable_http").addFilter(STREAM_ENDS_QUIETLY)

        # Sessions are admitted, counted and ended by idleness in sessions.py: none of the manager's own bounds.
        return StreamableHTTPSessionManager(
            app=self.server(),
            json_response=True,  # a call is answered with its JSON, not an event stream of one event
            session_idle_timeout=None,
            max_request_body_size=self.max_body_bytes,
            max_sessions=None,
        )

    @asynccontextmanager
    async def available(self) -> AsyncIterator[None]:
        """Let requests start the transport while this context is open (the app's lifespan); stop it after."""
        stopping = anyio.Event()

        async def run(*, task_status: TaskStatus[ASGIApp]) -> None:
            manager = self.manager()
            async with manager.run():
                task_status.started(manager.handle_request)
                await stopping.wait()

        async with anyio.create_task_group() as task_group:
            self.start = lambda: task_group.start(run)
            try:
                yield
            finally:
                self.start = self.started = None
                stopping.set()

    async def app(self) -> ASGIApp:
        """The transport, started by the first request that needs it."""
        if self.started is not None:
            return self.started
        async with self.starting:
            if self.started is None:
                if self.start is None:
                    raise RuntimeError("The standard MCP transport runs only while the app's lifespan does")
                self.started = await self.start()
            return self.started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (await self.app())(scope, receive, send)


class StandardMcpDoor:
    """ASGI middleware: `/mcp`'s standard MCP requests go to the transport, each MCP session a worker session.

    Session ids are the transport's, prefixed with the owning worker's pid (`<pid>.<id>`): a request
    for another worker's session is handed to that worker (`workers.py`).
    """

    def __init__(self, app: ASGIApp, standard: StandardMcp, sessions: Sessions, workers: Workers) -> None:
        self.app = app
        self.standard = standard
        self.sessions = sessions
        self.workers = workers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH or not is_standard_request(scope):
            await self.app(scope, receive, send)
            return
        tagged = Headers(scope=scope).get(SESSION_HEADER)
        if tagged is None and scope["method"] == "POST":
            await self.open(scope, receive, send)
            return
        if tagged is None:
            await self.standard(scope, receive, await self.tagging(send))
            return
        replica, worker, session_id = self.workers.owner(tagged)
        if not await self.workers.is_this_replica(replica):
            await self.hand_over(scope, receive, send, replica=replica)
        elif worker is not None and worker != self.workers.pid:
            await self.hand_over(scope, receive, send, worker=worker)
        else:
            await self.serve(session_id, with_session_header(scope, session_id), receive, send)

    async def open(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request that may open a session (`initialize`): admitted first, named from the answer's header."""
        session = self.sessions.admit(Door.MCP_STANDARD, self.terminating)
        if session is None:
            await refuse(send, 503, self.sessions.refusal())
            return
        answer: dict[str, Any] = {}
        try:
            await self.standard(scope, receive, watching(await self.tagging(send), answer))
        finally:
            opened = answer.get("session_id")
            if answer.get("status", 500) < 400 and isinstance(opened, str):
                self.sessions.name(session, opened)
            else:
                self.sessions.release(session)

    async def serve(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """A request of an open session: marks it used, and its end when it ends it."""
        session = self.sessions.find(Door.MCP_STANDARD, session_id)
        send = await self.tagging(send)
        if session is None:  # not a session this worker holds (ended, or never opened): the transport says 404
            if self.sessions.metrics is not None:
                self.sessions.metrics.refused(Door.MCP_STANDARD, "expired")
            await self.standard(scope, receive, send)
            return
        answer: dict[str, Any] = {}
        streaming = scope["method"] == "GET"  # an open GET stream is no activity: it does not keep a session alive
        session.touch()
        session.busy = not streaming
        try:
            await self.standard(scope, receive, watching(send, answer))
        finally:
            session.busy = False
            session.touch()
            deleted = scope["method"] == "DELETE" and answer.get("status", 500) < 300
            if deleted or answer.get("status") == 404:
                self.sessions.release(session)

    async def hand_over(
        self, scope: Scope, receive: Receive, send: Send, *, replica: str | None = None, worker: int | None = None
    ) -> None:
        """A request for another replica's or worker's session, answered by its owner; 404 if it is gone."""
        body = b""
        if scope["method"] == "POST":
            message = await receive()  # the bounds (limits.py) read the whole body already: one message
            body = message.get("body", b"")
        if replica is not None:
            reached = await self.workers.forward_to_replica(replica, scope, body, send)
        else:
            reached = worker is not None and await self.workers.forward(worker, scope, body, send)
        if not reached:
            await refuse(send, 404, "Session not found", code=-32600)

    async def tagging(self, send: Send) -> Send:
        """`send` whose `Mcp-Session-Id` headers name this worker (and replica)."""
        name = SESSION_HEADER.encode()
        prefix = (await self.workers.tag("")).encode()

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, prefix + v if k.lower() == name else v) for k, v in message.get("headers", [])]
                message = {**message, "headers": headers}
            await send(message)

        return send_tagged

    async def terminating(self, session: Session, reason: str) -> None:
        """End an idle session as its client's DELETE would: the transport forgets it, its id answers 404."""
        if session.key is not None:
            headers = ((SESSION_HEADER.encode(), session.key.encode()),)
            await call_in_process(self.standard, "DELETE", MCP_PATH, headers=headers)


class StreamEndsQuietly(logging.Filter):
    """Leaves out mcp's traceback for a GET stream that ends with its session (a `DELETE`, or idleness): its
    writer then finds the stream closed (`anyio.ClosedResourceError`), the ordinary end of the stream."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.msg == "Error in standalone SSE writer" and isinstance(error, anyio.ClosedResourceError))


STREAM_ENDS_QUIETLY = StreamEndsQuietly()


def with_session_header(scope: Scope, session_id: str) -> Scope:
    """`scope` whose `Mcp-Session-Id` is the transport's own id (without the worker's pid)."""
    headers = [(k, v) for k, v in scope["headers"] if k != SESSION_HEADER.encode()]
    return {**scope, "headers": [*headers, (SESSION_HEADER.encode(), session_id.encode())]}


def watching(send: Send, answer: dict[str, Any]) -> Send:
    """`send` noting the response's status and the transport's session id in `answer` (before `tagging`)."""

    async def send_watching(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["session_id"] = Headers(raw=message.get("headers", [])).get(SESSION_HEADER)
        await send(message)

    return send_watching


async def refuse(send: Send, status: int, reason: str, code: int = -32000) -> None:
    """A JSON-RPC error answer with HTTP `status` (mcp's own form of a refusal)."""
    body = json.dumps({"jsonrpc": "2.0", "id": "server-error", "error": {"code": code, "message": reason}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["StandardMcp", "StandardMcpDoor", "is_standard_request"]
