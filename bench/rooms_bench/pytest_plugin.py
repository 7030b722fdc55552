"""pytest fixtures for live servers, shared by the Rooms and rooms-bench test suites.

Registered as a pytest plugin by rooms-bench's `pytest11` entry point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rooms_bench.harness import LiveServer, ServerFactory


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
