"""The `echo` tool over every MCP surface: each call is a rewarded step of its session."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from openenv.core.env_server.mcp_types import CallToolAction, ListToolsAction, ToolErrorType
from openenv.core.mcp_client import MCPToolClient
from websockets.sync.client import ClientConnection, connect

from rooms import RoomsAction, RoomsEnv
from rooms.kit.tools import tool
from rooms.models import MAX_MESSAGE_LENGTH
from rooms.server.rooms_environment import RoomsEnvironment
from tests.conftest import InProcessServer

TOO_LONG = "a" * (MAX_MESSAGE_LENGTH + 1)
# Each bad call, and what its error says.
BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("nope", {"message": "hi"}, "Unknown tool"),
    ("echo", {}, "Missing required argument"),
    ("echo", {"message": "hi", "extra": 1}, "Unexpected keyword argument"),
    ("echo", {"message": 3}, "valid string"),
    ("echo", {"message": TOO_LONG}, f"at most {MAX_MESSAGE_LENGTH} characters"),
]
RESERVED_CALL: tuple[str, dict[str, Any], str] = ("reset", {}, "reserved")


def exchange(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(message))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=30))
    return answer


def open_environments(server: InProcessServer) -> int:
    count: int = requests.get(f"{server.url}/capacity", timeout=10).json()["active_sessions"]
    return count


async def test_an_mcp_sdk_client_initializes_lists_and_calls_echo_for_its_reward(live_server: InProcessServer) -> None:
    before = open_environments(live_server)
    async with (
        streamable_http_client(f"{live_server.url}/mcp") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        (echo,) = (await session.list_tools()).tools
        assert echo.name == "echo"
        assert "length × 0.1" in (echo.description or "")
        assert echo.inputSchema["required"] == ["message"]
        assert echo.inputSchema["properties"]["message"]["maxLength"] == MAX_MESSAGE_LENGTH

        first = await session.call_tool("echo", {"message": "hello"})
        second = await session.call_tool("echo", {"message": "hello rooms"})
        assert not first.isError
        assert first.structuredContent is not None and second.structuredContent is not None
        assert first.structuredContent["reward"] == 0.5
        assert first.structuredContent["echoed_message"] == "hello"
        assert second.structuredContent["reward"] == 1.1
        assert second.structuredContent["metadata"]["step"] == 2  # one environment for the MCP session
        assert open_environments(live_server) == before + 1

        for name, arguments, says in [*BAD_CALLS, RESERVED_CALL]:
            failed = await session.call_tool(name, arguments)
            assert failed.isError
            assert failed.content[0].type == "text"
            assert says in failed.content[0].text or name == "reset"

        after = await session.call_tool("echo", {"message": "abc"})
        assert after.structuredContent is not None
        assert after.structuredContent["metadata"]["step"] == 3  # the bad calls were no steps
    assert open_environments(live_server) == before  # closed with its session


async def test_openenv_mcp_tool_client_lists_and_calls_echo(live_server: InProcessServer) -> None:
    env = MCPToolClient(base_url=live_server.url)
    async with env:
        assert [t.name for t in await env.list_tools()] == ["echo"]
        result = await env.call_tool("echo", message="hello")
        assert result["reward"] == 0.5
        assert result["echoed_message"] == "hello"
        assert (await env.state()).step_count == 1
        with pytest.raises(RuntimeError, match="valid string"):
            await env.call_tool("echo", message=3)
        assert (await env.call_tool("echo", message="hi"))["metadata"]["step"] == 2


def test_step_call_tool_action_returns_the_reward_and_counts_with_rooms_actions(live_server: InProcessServer) -> None:
    with RoomsEnv(base_url=live_server.url).sync() as env:
        assert [t.name for t in env.step(ListToolsAction()).observation.tools] == ["echo"]
        env.reset()
        called = env.step(CallToolAction(tool_name="echo", arguments={"message": "hello"}))
        assert called.reward == 0.5
        assert called.done is False
        assert called.observation.result["data"]["echoed_message"] == "hello"
        assert env.state().step_count == 1
        assert env.step(RoomsAction(message="hi")).reward == 0.2
        assert env.call_tool("echo", message="abc").reward == 0.3
        assert env.state().step_count == 3
        assert [t.name for t in env.list_tools()] == ["echo"]
        assert env.state().step_count == 3  # listing tools is no step


def test_the_frames_verifiers_sends_are_answered(live_server: InProcessServer) -> None:
    with connect(live_server.ws_url) as ws:
        listed = exchange(ws, {"type": "step", "data": {"type": "list_tools"}})  # before any reset
        assert listed["type"] == "observation"
        assert [t["name"] for t in listed["data"]["observation"]["tools"]] == ["echo"]
        tools = exchange(ws, {"type": "mcp", "data": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}})
        assert [t["name"] for t in tools["data"]["result"]["tools"]] == ["echo"]
        assert exchange(ws, {"type": "reset", "data": {"seed": 0}})["type"] == "observation"
        rewards = []
        for _ in range(3):
            frame = {"type": "call_tool", "tool_name": "echo", "arguments": {"message": "hello rooms"}}
            called = exchange(ws, {"type": "step", "data": frame})["data"]
            assert called["observation"]["result"]["data"]["echoed_message"] == "hello rooms"
            rewards.append(called["reward"])
        assert sum(rewards) == pytest.approx(3.3)
        assert exchange(ws, {"type": "state"})["data"]["step_count"] == 3


def test_the_gym_contract_still_reads_rooms_action_at_schema(live_server: InProcessServer) -> None:
    assert requests.get(f"{live_server.url}/schema", timeout=10).json()["action"] == RoomsAction.model_json_schema()


@pytest.mark.parametrize(("name", "arguments", "says"), [*BAD_CALLS, RESERVED_CALL])
def test_a_bad_tool_call_gets_its_error_on_ws_and_the_session_goes_on(
    live_server: InProcessServer, name: str, arguments: dict[str, Any], says: str
) -> None:
    with connect(live_server.ws_url, max_size=None) as ws:
        exchange(ws, {"type": "reset", "data": {}})
        step = exchange(ws, {"type": "step", "data": {"type": "call_tool", "tool_name": name, "arguments": arguments}})
        error = step["data"]["observation"]["error"]
        assert says in error["message"]
        expected = ToolErrorType.TOOL_NOT_FOUND if name in ("nope", "reset") else ToolErrorType.INVALID_ARGS
        assert error["error_type"] == expected.value
        assert step["data"]["reward"] is None

        rpc = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        answer = exchange(ws, {"type": "mcp", "data": rpc})["data"]
        assert answer["id"] == 7
        assert says in answer["error"]["message"]
        assert isinstance(answer["error"]["code"], int)

        frame = {"type": "call_tool", "tool_name": "echo", "arguments": {"message": "ok"}}
        assert exchange(ws, {"type": "step", "data": frame})["data"]["reward"] == 0.2
        assert exchange(ws, {"type": "state"})["data"]["step_count"] == 1


def test_a_tool_cannot_take_a_reserved_name() -> None:
    def reset(self: RoomsEnvironment) -> None: ...

    with pytest.raises(ValueError, match="reserved"):
        tool(reset)


def test_an_environment_without_tools_is_served_as_before() -> None:
    from fastapi.testclient import TestClient

    from rooms import RoomsObservation
    from rooms.kit.application import create_app

    class WithoutTools(RoomsEnvironment):
        echo = None  # type: ignore[assignment]  # the inherited tool, undeclared

    client = TestClient(create_app(WithoutTools, RoomsAction, RoomsObservation))
    assert client.post("/step", json={"action": {"type": "list_tools"}}).status_code == 422
    rpc = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).json()
    assert rpc["error"]["message"] == "Environment does not support MCP"
