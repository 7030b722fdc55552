"""Bounds and bad input over real HTTP and WebSocket: clear errors, nothing lost, memory bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from rooms import RoomsAction, RoomsEnv
from rooms.kit.limits import ClientLimits, JsonBounds
from rooms.kit.settings import Settings
from tests.conftest import ROOT, InProcessServer, ServerFactory, SharedServers, console_script, wait_for

MAX_PAYLOAD_BYTES = Settings().max_payload_bytes

MIB = 1024 * 1024


def exchange(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    ws.send(frame)
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


def rss_kb(pid: int, field: str = "VmHWM") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":"))


MALFORMED = [
    (b"\x00\x01binary", "INVALID_JSON", "Binary frames are not accepted"),
    ("{not json", "INVALID_JSON", "Invalid JSON"),
    ("[1, 2]", "VALIDATION_ERROR", "must be a JSON object"),
    ('"a string"', "VALIDATION_ERROR", "not a JSON str"),
    ("NaN", "VALIDATION_ERROR", "not a JSON float"),
    ("[" * 100_000 + "]" * 100_000, "INVALID_JSON", "nested too deeply"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "INVALID_JSON", "nested too deeply"),
    ("{}", "UNKNOWN_TYPE", "Unknown message type"),
    ('{"type": "jump"}', "UNKNOWN_TYPE", "Unknown message type: jump"),
    ('{"type": 7}', "UNKNOWN_TYPE", "Unknown message type: 7"),
    ('{"type": "step"}', "VALIDATION_ERROR", "Invalid message"),
    ('{"type": "step", "data": {"message": 3}}', "VALIDATION_ERROR", "Invalid message"),
    ('{"type": "step", "data": {"message": NaN}}', "VALIDATION_ERROR", "Invalid message"),
    ('{"type": "step", "data": {"message": "x", "extra": true}}', "VALIDATION_ERROR", "Invalid message"),
    ('{"type": "step", "data": "hello"}', "VALIDATION_ERROR", "Invalid message"),
    ('{"type": "reset", "data": [1]}', "VALIDATION_ERROR", "Invalid message"),
]


@pytest.mark.parametrize("frame, code, says", MALFORMED, ids=[repr(f)[:30] for f, _, _ in MALFORMED])
def test_malformed_ws_frames_get_a_typed_error_and_nothing_is_lost(
    live_server: InProcessServer, frame: str | bytes, code: str, says: str
) -> None:
    with connect(live_server.ws_url) as bystander, connect(live_server.ws_url) as ws:
        exchange(bystander, json.dumps({"type": "reset", "data": {"episode_id": "bystander"}}))
        exchange(ws, json.dumps({"type": "reset", "data": {"episode_id": "victim"}}))
        exchange(ws, json.dumps({"type": "step", "data": {"message": "before"}}))
        error = exchange(ws, frame)
        assert error["type"] == "error"
        assert (error["data"]["code"], says in error["data"]["message"]) == (code, True), error
        # the same session goes on, with its episode intact, and so does the other one
        assert exchange(ws, '{"type": "state"}')["data"] == {"episode_id": "victim", "step_count": 1}
        assert exchange(bystander, '{"type": "state"}')["data"] == {"episode_id": "bystander", "step_count": 0}
    with RoomsEnv(base_url=live_server.url) as fresh:
        assert fresh.step(RoomsAction(message="after")).reward == 0.5


def test_frame_problem_lets_ordinary_frames_through_unparsed() -> None:
    limits = ClientLimits(app=None, max_body_bytes=MAX_PAYLOAD_BYTES, bounds=JsonBounds(64, 100_000))  # type: ignore[arg-type]
    assert limits.frame_problem('{"type": "step", "data": {"message": "[[[[' + "[" * 500 + '"}}') is None
    assert limits.frame_problem("  {") is None  # broken JSON is left to OpenEnv's INVALID_JSON answer


@pytest.mark.parametrize(
    "body",
    [
        {"action": {"message": 5}},
        {"action": []},
        {"action": {"message": "x" * (1_048_576 + 1)}},
        {"action": None},
        [],
        "x",
    ],
)
def test_http_bad_bodies_get_4xx_with_details(base_url: str, body: object) -> None:
    response = requests.post(f"{base_url}/step", json=body, timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_over_long_message_is_refused_on_both_transports(live_server: InProcessServer) -> None:
    message = "x" * (1_048_576 + 1)
    response = requests.post(f"{live_server.url}/step", json={"action": {"message": message}}, timeout=30)
    assert response.status_code == 422
    assert "String should have at most 1048576 characters" in response.text
    with connect(live_server.ws_url, max_size=None) as ws:
        error = exchange(ws, json.dumps({"type": "step", "data": {"message": message}}))
    assert error["data"]["errors"][0]["msg"] == "String should have at most 1048576 characters"


def test_longest_allowed_message_is_echoed(live_server: InProcessServer) -> None:
    message = "é" * 1_048_576
    with RoomsEnv(base_url=live_server.url) as env:
        result = env.step(RoomsAction(message=message))
    assert result.observation.echoed_message == message and result.reward == 104857.6


def test_huge_bodies_and_frames_are_refused_before_buffering(server_factory: ServerFactory) -> None:
    server = server_factory()
    pid = server.process.pid
    baseline = rss_kb(pid, "VmRSS")
    body = b'{"action": {"message": "' + b"x" * (40 * MIB) + b'"}}'
    declared = requests.post(f"{server.url}/step", data=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert f"larger than {MAX_PAYLOAD_BYTES} bytes" in declared.json()["detail"]
    chunked = requests.post(
        f"{server.url}/step", data=(b"x" * MIB for _ in range(40)), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    # Closed while still sending, or when reading:
    with connect(server.ws_url, max_size=None) as ws, pytest.raises(ConnectionClosedError) as closed:
        ws.send(json.dumps({"type": "step", "data": {"message": "x" * (40 * MIB)}}))
        ws.recv(timeout=30)
    # 1009 (message too big) when its close frame gets through; a reset mid-send is the other way it ends
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    assert rss_kb(pid) - baseline < 3 * MAX_PAYLOAD_BYTES / 1024  # never held 40 MiB copies
    assert requests.get(f"{server.url}/health").status_code == 200


def test_killed_client_frees_its_slot_promptly(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "1"})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # A bare WebSocket client (what matters is a peer that dies without a close frame, not its library)
            "import sys, time\nfrom websockets.sync.client import connect\nws = connect(sys.argv[1])\n"
            'ws.send(\'{"type": "reset", "data": {}}\')\nws.recv()\nprint(\'holding\', flush=True)\ntime.sleep(600)',
            server.ws_url,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    with RoomsEnv(base_url=server.url) as blocked, pytest.raises(RuntimeError, match="CAPACITY_REACHED"):
        blocked.reset()
    holder.send_signal(signal.SIGKILL)  # no close frame
    holder.wait()

    def a_session_starts() -> bool:
        try:
            with RoomsEnv(base_url=server.url) as env:
                return bool(env.reset().observation.echoed_message == "Rooms environment ready!")
        except RuntimeError:
            return False

    # Promptly: the kernel closes the killed client's socket (a busy machine aside).
    wait_for(a_session_starts, 30, "the killed client's slot freed")


def test_idle_sessions_are_reaped_after_session_timeout(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "1", "SESSION_TIMEOUT_S": "1"})
    idle = RoomsEnv(base_url=server.url)
    idle.reset()

    def a_session_starts() -> bool:
        try:
            with RoomsEnv(base_url=server.url) as env:
                env.reset()
            return True
        except RuntimeError as exc:
            assert "CAPACITY_REACHED" in str(exc)
            return False

    # The reaper looks every max(timeout / 4, 5) s; a busy machine may be slower.
    wait_for(a_session_starts, 60, "the idle session reaped", every_s=0.5)
    idle.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_with_open_sessions_is_prompt_and_clean(server_factory: ServerFactory, sig: int) -> None:
    server = server_factory()  # python -m rooms.kit.command: the `server` entry point
    with ExitStack() as stack:
        sessions = [stack.enter_context(connect(server.ws_url)) for _ in range(3)]
        for ws in sessions:
            exchange(ws, '{"type": "reset", "data": {}}')
        os.kill(server.process.pid, sig)
        # uvicorn shuts down gracefully, then ends by the signal it was sent, as Unix servers do; without
        # closing the open sessions itself it would wait for them for ever
        assert server.process.wait(timeout=60) in (0, -sig)
        for ws in sessions:
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # service restart: a close frame
    assert "Traceback" not in server.log()
    assert "Finished server process" in server.log()


def test_fuzzing_the_openapi_schema_finds_no_server_error(live_server: InProcessServer, tmp_path: Path) -> None:
    """schemathesis against the app's own /openapi.json (all phases, bounded): zero 5xx.

    It runs in a temporary directory: it writes its example database there, not in the checkout (where
    it would change the tree `openenv validate` reads)."""
    result = subprocess.run(
        [
            console_script("schemathesis"),
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert "passed" in result.stdout and " failed" not in result.stdout.split("SUMMARY")[-1]
