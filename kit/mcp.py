"""The MCP tools an environment declares (`tools.py`), served by `create_app`.

`create_app` serves the tools through every MCP surface OpenEnv has, on the
session's own environment: `step(ListToolsAction())` / `step(CallToolAction(...))`
(also as the raw `{"type": "list_tools"}` / `{"type": "call_tool", ...}` step
messages), `{"type": "mcp"}` messages on `/ws`, and OpenEnv's JSON-RPC on `POST /mcp`
(OpenEnv's `MCPToolClient`). `/mcp` also speaks the standard MCP streamable HTTP
transport (`initialize` and all), for any MCP client: there each MCP session
(`Mcp-Session-Id`) has an environment of its own, created and reset at its first tool
call and closed when the session ends. Nothing here names an environment.

FastMCP's server (0.4 s of start-up and 16 MB in every process) is imported at the
first tool call or standard MCP session, not when the app is built.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import cached_property
from typing import TYPE_CHECKING, Any, get_type_hints

import anyio
from anyio.abc import TaskStatus
from fastapi import FastAPI
from fastmcp.client.client import CallToolResult
from fastmcp.exceptions import NotFoundError, ValidationError
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT
from mcp.types import Tool as McpTool
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.mcp_types import (
    RESERVED_TOOL_NAMES,
    CallToolAction,
    CallToolObservation,
    ListToolsAction,
    ListToolsObservation,
    Tool,
    ToolError,
    ToolErrorType,
)
from openenv.core.env_server.types import Action, Observation
from openenv.core.utils import run_async_safely
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tools import declared_tools

if TYPE_CHECKING:
    from fastmcp import FastMCP

TOOL_ACTIONS: dict[str, type[Action]] = {"list_tools": ListToolsAction, "call_tool": CallToolAction}
MCP_PATH = "/mcp"
SESSION_HEADER = "mcp-session-id"

#: The environment a tool call runs on, set by whoever makes the call in-process.
CALLER_ENVIRONMENT: ContextVar[Environment[Any, Any, Any]] = ContextVar("caller_environment")


class Tools:
    """The tools an environment class declares, on one FastMCP server shared by all its instances."""

    def __init__(self, env: type[Environment[Any, Any, Any]], methods: dict[str, Callable[..., Any]]) -> None:
        self.name = env.__name__
        self.methods = methods
        self.standard_sessions: StandardSessions | None = None

    @cached_property
    def server(self) -> FastMCP[Any]:
        """The FastMCP server of the tools, built (and FastMCP's server imported) at first use."""
        from fastmcp import FastMCP

        server: FastMCP[Any] = FastMCP(self.name)
        for name, method in self.methods.items():
            server.tool(self.on_callers_environment(name, method))
        return server

    @classmethod
    def of(cls, env: type[Environment[Any, Any, Any]]) -> Tools | None:
        """The tools `env` declares, or None if it declares none."""
        methods = declared_tools(env)
        return cls(env, methods) if methods else None

    def on_callers_environment(self, name: str, method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        """`method` as a function of its arguments alone, run on the caller's environment."""
        signature = inspect.signature(method)
        hints = get_type_hints(method, include_extras=True)

        async def call(**arguments: Any) -> Any:
            result = method(await self.callers_environment(), **arguments)
            return await result if inspect.isawaitable(result) else result

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
        call.__annotations__ = {key: value for key, value in hints.items() if key != "self"}
        return call

    async def callers_environment(self) -> Environment[Any, Any, Any]:
        """The environment of an in-process caller, else that of the standard MCP session calling."""
        env = CALLER_ENVIRONMENT.get(None)
        if env is not None:
            return env
        if self.standard_sessions is None:
            raise RuntimeError("This tool call has no environment to run on")
        from fastmcp.server.dependencies import get_context

        return await self.standard_sessions.environment(get_context().session_id)

    async def list(self) -> list[McpTool]:
        """The tools as MCP describes them (name, description, input and output schemas)."""
        return [declared.to_mcp_tool() for declared in await self.server.list_tools()]

    async def call(self, env: Environment[Any, Any, Any], name: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call tool `name` on `env`; raises `NotFoundError`, `ValidationError` or the tool's error."""
        if name in RESERVED_TOOL_NAMES:
            raise NotFoundError(
                f"{name!r} is a reserved name, not a tool: reserved names are {sorted(RESERVED_TOOL_NAMES)}"
            )
        token = CALLER_ENVIRONMENT.set(env)
        try:
            result = await self.server.call_tool(name, arguments)
        finally:
            CALLER_ENVIRONMENT.reset(token)
        content = result.structured_content
        return CallToolResult(content=result.content, structured_content=content, meta=result.meta, data=content)

    def environment(self, env: type[Environment[Any, Any, Any]]) -> type[Environment[Any, Any, Any]]:
        """`env` answering `ListToolsAction` and `CallToolAction` steps, with the `mcp_client` OpenEnv's
        MCP handlers (`/ws` `mcp` messages, `POST /mcp`) call the tools through."""
        tools = self

        class WithTools(env):  # type: ignore[valid-type,misc]
            @property
            def mcp_client(self) -> ToolClient:
                return ToolClient(tools, self)

            def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
                if isinstance(action, (ListToolsAction, CallToolAction)):
                    observation: Observation = run_async_safely(self.step_async(action))  # type: ignore[no-untyped-call]
                    return observation
                return super().step(action, timeout_s=timeout_s, **kwargs)  # type: ignore[no-any-return]

            async def step_async(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
                if isinstance(action, ListToolsAction):
                    described = await tools.list()
                    return ListToolsObservation(
                        tools=[
                            Tool(name=t.name, description=t.description or "", input_schema=t.inputSchema)
                            for t in described
                        ]
                    )
                if isinstance(action, CallToolAction):
                    return await tools.step(self, action)
                return await super().step_async(action, timeout_s=timeout_s, **kwargs)  # type: ignore[no-any-return]

        WithTools.__name__, WithTools.__qualname__, WithTools.__doc__ = env.__name__, env.__qualname__, env.__doc__
        return WithTools

    async def step(self, env: Environment[Any, Any, Any], action: CallToolAction) -> CallToolObservation:
        """A `CallToolAction` step: the tool's result, reward and done, or the error that stopped it."""
        try:
            result = await self.call(env, action.tool_name, action.arguments)
        except Exception as error:
            return CallToolObservation(
                tool_name=action.tool_name, error=ToolError(error_type=error_type(error), message=str(error))
            )
        outcome = result.structured_content or {}
        return CallToolObservation(
            tool_name=action.tool_name,
            result=result,
            reward=outcome.get("reward"),
            done=bool(outcome.get("done", False)),
        )

    def serve_standard_mcp(
        self, app: FastAPI, env: type[Environment[Any, Any, Any]], may_open: Callable[[], bool]
    ) -> None:
        """Make `app`'s `/mcp` answer standard MCP clients too, with an `env` per MCP session while
        `may_open()` allows one more environment.

        The standard transport's requests are those of `initialize`, those carrying an
        `Mcp-Session-Id` header, and GET/DELETE: OpenEnv's JSON-RPC dialect sends none of these.
        """
        sessions = self.standard_sessions = StandardSessions(env, may_open)
        standard = StandardTransport(self)
        previous_lifespan = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(outer: Any) -> AsyncIterator[Any]:
            async with standard.available():
                try:
                    async with previous_lifespan(outer) as state:
                        yield state
                finally:
                    sessions.close_all()

        app.router.lifespan_context = lifespan
        app.add_middleware(StandardMcpRoute, standard=standard, sessions=sessions)


class ToolClient:
    """What OpenEnv's MCP handlers call tools through (the surface of FastMCP's `Client` they use),
    calling them in-process on one environment."""

    def __init__(self, tools: Tools, env: Environment[Any, Any, Any]) -> None:
        self.tools = tools
        self.env = env

    async def list_tools(self) -> list[McpTool]:
        return await self.tools.list()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        return await self.tools.call(self.env, name, arguments or {})

    def is_connected(self) -> bool:
        return True

    async def __aenter__(self) -> ToolClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def error_type(error: Exception) -> ToolErrorType:
    """The category OpenEnv gives a tool call's failure."""
    if isinstance(error, NotFoundError):
        return ToolErrorType.TOOL_NOT_FOUND
    if isinstance(error, ValidationError):
        return ToolErrorType.INVALID_ARGS
    return ToolErrorType.EXECUTION_ERROR


def accepting_tool_actions(action_cls: type[Action]) -> type[Action]:
    """`action_cls`, whose validation also turns OpenEnv's `list_tools` / `call_tool` step data into
    `ListToolsAction` / `CallToolAction`: OpenEnv's server validates step data with the class it is
    given, and publishes that class's schema at `/schema`, which stays `action_cls`'s own."""

    class AcceptingToolActions(action_cls):  # type: ignore[valid-type,misc]
        @classmethod
        def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
            tool_action = TOOL_ACTIONS.get(str(obj.get("type"))) if isinstance(obj, dict) else None
            if tool_action is not None:
                return tool_action.model_validate(obj, *args, **kwargs)
            return action_cls.model_validate(obj, *args, **kwargs)

    AcceptingToolActions.__name__, AcceptingToolActions.__qualname__ = action_cls.__name__, action_cls.__qualname__
    AcceptingToolActions.__doc__ = action_cls.__doc__
    AcceptingToolActions.model_rebuild(force=True)
    return AcceptingToolActions


class StandardSessions:
    """One environment per standard MCP session, from its first tool call until the session ends."""

    def __init__(self, env: type[Environment[Any, Any, Any]], may_open: Callable[[], bool]) -> None:
        self.env = env
        self.may_open = may_open
        self.open: dict[str, Environment[Any, Any, Any]] = {}
        self.last_request: dict[str, float] = {}

    async def environment(self, session_id: str | None) -> Environment[Any, Any, Any]:
        if session_id is None:
            raise RuntimeError("A standard MCP tool call needs a session (Mcp-Session-Id)")
        env = self.open.get(session_id)
        if env is None:
            self.close_expired()
            if not self.may_open():
                raise RuntimeError("The server is at capacity: no environment is free for this MCP session")
            env = self.open[session_id] = self.env()
            self.seen(session_id)
            reset = env.reset_async()
            if inspect.isawaitable(reset):
                await reset
        return env

    def seen(self, session_id: str) -> None:
        self.last_request[session_id] = time.monotonic()

    def close(self, session_id: str) -> None:
        env = self.open.pop(session_id, None)
        self.last_request.pop(session_id, None)
        if env is not None:
            env.close()

    def close_expired(self) -> None:
        """Close the environments of sessions the MCP transport has let expire (idle that long)."""
        now = time.monotonic()
        for session_id, last in list(self.last_request.items()):
            if now - last > DEFAULT_SESSION_IDLE_TIMEOUT:
                self.close(session_id)

    def close_all(self) -> None:
        for session_id in list(self.open):
            self.close(session_id)


class StandardTransport:
    """FastMCP's streamable HTTP app for the tools, built and started at its first request, while
    the app that serves it is running (`available()`), and stopped with that app."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools
        self.starting = anyio.Lock()
        self.start: Callable[[], Awaitable[ASGIApp]] | None = None
        self.started: ASGIApp | None = None

    @asynccontextmanager
    async def available(self) -> AsyncIterator[None]:
        """Let requests start the transport while this context is open; stop it when it closes."""
        stopping = anyio.Event()

        async def run(*, task_status: TaskStatus[ASGIApp]) -> None:
            standard = self.tools.server.http_app(path=MCP_PATH)
            async with standard.router.lifespan_context(standard):
                task_status.started(standard)
                await stopping.wait()

        async with anyio.create_task_group() as task_group:
            self.start = lambda: task_group.start(run)
            try:
                yield
            finally:
                self.start = self.started = None
                stopping.set()

    async def app(self) -> ASGIApp:
        """The transport's app, started by the first request that needs it."""
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


class StandardMcpRoute:
    """ASGI middleware sending `/mcp`'s standard MCP requests to FastMCP, all else to the app."""

    def __init__(self, app: ASGIApp, standard: StandardTransport, sessions: StandardSessions) -> None:
        self.app = app
        self.standard = standard
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) != MCP_PATH:
            return await self.app(scope, receive, send)
        session_id = Headers(scope=scope).get(SESSION_HEADER)
        if session_id is not None or scope["method"] in ("GET", "DELETE"):
            return await self.serve_standard(session_id, scope, receive, send)
        body, receive = await read_body(receive)
        if opens_a_session(body):
            return await self.serve_standard(None, scope, receive, send)
        return await self.app(scope, receive, send)

    async def serve_standard(self, session_id: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        if session_id is None:
            return await self.standard(scope, receive, send)
        self.sessions.seen(session_id)
        status: list[int] = []

        async def send_watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.standard(scope, receive, send_watching)
        finally:
            ended = scope["method"] == "DELETE" and status and status[0] < 300
            if ended or status[:1] == [404]:
                self.sessions.close(session_id)


def route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The request's body, and a `receive` that hands it on again."""
    chunks: list[bytes] = []
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return b"".join(chunks), replay


def opens_a_session(body: bytes) -> bool:
    """Whether a JSON-RPC body is a standard MCP `initialize` (OpenEnv's dialect has none)."""
    try:
        request = json.loads(body)
    except ValueError:
        return False
    requests = request if isinstance(request, list) else [request]
    return any(isinstance(r, dict) and r.get("method") == "initialize" for r in requests)


__all__ = ["Tools", "accepting_tool_actions"]
