"""Declare MCP tools on an environment: `@tool` on a method.

Light on purpose (OpenEnv's reserved names only): an environment imports this without
loading the MCP machinery, which `mcp.py` holds and `create_app` serves.

A tool's name, docstring and annotated parameters are the tool's name, description and
input schema (`Annotated[str, Field(max_length=...)]` included); a call runs the method on
the environment of the caller's session. A tool that returns an `Observation` is a step:
its reward and done are the call's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from openenv.core.env_server.mcp_types import RESERVED_TOOL_NAMES

MethodT = TypeVar("MethodT", bound=Callable[..., Any])
TOOL_MARK = "is_mcp_tool"


def tool(method: MethodT) -> MethodT:
    """Declare an environment method a tool; its name must not be one of OpenEnv's reserved names."""
    if method.__name__ in RESERVED_TOOL_NAMES:
        raise ValueError(
            f"A tool cannot be named {method.__name__!r}: reserved names are {sorted(RESERVED_TOOL_NAMES)}"
        )
    setattr(method, TOOL_MARK, True)
    return method


def declared_tools(env: type[Any]) -> dict[str, Callable[..., Any]]:
    """The methods `env` declares as tools, by name."""
    return {name: member for name, member in inspect.getmembers(env) if getattr(member, TOOL_MARK, False)}


__all__ = ["TOOL_MARK", "declared_tools", "tool"]
