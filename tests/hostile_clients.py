"""Live Rooms servers, started as in production, and the clients tests/test_hostile.py plays with.

It starts the `server` console script of this interpreter's environment, so that moving the package's
modules around changes nothing here; ports and addresses are the kit's (`rooms.kit.testing`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.sync.client import ClientConnection, connect

from rooms.kit.testing import OnLoopback, free_port
from tests.conftest import wait_for

# Settings a developer's shell may hold that would change what a test's server does.
SETTINGS_PREFIXES = ("ROOMS_",)
SETTINGS = ("MAX_CONCURRENT_ENVS", "SESSION_TIMEOUT_S", "ENABLE_WEB_INTERFACE", "HOST", "PORT")
START_TIMEOUT_S = 90.0
MCP_ACCEPT = "application/json, text/event-stream"
MCP_PROTOCOL_VERSION = "2025-06-18"


def server_script() -> str:
    """The `server` console script of the environment running the tests."""
    beside = Path(sys.prefix) / "bin" / "server"
    if beside.exists():
        return str(beside)
    found = shutil.which("server", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError("the `server` console script is not installed: run `uv sync`")
    return found


@dataclass
class Server(OnLoopback):
    """A `server` process (its process group), its address and its log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers, in bytes."""
        total = 0
        try:
            server = psutil.Process(self.process.pid)
            processes = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(process.memory_info().rss)
        return total

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def capacity(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/capacity", timeout=10, headers=self.auth()).json()
        return answer

    def auth(self) -> dict[str, str]:
        token = self.env.get("ROOMS_API_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Workers left behind by a killed supervisor.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_server(log_dir: Path, env: Mapping[str, str] | None = None, workers: int = 1) -> Server:
    """`server --host 127.0.0.1 --port <free>` with `env` added to a clean environment, once `/health` answers."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in SETTINGS and not name.startswith(SETTINGS_PREFIXES)
    }
    environ.update(env or {})
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    command = [server_script(), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=log_dir, start_new_session=True
        )
    server = Server(process, port, log_path, dict(env or {}))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server did not start: {' '.join(command)}\n{server.log()[-4000:]}")
        time.sleep(0.1)
    if workers > 1:  # every worker answers, not only the first one up
        wait_for(lambda: len({server.capacity()["pid"] for _ in range(8)}) >= workers, 60, "all workers answer")
    return server


@contextlib.contextmanager
def running_server(log_dir: Path, env: Mapping[str, str] | None = None, workers: int = 1) -> Iterator[Server]:
    server = start_server(log_dir, env, workers)
    try:
        yield server
    finally:
        server.stop()


def json_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON (characters outside ASCII unescaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# --- /ws ----------------------------------------------------------------------------------------


def ws_open(server: Server, query: str = "", max_size: int | None = None) -> ClientConnection:
    url = f"{server.ws_url}?{query}" if query else server.ws_url
    # No client pings: whether a ping counts as activity is not what these tests are about.
    return connect(url, max_size=max_size, open_timeout=10, ping_interval=None, additional_headers=server.auth())


def exchange(ws: ClientConnection, message: Mapping[str, Any] | str, timeout_s: float = 30) -> dict[str, Any]:
    """Send one frame, return the next frame the server sends."""
    ws.send(message if isinstance(message, str) else json.dumps(message, ensure_ascii=False))
    return receive(ws, timeout_s)


def receive(ws: ClientConnection, timeout_s: float = 30) -> dict[str, Any]:
    raw = ws.recv(timeout=timeout_s)
    answer: dict[str, Any] = json.loads(raw)
    return answer


def step_frame(message: str) -> dict[str, Any]:
    return {"type": "step", "data": {"message": message}}


# --- OpenEnv's JSON-RPC on POST /mcp --------------------------------------------------------------


def openenv_rpc(
    server: Server, method: str, params: Mapping[str, Any] | None = None, request_id: int = 1, timeout_s: float = 30
) -> dict[str, Any]:
    """One OpenEnv JSON-RPC request on `POST /mcp` (a connection of its own, none kept)."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params or {})}
    response = httpx.post(
        f"{server.url}/mcp",
        content=json_bytes(body),
        timeout=timeout_s,
        headers={"Content-Type": "application/json", **server.auth()},
    )
    answer: dict[str, Any] = response.json()
    return answer


# --- the standard MCP transport, by hand (so that statuses can be seen) ---------------------------


class StandardMcp:
    """A standard MCP client of the streamable HTTP transport, on httpx: every status visible."""

    def __init__(self, server: Server, timeout_s: float = 30) -> None:
        self.server = server
        self.http = httpx.Client(timeout=timeout_s, headers=server.auth())
        self.session_id: str | None = None
        self.next_id = 0

    def headers(self) -> dict[str, str]:
        headers = {"Accept": MCP_ACCEPT, "Content-Type": "application/json"}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
            headers["Mcp-Protocol-Version"] = MCP_PROTOCOL_VERSION
        return headers

    def post(self, body: Mapping[str, Any] | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else json_bytes(body)
        return self.http.post(f"{self.server.url}/mcp", content=content, headers=self.headers())

    def initialize(self) -> httpx.Response:
        """`initialize`, then (if it succeeded) `notifications/initialized`; the first response."""
        response = self.post(
            {
                "jsonrpc": "2.0",
                "id": self.new_id(),
                "method": "initialize",
                "params": {
                    "protocolVersion": MCP_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "hostile-tests", "version": "0"},
                },
            }
        )
        if response.status_code == 200:
            self.session_id = response.headers.get("mcp-session-id")
            self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    def request(self, method: str, params: Mapping[str, Any]) -> tuple[httpx.Response, dict[str, Any] | None]:
        """One JSON-RPC request; the response and its JSON-RPC answer (None if there is none)."""
        request_id = self.new_id()
        response = self.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)})
        return response, rpc_answer(response, request_id)

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> tuple[httpx.Response, dict[str, Any] | None]:
        return self.request("tools/call", {"name": name, "arguments": dict(arguments)})

    def delete(self) -> httpx.Response:
        return self.http.delete(f"{self.server.url}/mcp", headers=self.headers())

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def close(self) -> None:
        self.http.close()


def rpc_answer(response: httpx.Response, request_id: int) -> dict[str, Any] | None:
    """The JSON-RPC answer to `request_id` in a JSON or an SSE response, if any."""
    if response.status_code != 200:
        return None
    texts = [response.text]
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        texts = [line[len("data:") :].strip() for line in response.text.splitlines() if line.startswith("data:")]
    for text in texts:
        with contextlib.suppress(ValueError):
            answer = json.loads(text)
            if isinstance(answer, dict) and answer.get("id") == request_id:
                return answer
    return None


# --- raw HTTP ----------------------------------------------------------------------------------


def http_head(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_status(sock: socket.socket, timeout_s: float = 30) -> int | None:
    """The status code of the response on `sock`, None if the connection ends without one."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, TimeoutError, OSError):
        pass
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def raw_request(port: int, head: bytes, body: bytes = b"", timeout_s: float = 30) -> int | None:
    """Send `head` and `body` on a new connection; the status code, or None if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        # Refused before it was all sent: the response, if any, is already there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)
        return read_status(sock, timeout_s)


# --- a client stepping meanwhile, timing each answer --------------------------------------------


class SteppingClient:
    """A /ws session stepping in a thread of its own, recording each step's round trip, until stopped."""

    def __init__(self, server: Server, pause_s: float = 0.05) -> None:
        self.server = server
        self.pause_s = pause_s
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            with ws_open(self.server) as ws:
                exchange(ws, {"type": "reset", "data": {}})
                self.ready.set()
                while not self.stopping.is_set():
                    started = time.monotonic()
                    answer = exchange(ws, step_frame("ping"), timeout_s=60)
                    self.latencies.append(time.monotonic() - started)
                    if answer.get("type") != "observation":
                        self.errors.append(json.dumps(answer)[:300])
                    time.sleep(self.pause_s)
        except Exception as error:
            self.errors.append(repr(error)[:300])
        finally:
            self.ready.set()

    def __enter__(self) -> SteppingClient:
        self.thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(90)


HEALTH_CHECK = http_head("GET", "/health", {"Host": "127.0.0.1", "Connection": "close"})


class HealthPoller:
    """`GET /health` polled from a thread of its own, recording each round trip, until stopped."""

    def __init__(self, server: Server, pause_s: float = 0.05) -> None:
        self.server = server
        self.pause_s = pause_s
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                # A fresh connection each time, as a load balancer's check makes, on a bare socket: a new
                # httpx client costs ~50 ms of this process's CPU (its TLS context), which a busy machine
                # multiplies into the figure.
                status = raw_request(self.server.port, HEALTH_CHECK)
                if status != 200:
                    self.failures.append(f"HTTP {status}" if status else "closed without an answer")
            except OSError as error:
                self.failures.append(repr(error)[:300])
            self.latencies.append(time.monotonic() - started)
            time.sleep(self.pause_s)

    def __enter__(self) -> HealthPoller:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(90)
