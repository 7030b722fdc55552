"""Helpers of the rooms-bench tests; the live-server fixtures are the kit's (`rooms.kit.testing`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rooms.kit.testing import base_url, console_script, live_server, server_factory  # noqa: F401  (fixtures)
from tests.conftest import (  # noqa: F401  (the suite's count of the tests that start a process covers these too)
    pytest_fixture_setup,
    pytest_runtest_protocol,
    pytest_runtest_teardown,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `rooms-bench ARGS...` from the checkout, as a user does."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [console_script("rooms-bench"), *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    return run


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
