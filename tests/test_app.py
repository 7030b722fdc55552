"""The server app over real HTTP and WebSocket, and the ways to start it."""

import json
import sys
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from tests.conftest import (
    ROOT,
    InProcessServer,
    ServerFactory,
    SharedServers,
    assert_web_interface_shows_the_description,
    console_script,
    free_port,
)


def ws_exchange(ws: ClientConnection, message: str | dict[str, Any]) -> dict[str, Any]:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


@pytest.mark.parametrize("path", ["/health", "/schema", "/metadata", "/state", "/docs", "/openapi.json"])
def test_get_endpoints_answer(base_url: str, path: str) -> None:
    assert requests.get(base_url + path, timeout=10).status_code == 200


def test_health(base_url: str) -> None:
    assert requests.get(f"{base_url}/health").json() == {"status": "healthy"}


def test_metadata_describes_rooms(base_url: str) -> None:
    meta = requests.get(f"{base_url}/metadata").json()
    assert meta["name"] == "Rooms"
    assert meta["version"] == "0.1.0"
    assert meta["readme_content"] == (ROOT / "README.md").read_text(encoding="utf-8")


def test_schema_publishes_the_models(base_url: str) -> None:
    schema = requests.get(f"{base_url}/schema").json()
    assert schema["action"]["required"] == ["message"]
    assert schema["action"]["properties"]["message"]["maxLength"] == 1_048_576
    assert {"echoed_message", "message_length", "reward", "done", "metadata"} <= set(
        schema["observation"]["properties"]
    )
    assert {"episode_id", "step_count"} <= set(schema["state"]["properties"])


def test_http_reset_and_step(base_url: str) -> None:
    reset = requests.post(f"{base_url}/reset", json={}).json()
    assert reset["observation"]["echoed_message"] == "Rooms environment ready!"
    assert (reset["reward"], reset["done"]) == (0.0, False)
    step = requests.post(f"{base_url}/step", json={"action": {"message": "abc"}}).json()
    assert step["observation"]["echoed_message"] == "abc"
    assert step["observation"]["message_length"] == 3
    assert step["reward"] == 0.3
    assert step["metadata"] == {"original_message": "abc", "step": 1}


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"action": {"message": 5}}, "Input should be a valid string"),
        ({"action": {"msg": "x"}}, "Field required"),
        ({"action": {"message": "x", "extra": 1}}, "Extra inputs are not permitted"),
        ({}, "Field required"),
    ],
)
def test_http_step_rejects_bad_actions_with_details(base_url: str, body: dict[str, Any], problem: str) -> None:
    response = requests.post(f"{base_url}/step", json=body)
    assert response.status_code == 422
    assert problem in response.text


def test_ws_session_keeps_its_episode(live_server: InProcessServer) -> None:
    with connect(live_server.ws_url) as ws:
        assert ws_exchange(ws, {"type": "reset", "data": {"episode_id": "ws-1"}})["type"] == "observation"
        step = ws_exchange(ws, {"type": "step", "data": {"message": "Hello, World!"}})
        assert step["data"]["reward"] == 1.3
        assert step["data"]["observation"]["metadata"] == {"original_message": "Hello, World!", "step": 1}
        state = ws_exchange(ws, {"type": "state"})
        assert state["data"] == {"episode_id": "ws-1", "step_count": 1}


@pytest.mark.parametrize(
    "frame, code, says",
    [
        ("nope", "INVALID_JSON", "Invalid JSON"),
        ({"type": "bogus"}, "UNKNOWN_TYPE", "Unknown message type: bogus"),
        ({"type": "step", "data": {"message": 1}}, "VALIDATION_ERROR", "Invalid message"),
        ({"type": "step", "data": {"message": "x", "extra": 1}}, "VALIDATION_ERROR", "Invalid message"),
    ],
)
def test_ws_bad_frames_get_typed_errors_and_the_session_goes_on(
    live_server: InProcessServer, frame: str | dict[str, Any], code: str, says: str
) -> None:
    with connect(live_server.ws_url) as ws:
        ws_exchange(ws, {"type": "reset", "data": {"episode_id": "before"}})
        error = ws_exchange(ws, frame)
        assert error["type"] == "error"
        assert error["data"]["code"] == code
        assert says in error["data"]["message"]
        assert ws_exchange(ws, {"type": "state"})["data"] == {"episode_id": "before", "step_count": 0}


def test_capacity_error_names_the_limit(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "2"})
    with connect(server.ws_url) as first, connect(server.ws_url) as second:
        for ws in (first, second):
            ws_exchange(ws, {"type": "reset", "data": {}})
        with connect(server.ws_url) as third:
            error = json.loads(third.recv(timeout=10))  # sent unasked, then the server closes
    assert error["data"]["code"] == "CAPACITY_REACHED"
    assert error["data"]["max_sessions"] == 2


def _start_commands(port: int) -> dict[str, list[str]]:
    """The ways to start the server that no server-command block of the docs shows (those run as written:
    tests/test_readme.py), and OpenEnv's (`uv run --project`, as its `UVProvider` starts a project)."""
    return {
        "uv run --project . server": [
            "uv",
            "run",
            "--project",
            ".",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "python -m rooms.kit.command": [
            sys.executable,
            "-m",
            "rooms.kit.command",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "uvicorn server.app:app": [
            console_script("uvicorn"),
            "server.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        # `server --workers 2`: tests/test_light_server.py serves steps from it (and checks its imports)
    }


@pytest.mark.parametrize("name", list(_start_commands(0)))
def test_every_documented_way_to_start_the_server_serves_rooms(server_factory: ServerFactory, name: str) -> None:
    port = free_port()
    server = server_factory(command=_start_commands(port)[name], port=port)
    assert requests.get(f"{server.url}/metadata").json()["name"] == "Rooms"
    with connect(server.ws_url) as ws:
        assert ws_exchange(ws, {"type": "step", "data": {"message": "Hi"}})["data"]["reward"] == 0.2


def test_server_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    from rooms.kit.command import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for option in ("--host", "--port", "--workers", "--reload"):
        assert option in shown


def test_web_interface_under_uvicorn_reload_shows_the_description(server_factory: ServerFactory) -> None:
    """Running Locally, as the README and OpenEnv's template have it: the app from the project directory.

    (The `server` command's web interface: tests/test_light_server.py.)"""
    port = free_port()
    command = [console_script("uvicorn"), "server.app:app", "--reload", "--host", "127.0.0.1", "--port", str(port)]
    server = server_factory(command=command, env={"ENABLE_WEB_INTERFACE": "true"}, port=port)
    assert_web_interface_shows_the_description(server.url)


def test_web_interface_is_off_by_default(base_url: str) -> None:
    assert requests.get(f"{base_url}/web/").status_code == 404


def test_server_script_does_not_compress_websocket_frames(live_server: InProcessServer) -> None:
    with connect(live_server.ws_url) as ws:  # the client offers permessage-deflate
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert ws_exchange(ws, {"type": "step", "data": {"message": "plain"}})["data"]["reward"] == 0.5
