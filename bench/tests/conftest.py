"""Helpers of the rooms-bench tests; live-server fixtures come from `rooms_bench.pytest_plugin`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def console_script(name: str) -> str:
    """An installed console script: beside this interpreter, else on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `uv sync`")
    return found


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
