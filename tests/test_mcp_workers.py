"""Standard MCP sessions against `server --workers 2`, with real MCP clients (issue 26; the token, issue 27).

The kernel spreads a client's connections over the worker processes, so one MCP session's requests reach
both workers: every session must work whichever worker each request lands on. The official Python `mcp`
SDK, the TypeScript SDK (tests/mcp_clients/sessions.mjs) and MCP Inspector's CLI each run sessions
(initialize, list, `echo` twice with step counts 1 and 2, DELETE). Killing one worker ends only its own
sessions, with HTTP 404 "Session not found" (the spec's answer, on which a client re-initializes), and
`/capacity` covers the whole server, one entry per worker under "workers".

The servers are started here (the `server` console script, its process group killed at the end). The
Node clients come from tests/mcp_clients/ci-install.sh (`.ci/run` calls it): without them the Node tests
skip, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from openenv.core.mcp_client import MCPToolClient

# On one pytest-xdist worker: its tests share a server of 2 workers, and another wanting the token, made once.
pytestmark = pytest.mark.xdist_group("mcp-workers")

WORKERS = 2
SESSIONS_AT_ONCE = 4  # opened together, so that a worker busy with one leaves the next to another
TOKEN = "secret123"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}
SERVER_START_S = 90.0  # each worker imports OpenEnv: seconds on a busy machine
SESSION_S = 30.0  # one whole session, at most
NODE_S = 180.0  # one run of a Node client, at most
PROTOCOL_VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"  # what the MCP spec requires a client to accept

CLIENTS = Path(__file__).resolve().parent / "mcp_clients"
SESSIONS_SCRIPT = CLIENTS / "sessions.mjs"
# Where ci-install.sh installs them: outside the project (see there).
INSTALLED = Path(os.environ.get("ROOMS_MCP_CLIENTS_DIR", Path.home() / ".cache" / "rooms-tests" / "mcp-clients"))
NODE_MODULES = INSTALLED / "clients" / "node_modules"
INSPECTOR = NODE_MODULES / ".bin" / "mcp-inspector"  # Inspector 0.15, the last on Node 20
INSPECTOR2_BIN = INSTALLED / "inspector2" / "node_modules" / ".bin"  # Inspector 2.x, npm's Node 22
INSTALL_HINT = "install the Node MCP clients with tests/mcp_clients/ci-install.sh (needs node and npm)"


# --- the server under test ----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command() -> str:
    """The `server` console script of the environment running the tests."""
    beside = Path(sys.executable).with_name("server")
    found = str(beside) if beside.exists() else shutil.which("server")
    assert found is not None, "the `server` console script is not installed (uv sync)"
    return found


def server_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the settings the tests choose (defaults unless `extra` sets them)."""
    chosen = ("MAX_CONCURRENT_ENVS", "ROOMS_API_TOKEN", "ROOMS_API_TOKEN_FILE", "HOST", "PORT")
    env = {name: value for name, value in os.environ.items() if name not in chosen}
    return {**env, **extra}


def wait_until_started(server: Server, workers: int) -> None:
    """Until /health answers and every worker has said its application started (uvicorn's line)."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        started = server.log.read_text(errors="replace").count("Application startup complete.")
        try:
            healthy = httpx.get(f"{server.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and started >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start within {SERVER_START_S} s:\n{server.log_tail()}")


@contextmanager
def running_server(directory: Path, workers: int = WORKERS, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """`server --workers N` on a free port of 127.0.0.1, in a process group of its own, killed at the end."""
    port = free_port()
    log = directory / f"server-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [server_command(), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=server_environment(env or {}),
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_started(server, workers)
        yield server
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `server --workers 2` for the tests that neither kill a worker nor count sessions."""
    with running_server(tmp_path_factory.mktemp("mcp-workers")) as started:
        yield started


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`server --workers 2` with ROOMS_API_TOKEN set."""
    with running_server(tmp_path_factory.mktemp("mcp-workers-token"), env={"ROOMS_API_TOKEN": TOKEN}) as started:
        yield started


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`."""
    try:
        processes = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return set()
    alive = set()
    for process in processes:
        with suppress(psutil.NoSuchProcess):  # gone meanwhile
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.add(process.pid)
    return alive


def capacity(server: Server) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.url}/capacity", timeout=10).json()
    return answer


def per_worker(server: Server) -> dict[int, int]:
    """Environments held by each worker process (pid → count), from /capacity's "workers" list."""
    answer = capacity(server)
    assert "workers" in answer, f"/capacity names no workers (the design contract's 'workers' list): {answer}"
    return {int(worker["pid"]): int(worker["active_sessions"]) for worker in answer["workers"]}


# --- the official Python MCP SDK ----------------------------------------------------------


@dataclass
class Traffic:
    """The HTTP exchanges of one client: (method, status) of every response it got."""

    responses: list[tuple[str, int]] = field(default_factory=list)

    async def record(self, response: httpx.Response) -> None:
        self.responses.append((response.request.method, response.status_code))

    def seen(self) -> list[str]:
        return [f"{method} {status}" for method, status in self.responses]

    def problems(self) -> list[str]:
        """What went wrong on the wire: a refused request, or not exactly one successful DELETE. (The SDK opens
        its listening GET stream in the background: on a busy machine it may reach the server only after the
        session's DELETE, and then its 404 is the spec's answer for an ended session, not a refusal.)"""
        ended = next((i for i, (method, status) in enumerate(self.responses) if method == "DELETE"), None)
        refused = [
            f"{method} {status}"
            for i, (method, status) in enumerate(self.responses)
            if status >= 400 and not (method == "GET" and status == 404 and ended is not None and i > ended)
        ]
        deletes = [status for method, status in self.responses if method == "DELETE"]
        if deletes != [200] and deletes != [204]:
            refused.append(f"DELETE answers {deletes} (one 200 or 204 expected: the SDK terminates on exit)")
        return refused


def describe(error: BaseException) -> str:
    """An error and, for an exception group, what it holds."""
    inner: tuple[BaseException, ...] = getattr(error, "exceptions", ())
    if inner:
        return "; ".join(describe(each) for each in inner)
    return f"{type(error).__name__}: {error}"[:300]


async def echo_twice(session: ClientSession) -> None:
    for step, message in enumerate(("hello", "hello rooms"), start=1):
        result = await session.call_tool("echo", {"message": message})
        assert not result.isError, result.content
        assert result.structuredContent is not None
        seen = result.structuredContent["metadata"]["step"]
        assert seen == step, f"echo answered step {seen}, expected {step}"


async def python_session(url: str, headers: Mapping[str, str]) -> None:
    """One MCP session with the `mcp` SDK; raises AssertionError with what went wrong, and the HTTP responses."""
    traffic = Traffic()
    try:
        await sdk_session(url, headers, traffic)
    except Exception as error:
        raise AssertionError(f"{describe(error)} (responses: {', '.join(traffic.seen())})") from error
    problems = traffic.problems()
    assert not problems, f"{', '.join(problems)} (responses: {', '.join(traffic.seen())})"


async def sdk_session(url: str, headers: Mapping[str, str], traffic: Traffic) -> None:
    with anyio.fail_after(SESSION_S):
        async with (
            httpx.AsyncClient(
                headers=dict(headers), timeout=httpx.Timeout(30, read=300), event_hooks={"response": [traffic.record]}
            ) as http,
            streamable_http_client(url, http_client=http) as (read, write, session_id),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert "echo" in [tool.name for tool in (await session.list_tools()).tools]
            await echo_twice(session)
            assert session_id() is not None, "the server gave no Mcp-Session-Id"


async def python_sessions(
    url: str, count: int, concurrent: bool, headers: Mapping[str, str] | None = None
) -> list[str]:
    """Run `count` SDK sessions one after another or all at once; what failed in each that failed."""

    async def attempt(index: int) -> str | None:
        try:
            await python_session(url, headers or {})
        except AssertionError as error:
            return f"session {index}: {error}"
        except Exception as error:
            return f"session {index}: {describe(error)}"
        return None

    if concurrent:
        outcomes = await asyncio.gather(*(attempt(index) for index in range(count)))
    else:
        outcomes = [await attempt(index) for index in range(count)]
    return [outcome for outcome in outcomes if outcome is not None]


# --- the Node clients ---------------------------------------------------------------------


def require(available: bool, how_to_enable: str) -> None:
    """Skip (or, under CI=true, fail) a test whose tool is missing."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test: {how_to_enable}")
    pytest.skip(how_to_enable)


def node() -> str:
    """Node, with this folder's npm packages installed (else the test skips, or fails under CI)."""
    found = shutil.which("node")
    installed = (NODE_MODULES / "@modelcontextprotocol" / "sdk").is_dir() and INSPECTOR.exists()
    require(found is not None and installed, INSTALL_HINT)
    assert found is not None
    return found


def ts_sessions(url: str, count: int, mode: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run sessions.mjs (the TypeScript SDK): its summary {"ok", "failed", "failures", "seconds"}."""
    header_args = [arg for name, value in (headers or {}).items() for arg in ("--header", f"{name}: {value}")]
    command = [node(), str(SESSIONS_SCRIPT), url, str(count), mode, *header_args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=NODE_S, cwd=CLIENTS)
    assert done.stdout.strip(), f"sessions.mjs printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def inspector(url: str, *method_args: str) -> Any:
    """Inspector 0.15's CLI over streamable HTTP: the JSON it prints."""
    command = [node(), str(INSPECTOR), "--cli", url, "--transport", "http", *method_args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=NODE_S, cwd=CLIENTS)
    assert done.returncode == 0, (
        f"Inspector failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )
    return json.loads(done.stdout)


def inspector2(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Inspector 2.x's CLI, on the Node 22 installed beside it, its catalog and secrets kept in `home`."""
    launcher, node22 = INSPECTOR2_BIN / "mcp-inspector", INSPECTOR2_BIN / "node"
    require(launcher.exists() and node22.exists(), f"Inspector 2.x and Node 22: {INSTALL_HINT}")
    env = {**os.environ, "HOME": str(home), "MCP_INSPECTOR_SECRET_STORE": "memory"}
    env["PATH"] = f"{INSPECTOR2_BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [str(node22), str(launcher), "--cli", url, "--transport", "http", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=NODE_S, env=env, cwd=CLIENTS)


# --- raw HTTP, for the sessions of a worker killed under them -----------------------------


@dataclass
class RawSession:
    """A standard MCP session over plain HTTP, each request on a new connection (so any worker may get it)."""

    url: str
    session_id: str = ""
    next_id: int = 1

    def headers(self) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": PROTOCOL_VERSION}
        return {**headers, "Mcp-Session-Id": self.session_id} if self.session_id else headers

    def post(self, message: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url, json=message, headers=self.headers(), timeout=SESSION_S)

    def request(self, method: str, params: dict[str, Any]) -> httpx.Response:
        self.next_id += 1
        return self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})

    def open(self) -> None:
        hello = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        answer = self.request("initialize", hello)
        assert answer.status_code == 200, f"initialize: {answer.status_code} {answer.text[:300]}"
        self.session_id = answer.headers["mcp-session-id"]
        initialized = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, (
            f"notifications/initialized: {initialized.status_code} {initialized.text}"
        )

    def echo(self, message: str) -> httpx.Response:
        return self.request("tools/call", {"name": "echo", "arguments": {"message": message}})

    def delete(self) -> httpx.Response:
        return httpx.delete(self.url, headers=self.headers(), timeout=SESSION_S)


def rpc_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a response sent as JSON or as server-sent events."""
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(each) for each in data if each]
        [answer] = [message for message in messages if "id" in message]
    else:
        answer = response.json()
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def echoed_step(response: httpx.Response) -> int:
    step: int = rpc_result(response)["structuredContent"]["metadata"]["step"]
    return step


def assert_session_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, f"expected 404 'Session not found': {response.status_code} {response.text}"
    assert "session not found" in response.text.lower(), response.text


def sessions_on_every_worker(server: Server, each: int = 2, batches: int = 10) -> dict[int, list[RawSession]]:
    """Sessions opened a few at once (each has stepped once), so that a busy worker leaves the next connection to
    another, until every worker owns `each`: worker pid → sessions. A session's owner is the pid its id is tagged
    with, and /capacity must count each worker's sessions alike."""
    owned: dict[int, list[RawSession]] = {}
    counts: dict[int, int] = {}
    with ThreadPoolExecutor(max_workers=SESSIONS_AT_ONCE) as pool:
        for _ in range(batches):
            for session in pool.map(lambda _: opened_and_stepped(server), range(SESSIONS_AT_ONCE)):
                owned.setdefault(int(session.session_id.split(".")[-2]), []).append(session)
            counts = {pid: len(sessions) for pid, sessions in owned.items()}
            assert per_worker(server) == counts, f"/capacity's workers against the sessions' tags: {counts}"
            if len(owned) == WORKERS and all(len(sessions) >= each for sessions in owned.values()):
                return owned
    raise AssertionError(f"{batches} batches of sessions did not reach every worker (pid → sessions): {counts}")


def opened_and_stepped(server: Server) -> RawSession:
    session = RawSession(server.mcp_url)
    session.open()
    assert echoed_step(session.echo("hello")) == 1
    return session


def wait_gone(pid: int, parent: int) -> None:
    deadline = time.monotonic() + 10
    while pid in children(parent):
        assert time.monotonic() < deadline, f"worker {pid} still runs after SIGKILL"
        time.sleep(0.05)


# --- (a) the Python SDK, (b) the TypeScript SDK, (c) Inspector --------------------------


@pytest.mark.parametrize(("count", "concurrent"), [(20, False), (10, True)], ids=["20-sequential", "10-concurrent"])
async def test_python_mcp_sdk_sessions_all_work(server: Server, count: int, concurrent: bool) -> None:
    failures = await python_sessions(server.mcp_url, count, concurrent)
    assert failures == [], f"{len(failures)} of {count} sessions failed:\n" + "\n".join(failures)
    assert "Traceback" not in server.log.read_text(errors="replace"), server.log_tail()  # each GET stream ended quietly


@pytest.mark.parametrize(("count", "mode"), [(20, "sequential"), (10, "concurrent")])
def test_typescript_mcp_sdk_sessions_all_work(server: Server, count: int, mode: str) -> None:
    summary = ts_sessions(server.mcp_url, count, mode)
    assert summary["ok"] == count, f"{summary['failed']} of {count} failed: {json.dumps(summary['failures'], indent=1)}"


def test_inspector_cli_lists_and_calls_echo(server: Server) -> None:
    for _ in range(3):  # each run is a session of its own, its requests spread over the workers
        listed = inspector(server.mcp_url, "--method", "tools/list")
        assert [tool["name"] for tool in listed["tools"]] == ["echo"]
        called = inspector(server.mcp_url, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi")
        assert called["isError"] is False
        assert called["structuredContent"]["echoed_message"] == "hi"
        assert called["structuredContent"]["metadata"]["step"] == 1


# --- (d) a worker killed, (e) /capacity over every worker ---------------------------------


def test_killing_a_worker_fails_only_its_own_sessions_with_404(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        owned = sessions_on_every_worker(server)
        victim, *others = sorted(owned)
        assert victim in children(server.process.pid), f"{victim} is no worker of the server"
        os.kill(victim, signal.SIGKILL)
        wait_gone(victim, server.process.pid)

        survivors = [session for pid in others for session in owned[pid]]
        for step in (2, 3):  # on new connections: whichever worker gets them
            for session in survivors:
                assert echoed_step(session.echo("after")) == step
            for session in owned[victim]:
                assert_session_not_found(session.echo("after"))
        for session in survivors:
            assert session.delete().status_code in (200, 204)
        for session in owned[victim]:
            assert_session_not_found(session.delete())


async def test_capacity_counts_no_session_in_any_worker_once_all_are_deleted(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        failures = await python_sessions(server.mcp_url, 10, concurrent=False)
        failures += await python_sessions(server.mcp_url, 10, concurrent=True)
        answer = await capacity_once_idle(server)
    workers = answer.get("workers", [])
    problems = [f"{len(failures)} of 20 sessions failed, the first: {failures[0]}"] if failures else []
    if len(workers) != WORKERS:
        problems.append(f"/capacity should list {WORKERS} workers: {answer}")
    if answer["active_sessions"] != 0 or any(worker["active_sessions"] != 0 for worker in workers):
        problems.append(f"sessions left: {answer}")
    if any(set(worker.get("by_door", {}).values()) - {0} for worker in workers):
        problems.append(f"sessions left at some door: {workers}")
    assert problems == [], "\n".join(problems)


async def capacity_once_idle(server: Server, within_s: float = 10.0) -> dict[str, Any]:
    """/capacity once it counts no session in any worker, or as it is after `within_s` (a DELETE may close its
    environment just after it is answered)."""
    deadline = time.monotonic() + within_s
    while True:
        answer = capacity(server)
        workers = answer.get("workers", [])
        idle = answer["active_sessions"] == 0 and all(worker["active_sessions"] == 0 for worker in workers)
        if (idle and len(workers) == WORKERS) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


# --- the access token, with each MCP client -----------------------------------------------


async def test_the_python_sdk_passes_the_token_through_its_http_client(token_server: Server) -> None:
    assert await python_sessions(token_server.mcp_url, 5, concurrent=False, headers=AUTHORIZATION) == []


async def test_the_documented_python_sdk_token_block(token_server: Server) -> None:
    from tests.readme_blocks import readme_blocks

    [block] = readme_blocks("mcp-token")
    scope: dict[str, Any] = {}
    exec(block.code, scope)
    assert await scope["tools"](token_server.mcp_url, TOKEN) == ["echo"]


def test_mcp_tool_client_passes_the_token_in_headers(token_server: Server) -> None:
    with MCPToolClient(base_url=token_server.url, headers=AUTHORIZATION).sync() as env:
        assert [tool.name for tool in env.list_tools()] == ["echo"]
        assert env.call_tool("echo", message="hello")["reward"] == 0.5


def test_the_typescript_sdk_passes_the_token_in_request_init(token_server: Server) -> None:
    summary = ts_sessions(token_server.mcp_url, 5, "sequential", AUTHORIZATION)
    assert summary["ok"] == 5, summary["failures"]


def test_inspector2_cli_passes_the_token_with_header(token_server: Server, tmp_path: Path) -> None:
    done = inspector2(
        token_server.mcp_url,
        tmp_path,
        *("--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi"),
        *("--header", f"Authorization: Bearer {TOKEN}"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["structuredContent"]["metadata"]["step"] == 1


def test_inspector2_cli_without_the_token_shows_the_401(token_server: Server, tmp_path: Path) -> None:
    """Without --header, Inspector's CLI in its non-interactive mode (--stored-auth-only) shows Rooms' 401 message.

    (Without that flag, Inspector 2.x answers any 401 with an interactive OAuth attempt, whatever discovery finds.)"""
    done = inspector2(token_server.mcp_url, tmp_path, "--method", "tools/list", "--stored-auth-only")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "This server wants an access token: send the header 'Authorization: Bearer <token>'" in output, output


def test_the_documented_haproxy_affinity_keeps_each_session_on_its_server(tmp_path: Path) -> None:
    """docs/scaling-out.md's HAProxy configuration in front of two 1-worker servers that know nothing of each
    other, each request on a connection of its own: every session stays on the server that opened it."""
    from tests.readme_blocks import readme_blocks

    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    require(haproxy is not None, "needs HAProxy: as root, `apt-get install haproxy`")
    assert haproxy is not None
    [block] = readme_blocks("haproxy")
    with running_server(tmp_path, workers=1) as first, running_server(tmp_path, workers=1) as second:
        port = free_port()
        config = block.code.replace("bind :8000", f"bind 127.0.0.1:{port}")
        config = config.replace("10.0.0.11:8000", first.url.removeprefix("http://"))
        config = config.replace("10.0.0.12:8000", second.url.removeprefix("http://"))
        (tmp_path / "haproxy.cfg").write_text(config)
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            deadline = time.monotonic() + 30
            while not answers(f"http://127.0.0.1:{port}/health"):
                assert time.monotonic() < deadline, "HAProxy did not answer"
                time.sleep(0.1)
            failures = asyncio.run(python_sessions(url, 6, concurrent=False, headers={"Connection": "close"}))
            assert failures == []
            assert {capacity(first)["by_door"]["mcp-standard"], capacity(second)["by_door"]["mcp-standard"]} == {0}
        finally:
            proxy.kill()
            proxy.wait(timeout=10)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
