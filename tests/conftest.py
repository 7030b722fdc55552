"""Shared fixtures: live Rooms servers on free ports, started as real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

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


@contextmanager
def websockets_server(handler: Callable, port: int, **options: Any) -> Iterator[None]:
    """Serve `handler` on 127.0.0.1:`port` with websockets' asyncio server, in a background thread."""
    from websockets.asyncio.server import serve

    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, **options):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def wait_until_healthy(
    url: str, process: Optional[subprocess.Popen] = None, timeout: float = 90.0, verify: Union[bool, str] = True
) -> None:
    """Poll `/health` until it answers 200, failing early if the server's process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering")
        try:
            if requests.get(f"{url}/health", timeout=1, verify=verify).status_code == 200:
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
    command = list(command or [sys.executable, "-m", "rooms.server", "--host", "127.0.0.1", "--port", str(port)])
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


# --- optional tools: skipped with a reason on a laptop, required in CI ------------------


def require(available: bool, how_to_enable: str) -> None:
    """Skip (or, under CI=true, fail) a test whose tool is missing."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test: {how_to_enable}")
    pytest.skip(how_to_enable)


def docker_engine_running() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


BASE_IMAGE = "ghcr.io/meta-pytorch/openenv-base:latest"
IMAGE = "rooms-env:latest"


@dataclass
class BuiltImage:
    name: str
    build_seconds: float
    size_bytes: int


@pytest.fixture(scope="session")
def docker_available() -> None:
    require(docker_engine_running(), "needs a Docker engine: as root, `apt-get install docker.io` and start `dockerd`")


@pytest.fixture(scope="session")
def base_image(docker_available) -> str:
    """OpenEnv's base image: pulled if a registry answers, else built offline by the README's recipe."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if docker("pull", BASE_IMAGE, check=False, timeout=300).returncode == 0:
        return BASE_IMAGE
    from tests.readme_blocks import readme_blocks

    [recipe] = [b for b in readme_blocks("docker") if "local-base-image.sh" in b.code]
    command = recipe.code.strip()
    if os.geteuid() == 0:
        command = command.removeprefix("sudo ")  # already root; sudo may not be installed
    require(shutil.which("debootstrap") is not None, "needs debootstrap to build the base image offline")
    # As `sudo` would run it: the host's Python, not this test run's virtual environment.
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": path}
    result = subprocess.run(["bash", "-euc", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    return BASE_IMAGE


@pytest.fixture(scope="session")
def built_image(base_image) -> BuiltImage:
    """`rooms-env:latest`, built by the README's own `docker build` command."""
    from tests.readme_blocks import readme_blocks

    [build] = [b for b in readme_blocks("docker") if "docker build" in b.code]
    started = time.monotonic()
    result = subprocess.run(["bash", "-euc", build.code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    return BuiltImage(IMAGE, seconds, size)
