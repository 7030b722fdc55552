"""Servers on free ports for tests and benchmarks: an app served in this process (`InProcessServer`),
or a server process to start, wait for (`/health`), measure and stop.

One harness for the environment's tests, the benchmark and the soak script. Its pytest
fixtures (`server_factory`, `live_server`, `base_url`) are registered by a conftest.py that
imports them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .package import PACKAGE


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OnLoopback:
    """A server on 127.0.0.1 at `port`: its HTTP and WebSocket addresses."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class InProcessServer(OnLoopback):
    """`app` served by uvicorn in a thread of this process, on a free port, with the `server` command's WebSocket
    options from `settings` (a `Settings`): the server as tests of the app and its clients need it, without a
    process to start. Tests of the process itself (workers, signals, imports, log) start one instead. `options`
    are more of uvicorn's (`ssl_certfile`, say)."""

    def __init__(self, app: Any, settings: Any, timeout: float = 60, **options: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            ws="websockets-sansio",
            ws_max_size=settings.max_payload_bytes,
            ws_per_message_deflate=False,
            ws_ping_interval=settings.ws_ping_interval_s,
            ws_ping_timeout=settings.ws_ping_timeout_s,
            log_level="warning",
            timeout_graceful_shutdown=3,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def console_script(name: str) -> str:
    """An installed console script: the one beside this interpreter, else the one on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `uv sync`")
    return found


def server_command(port: int) -> list[str]:
    """This package's `server` command, from the interpreter running this code, on 127.0.0.1:`port`."""
    return [sys.executable, "-m", f"{PACKAGE}.kit.command", "--host", "127.0.0.1", "--port", str(port)]


@dataclass
class LiveServer(OnLoopback):
    """A server process, its address, and its log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    start_seconds: float | None = None  # process start to `/health` 200, when waited for
    stopped: bool = field(default=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self, field: str = "VmRSS") -> int | None:
        """The process's resident memory in KiB (`VmHWM`: its peak); None once it has exited."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the server's whole process group; SIGKILL it after `timeout` s; return the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited between poll() and killpg()
                os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()
        finally:
            self.stopped = True


def wait_until_healthy(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 90.0,
    verify: bool | str = True,
) -> None:
    """Poll `url`/health until it answers 200; fail early if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)  # not listening yet
    raise TimeoutError(f"{url}/health did not answer within {timeout}s")


def start_server(
    log_dir: Path,
    command: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
    *,
    cwd: Path | None = None,
    timeout: float = 90.0,
) -> LiveServer:
    """Start `command` (default: this package's server) on `port` (default: a free one), logging to `log_dir`.

    With `wait`, returns once `/health` answers 200; a server that exits or never answers is
    killed and reported with its log. `env` is added to this process's environment.
    """
    port = port or free_port()
    command = list(command or server_command(port))
    log_path = log_dir / f"server-{port}-{time.monotonic_ns()}.log"
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    # The log goes to a file: an unread pipe fills up and stalls a server that logs each connection.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LiveServer(process=process, port=port, log_path=log_path)
    if wait:
        try:
            wait_until_healthy(server.url, process, timeout)
        except (RuntimeError, TimeoutError) as exc:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server did not start: {' '.join(command)}\n{server.log()}") from exc
        server.start_seconds = time.perf_counter() - started
    return server


class ServerFactory:
    """Starts servers and stops every one of them at the end."""

    def __init__(self, log_dir: Path, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.servers: list[LiveServer] = []

    def __call__(
        self,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> LiveServer:
        server = start_server(self.log_dir, command, env, port, wait, cwd=self.cwd)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            if not server.stopped:
                server.stop(signal.SIGKILL)


@pytest.fixture
def server_factory(tmp_path: Path, pytestconfig: pytest.Config) -> Iterator[ServerFactory]:
    """Start servers with custom commands or settings; all are stopped after the test."""
    factory = ServerFactory(tmp_path, cwd=pytestconfig.rootpath)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[LiveServer]:
    """One default server (`MAX_CONCURRENT_ENVS` at its default) shared by the session."""
    factory = ServerFactory(tmp_path_factory.mktemp("live-server"), cwd=pytestconfig.rootpath)
    yield factory()
    factory.stop_all()


@pytest.fixture
def base_url(live_server: LiveServer) -> str:
    return live_server.url
