"""Helpers of the rooms-bench tests: `rooms-bench` run in this process (`rooms_bench_main`) or as a user runs it
(`bench`), and Rooms servers in this process (`live_server`, `shared_server`, `new_server`, the suite's)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.conftest as suite
from rooms.kit.testing import InProcessServer, console_script, server_factory  # noqa: F401  (fixtures)
from tests.conftest import (  # noqa: F401  (its in-process servers; its hooks, so its count of the tests that start a process covers these)
    live_server,
    pytest_fixture_setup,
    pytest_runtest_logreport,
    pytest_runtest_protocol,
    pytest_runtest_teardown,
    rooms_bench_main,
    shared_server,
)

ROOT = Path(__file__).resolve().parents[2]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The suite's count of the tests that started a process, when only these tests run (with tests/ too, its
    conftest.py prints it)."""
    if not config.pluginmanager.has_plugin(str(ROOT / "tests" / "conftest.py")):
        suite.pytest_terminal_summary(terminalreporter)


@pytest.fixture
def bench() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `rooms-bench ARGS...` from the checkout, as a user does: for what only the command's process shows."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [console_script("rooms-bench"), *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def new_server() -> Iterator[Callable[..., InProcessServer]]:
    """`new_server(env)`: a Rooms server of this test's own, in this process, with the settings `env` gives;
    stopped after the test (two with the same settings are two servers, where `shared_server` gives one)."""
    servers: list[InProcessServer] = []

    def start(env: dict[str, str] | None = None) -> InProcessServer:
        servers.append(suite.in_process_server(suite.settings_with(env)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    assert report["schema"] == "rooms-bench/1"
    for run in report["runs"]:
        assert set(run) >= {"name", "transport", "mode", "sessions", "steps", "errors", "steps_per_s", "latency_us"}
        assert set(run["latency_us"]) == {"p50", "p90", "p99", "max"}
    return report


@pytest.fixture
def load_report() -> Callable[[Path], dict[str, Any]]:
    """Reads a JSON report, checking the fields every run has."""
    return read_report
