"""Shared helpers and fixtures of the Rooms test suite.

Live servers come from the kit's harness (`rooms.kit.testing`), whose `server_factory`,
`live_server` and `base_url` fixtures are registered here.
"""

from __future__ import annotations

import asyncio
import html
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest
import requests
from filelock import FileLock

if TYPE_CHECKING:
    from playwright.sync_api import Browser

from rooms.kit.settings import Settings
from rooms.kit.testing import (  # noqa: F401  (fixtures, registered by importing them)
    InProcessServer,
    LiveServer,
    ServerFactory,
    console_script,
    free_port,
    server_factory,
    start_server,
    wait_until_healthy,
)

__all__ = [
    "ROOT", "InProcessServer", "LiveServer", "Served", "ServerFactory", "SharedServers", "console_script",
    "free_port", "require", "start_server", "wait_for", "wait_until_healthy", "websockets_server",
]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
# What a copy of the checkout leaves out: its virtual environment, git's data, and what builds and tools write
# (__pycache__ holds a link to the root itself, for mypy: copied, it would never end).
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "dist", "__pycache__", ".*_cache")


def copy_of_the_checkout(target: Path) -> Path:
    """The checkout's sources copied to `target`, as a fresh clone has them (with any uncommitted edit)."""
    shutil.copytree(ROOT, target, ignore=NOT_COPIED)
    return target


T = TypeVar("T")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests keep what a person may want to look at afterwards (tool reports, screenshots, figures).

    `$ROOMS_TEST_ARTIFACTS` if set (it must be outside the checkout), else a temporary directory.
    """
    configured = os.environ.get("ROOMS_TEST_ARTIFACTS")
    if not configured:
        return tmp_path_factory.mktemp("artifacts")
    path = Path(configured).resolve()
    if path.is_relative_to(ROOT):
        raise pytest.UsageError(f"ROOMS_TEST_ARTIFACTS={configured} is inside the checkout; tests write outside it")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto`: two per core, at least four; the tests mostly wait on servers and clocks."""
    return max(4, 2 * (os.cpu_count() or 1))


DOCKER_TEST_TIMEOUT_S = 1800
DOCKER_ENGINE, DOCKER_BUILDS = "docker-engine", "docker-builds"  # the two groups of the Docker tests
BROWSER = "browser"  # the group of the tests in Chromium
# Markers of the tests that take tens of seconds or more.
LONG_RUNNING = ("derive", "trl", "slow")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`), the tests that use the Docker engine run on two workers: one
    builds the Rooms image and runs its containers and the swarm ("docker-engine"), the other runs the tests
    that build images of their own ("docker-builds"). The base image they share is made once (`base_image`).
    The tests in Chromium run on one worker ("browser"), one Chromium at a time (tests/test_web.py shares one).

    pytest-xdist hands tests out in collection order, so the long ones go first (the Docker groups, then every
    module with a long test, whole, so its module fixtures are made once): no worker starts one while the
    others run out of work.
    """
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group(BROWSER))  # on one worker: one Chromium at a time
        if item.get_closest_marker("docker") or item.get_closest_marker("swarm"):
            fixtures = getattr(item, "fixturenames", ())
            builds_its_own = "base_image" in fixtures and "built_image" not in fixtures
            item.add_marker(pytest.mark.xdist_group(DOCKER_BUILDS if builds_its_own else DOCKER_ENGINE))
            # The first of them builds the base image and the env image in its setup, minutes on a busy day.
            item.add_marker(pytest.mark.timeout(DOCKER_TEST_TIMEOUT_S))
    modules_with_long_tests = {
        item.path for item in items if any(item.get_closest_marker(marker) for marker in LONG_RUNNING)
    }

    def schedule(item: pytest.Item) -> int:
        if item.get_closest_marker("xdist_group"):
            return 0
        return 1 if item.path in modules_with_long_tests else 2

    items.sort(key=schedule)


# Which tests start a process (a server, a container, a tool), told by the interpreter's audit events and
# summed in the run's summary: the suite keeps that number small by serving the app in process.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec"})
running_test: list[pytest.Item] = []
# The threads running when the current test began, but the main one: what they start is not the test's doing.
threads_before_the_test: set[threading.Thread] = set()


def note_started_process(event: str, args: tuple[object, ...]) -> None:
    if event in PROCESS_EVENTS and threading.current_thread() not in threads_before_the_test:
        if running_test:
            running_test[-1].stash[STARTED_A_PROCESS] = True
        # pytest sets fixtures up in the main thread: a start in another thread meanwhile is not their doing.
        if threading.current_thread() is threading.main_thread():
            PROCESS_FIXTURES.update(fixtures_being_set_up)


STARTED_A_PROCESS = pytest.StashKey[bool]()
# The fixtures (of this pytest-xdist worker) whose setup started a process: every test using one relies on it.
PROCESS_FIXTURES: set[str] = set()
fixtures_being_set_up: list[str] = []
sys.addaudithook(note_started_process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    running_test.append(item)
    threads_before_the_test.clear()
    threads_before_the_test.update(set(threading.enumerate()) - {threading.main_thread()})
    try:
        return (yield)
    finally:
        running_test.pop()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    fixtures_being_set_up.append(fixturedef.argname)
    try:
        return (yield)
    finally:
        fixtures_being_set_up.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        uses = not PROCESS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        item.user_properties.append(("started_a_process", item.stash.get(STARTED_A_PROCESS, False)))
        item.user_properties.append(("uses_a_started_process", uses))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        properties = dict(report.user_properties)
        if properties.get("started_a_process"):
            PROCESS_STARTING_TESTS.add(report.nodeid)
        if properties.get("started_a_process") or properties.get("uses_a_started_process"):
            PROCESS_USING_TESTS.add(report.nodeid)


PROCESS_STARTING_TESTS: set[str] = set()
PROCESS_USING_TESTS: set[str] = set()  # and those using a process a fixture started


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The count of tests that started a process (their ids too with `ROOMS_LIST_PROCESS_TESTS=1`), and of those
    that started one or used one a fixture started: written a line each to the file `ROOMS_PROCESS_TESTS_FILE`
    names (.ci/run's resolution stages leave them out)."""
    terminalreporter.write_line(f"tests that started a process: {len(PROCESS_STARTING_TESTS)}")
    if os.environ.get("ROOMS_LIST_PROCESS_TESTS"):
        for nodeid in sorted(PROCESS_STARTING_TESTS):
            terminalreporter.write_line(f"  {nodeid}")
    terminalreporter.write_line(f"tests that started a process or used a fixture's: {len(PROCESS_USING_TESTS)}")
    if listing := os.environ.get("ROOMS_PROCESS_TESTS_FILE"):
        Path(listing).write_text("".join(f"{nodeid}\n" for nodeid in sorted(PROCESS_USING_TESTS)))


def wait_for(
    predicate: Callable[[], T | None], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.1
) -> T:
    """The first truthy value of `predicate()`, polled until `timeout_s`; fail saying `what` did not happen
    (`what()` if it is a function: a server's log, say, read when it failed)."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what}: not within {timeout_s} s (last: {last!r})")
        time.sleep(every_s)


class Served(Protocol):
    """A running server, in this process or another."""

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...


def in_process_server(settings: Settings) -> InProcessServer:
    """Rooms' app with `settings`, served in this process."""
    from rooms import RoomsAction, RoomsObservation
    from rooms.kit.application import create_app
    from rooms.server.rooms_environment import RoomsEnvironment

    return InProcessServer(create_app(RoomsEnvironment, RoomsAction, RoomsObservation, settings=settings), settings)


def settings_with(env: dict[str, str] | None) -> Settings:
    """The settings of a server whose environment adds `env` to this process's (the tests' own settings are
    not a server's: only `env` counts)."""
    return Settings.from_env(env or {})


class SharedServers:
    """In-process Rooms servers shared by the tests of a run (of one pytest-xdist worker): one per distinct
    settings. A test that needs a server with some settings, and does not stop it, takes it from here. It
    gets it holding no session, as a new one would: a server still holding sessions a few seconds after the
    previous test ended is replaced. (It asks /capacity with the server's token, when its settings set one.)
    """

    IDLE_WITHIN_S = 10.0

    def __init__(self) -> None:
        self.servers: dict[frozenset[tuple[str, str]], InProcessServer] = {}

    def __call__(self, env: dict[str, str] | None = None) -> InProcessServer:
        key = frozenset((env or {}).items())
        settings = settings_with(env)
        server = self.servers.get(key)
        if server is None or not self.becomes_idle(server, settings.token()):
            if server is not None:
                server.stop()
            server = self.servers[key] = in_process_server(settings)
        return server

    def becomes_idle(self, server: InProcessServer, token: str | None = None) -> bool:
        deadline = time.monotonic() + self.IDLE_WITHIN_S
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while server.thread.is_alive():
            try:
                if requests.get(f"{server.url}/capacity", headers=headers, timeout=5).json()["active_sessions"] == 0:
                    return True
            except requests.RequestException:
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return False

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def shared_server() -> Iterator[SharedServers]:
    """`shared_server(env)`: a running in-process Rooms server with the settings `env` gives, shared by the run."""
    servers = SharedServers()
    yield servers
    servers.stop_all()


@pytest.fixture
def live_server(shared_server: SharedServers) -> InProcessServer:
    """The default server of `shared_server`, holding no session (asked for each test: it may have been replaced)."""
    return shared_server()


@pytest.fixture
def base_url(live_server: InProcessServer) -> str:
    return live_server.url


@pytest.fixture(scope="session")
def two_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`server --workers 2`, once both workers have started, shared by the run."""
    factory = ServerFactory(tmp_path_factory.mktemp("two-workers"), cwd=ROOT)
    port = free_port()
    command = [console_script("server"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    server = factory(command=command, port=port)
    started = "Application startup complete."
    wait_for(lambda: server.log().count(started) >= 2, 120, lambda: f"both workers started:\n{server.log()}")
    yield server
    factory.stop_all()


@pytest.fixture
def rooms_bench_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `rooms-bench ARGS...` in this process (`rooms_bench.cli.main`, the command's entry point), no process
    started: its exit status and what it wrote, as `bench` gives them. The command lifts the open-files limit;
    this process gets its own back. What the command raises (`SystemExit` with its one-line refusal, which
    Python writes to stderr exiting 1) is raised here."""

    from rooms_bench.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            status = main(list(args))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        said = capsys.readouterr()
        return subprocess.CompletedProcess(["rooms-bench", *args], status, said.out, said.err)

    return run


@contextmanager
def websockets_server(handler: Callable[..., Any], port: int, **options: Any) -> Iterator[None]:
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


# --- optional tools: skipped with a reason on a laptop, required in CI ------------------


def require(available: bool, how_to_enable: str) -> None:
    """Skip (or, under CI=true, fail) a test whose tool is missing."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test: {how_to_enable}")
    pytest.skip(how_to_enable)


# The system package's CLI where it is installed (Debian's docker.io, which .ci/run installs and a user
# on Debian runs), even if a newer one comes first on PATH; else the first `docker` on PATH.
SYSTEM_DOCKER = Path("/usr/bin/docker")
DOCKER = str(SYSTEM_DOCKER) if SYSTEM_DOCKER.exists() else shutil.which("docker") or "docker"


def docker_engine_running() -> bool:
    try:
        return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Container:
    name: str
    url: str


@contextmanager
def running_container(image: str) -> Iterator[Container]:
    """A detached container of `image` on a free port, once its `/health` answers; removed afterwards."""
    port = free_port()
    name = f"{image.split(':')[0].rsplit('/', 1)[-1]}-{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", image)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, timeout=120)
        yield Container(name, url)
    finally:
        docker("rm", "-f", name, check=False)


BASE_IMAGE = "ghcr.io/huggingface/openenv-base:latest"
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
def base_image(docker_available: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """OpenEnv's base image: pulled if a registry answers, else built offline by the README's recipe (once in
    a run: the pytest-xdist workers of the Docker groups take turns)."""
    with FileLock(tmp_path_factory.getbasetemp().parent / "base-image.lock"):
        return make_base_image()


def make_base_image() -> str:
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
def built_image(base_image: str) -> BuiltImage:
    """`rooms-env:latest`, built by the README's own `docker build` command."""
    from tests.readme_blocks import readme_blocks

    [build] = [b for b in readme_blocks("docker") if "docker build" in b.code]
    started = time.monotonic()
    result = subprocess.run(["bash", "-euc", build.code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    return BuiltImage(IMAGE, seconds, size)


def assert_web_interface_shows_the_description(url: str) -> None:
    """`/web/` is the playground, headed by the environment's name and description as `/metadata` has them,
    beside its README."""
    page = requests.get(f"{url}/web/", timeout=30)
    assert page.status_code == 200
    assert requests.get(f"{url}/health").status_code == 200
    metadata = requests.get(f"{url}/metadata", timeout=30).json()
    assert f"<header><h1>{html.escape(metadata['name'])}</h1><p>{html.escape(metadata['description'])}</p>" in page.text
    assert "<h2>Quick Start</h2>" in page.text  # the README, rendered


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # headless on a machine with no outside network: no background calls home
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    require(CHROMIUM.exists(), "needs Chromium at /usr/bin/chromium: as root, `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A Chromium for one test, which opens pages in contexts of its own.

    Not for longer in a module of other tests: Playwright's sync API runs an event loop in this thread until
    it stops, and meanwhile any `asyncio.run` fails ("cannot be called from a running event loop")."""
    with chromium() as browser:
        yield browser
