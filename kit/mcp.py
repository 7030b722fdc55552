"""The MCP tools an environment declares (`tools.py`), on every MCP path OpenEnv has.

`create_app` serves them on the session's own environment: `step(ListToolsAction())` /
`step(CallToolAction(...))` (also as the raw `{"type": "list_tools"}` / `{"type":
"call_tool", ...}` step messages), `{"type": "mcp"}` messages on `/ws`, and OpenEnv's
JSON-RPC on `POST /mcp` (OpenEnv's `MCPToolClient`); `standard_mcp.py` serves them to any
MCP client. Nothing here names an environment.

A tool's arguments are validated by a pydantic model made from its signature, before the
tool runs; what is wrong is said without quoting the value (a 2 MB argument is refused in
the time it takes to measure it, and no log line repeats it).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from mcp.types import TextContent
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
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .limits import QUOTED_CHARACTERS
from .tools import declared_tools

if TYPE_CHECKING:
    from .metrics import Metrics

TOOL_ACTIONS: dict[str, type[Action]] = {"list_tools": ListToolsAction, "call_tool": CallToolAction}


class ToolCallError(Exception):
    """A tool call that did not run, or failed: `kind` is OpenEnv's category of it."""

    def __init__(self, kind: ToolErrorType, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ToolResult:
    """A tool call's result, shaped as OpenEnv's MCP handlers and clients read it (`data` is the value)."""

    content: list[TextContent]
    structured_content: dict[str, Any] | None
    data: Any
    meta: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class DeclaredTool:
    """One tool: its method, the model that validates its arguments, and how MCP describes it."""

    name: str
    method: Callable[..., Any]
    arguments: type[BaseModel]
    description: str
    output: type[BaseModel] | None

    @classmethod
    def of(cls, name: str, method: Callable[..., Any]) -> DeclaredTool:
        hints = get_type_hints(method, include_extras=True)
        parameters = list(inspect.signature(method).parameters.values())[1:]  # without self
        fields: dict[str, Any] = {
            p.name: (hints.get(p.name, Any), ... if p.default is inspect.Parameter.empty else p.default)
            for p in parameters
        }
        arguments = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        returned = hints.get("return")
        output = returned if inspect.isclass(returned) and issubclass(returned, BaseModel) else None
        return cls(name, method, arguments, inspect.getdoc(method) or "", output)

    def described(self) -> McpTool:
        return McpTool(
            name=self.name,
            description=self.description,
            inputSchema=self.arguments.model_json_schema(),
            outputSchema=self.output.model_json_schema() if self.output is not None else None,
        )

    def validated(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments as the method takes them, or `ToolCallError` saying what is wrong with them."""
        try:
            return dict(self.arguments.model_validate(arguments))
        except ValidationError as error:
            raise ToolCallError(ToolErrorType.INVALID_ARGS, argument_problems(self.name, error)) from None


def argument_problems(name: str, error: ValidationError) -> str:
    """What is wrong with a tool call's arguments, in words that quote none of their values."""
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        if problem["type"] == "missing":
            problems.append(f"Missing required argument: {where}")
        elif problem["type"] == "extra_forbidden":
            problems.append(f"Unexpected keyword argument: {where}")
        else:
            problems.append(f"{where}: {problem['msg']}")
    return f"Invalid arguments for tool {name!r}: " + "; ".join(problems)[: QUOTED_CHARACTERS * 4]


class Tools:
    """The tools an environment class declares, callable on any of its instances."""

    def __init__(self, env: type[Environment[Any, Any, Any]], methods: dict[str, Callable[..., Any]]) -> None:
        self.name = env.__name__
        self.declared = {name: DeclaredTool.of(name, method) for name, method in methods.items()}
        self.described = [tool.described() for tool in self.declared.values()]
        self.metrics: Metrics | None = None  # metrics.py counts the calls' rewards and errors, when it is on

    @classmethod
    def of(cls, env: type[Environment[Any, Any, Any]]) -> Tools | None:
        """The tools `env` declares, or None if it declares none."""
        methods = declared_tools(env)
        return cls(env, methods) if methods else None

    def list(self) -> list[McpTool]:
        """The tools as MCP describes them (name, description, input and output schemas)."""
        return self.described

    async def call(self, env: Environment[Any, Any, Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call tool `name` on `env`; `ToolCallError` if it is unknown, its arguments are wrong, or it fails."""
        if self.metrics is None:
            return await self.run(env, name, arguments)
        token = self.metrics.calling_tool.set(True)  # a step the tool takes is this call's: counted once, here
        try:
            result = await self.run(env, name, arguments)
        except ToolCallError as error:
            self.metrics.error(error.kind.name)
            raise
        finally:
            self.metrics.calling_tool.reset(token)
        if result.structured_content is not None:
            self.metrics.rewarded(result.structured_content.get("reward"))
        return result

    async def run(self, env: Environment[Any, Any, Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        declared = self.declared.get(name)
        if declared is None:
            reserved = f" ({name!r} is reserved by OpenEnv)" if name in RESERVED_TOOL_NAMES else ""
            raise ToolCallError(ToolErrorType.TOOL_NOT_FOUND, f"Unknown tool: {name[:QUOTED_CHARACTERS]!r}{reserved}")
        values = declared.validated(arguments if isinstance(arguments, dict) else {})
        try:
            result = declared.method(env, **values)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            message = f"Tool {name!r} failed: {str(error)[:QUOTED_CHARACTERS]}"
            raise ToolCallError(ToolErrorType.EXECUTION_ERROR, message) from error
        return tool_result(result)

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
                    return ListToolsObservation(
                        tools=[
                            Tool(name=t.name, description=t.description or "", input_schema=t.inputSchema)
                            for t in tools.list()
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
        except ToolCallError as error:
            return CallToolObservation(
                tool_name=action.tool_name, error=ToolError(error_type=error.kind, message=str(error))
            )
        outcome = result.structured_content or {}
        return CallToolObservation(
            tool_name=action.tool_name,
            result=result,
            reward=outcome.get("reward"),
            done=bool(outcome.get("done", False)),
        )


def tool_result(value: Any) -> ToolResult:
    """A tool's return value as a `ToolResult`: an Observation (or any model) is structured content."""
    if isinstance(value, BaseModel):
        structured: dict[str, Any] | None = value.model_dump(mode="json")
        text = json.dumps(structured)
    elif isinstance(value, dict):
        structured, text = value, json.dumps(value)
    else:
        structured, text = None, str(value)
    return ToolResult(content=[TextContent(type="text", text=text)], structured_content=structured, data=structured)


class ToolClient:
    """What OpenEnv's MCP handlers call tools through (the surface of an MCP client they use),
    calling them in-process on one environment."""

    def __init__(self, tools: Tools, env: Environment[Any, Any, Any]) -> None:
        self.tools = tools
        self.env = env

    async def list_tools(self) -> list[McpTool]:
        return self.tools.list()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        return await self.tools.call(self.env, name, arguments or {})

    def is_connected(self) -> bool:
        return True

    async def __aenter__(self) -> ToolClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


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


__all__ = ["DeclaredTool", "ToolCallError", "ToolResult", "Tools", "accepting_tool_actions"]
