"""Shared fixtures: live Rooms servers on free ports, started as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A server process, its address, and its log."""

    process: subprocess.Popen
    port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the whole process group; return the exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()
        finally:
            self.stopped = True


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll `/health` until it answers 200, failing early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}/health did not answer within {timeout}s")


def start_server(
    tmp_dir: Path,
    command: Optional[Sequence[str]] = None,
    env: Optional[dict[str, str]] = None,
    port: Optional[int] = None,
    wait: bool = True,
) -> LiveServer:
    """Start a server process (default: `python -m rooms.server.app`) on a free port."""
    port = port or free_port()
    command = list(command or [sys.executable, "-m", "rooms.server.app", "--host", "127.0.0.1", "--port", str(port)])
    log_path = tmp_dir / f"server-{port}-{time.monotonic_ns()}.log"
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LiveServer(process=process, port=port, log_path=log_path)
    if wait:
        try:
            wait_until_healthy(server.url, process)
        except Exception:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server did not start: {command}\n{server.log()}")
    return server


class ServerFactory:
    """Starts servers for a test and stops every one of them afterwards."""

    def __init__(self, tmp_dir: Path):
        self.tmp_dir = tmp_dir
        self.servers: list[LiveServer] = []

    def __call__(self, **kwargs) -> LiveServer:
        server = start_server(self.tmp_dir, **kwargs)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            if not server.stopped:
                server.stop(signal.SIGKILL)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with custom commands or settings; all are stopped after the test."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One default server (`MAX_CONCURRENT_ENVS` at its default) shared by the session."""
    factory = ServerFactory(tmp_path_factory.mktemp("live-server"))
    yield factory()
    factory.stop_all()


@pytest.fixture
def base_url(live_server: LiveServer) -> str:
    return live_server.url
