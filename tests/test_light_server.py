"""The `server` command leaves Gradio out when the web interface is off; every other program keeps it.

Which modules a server process loads is read from CPython's verbose mode (`PYTHONVERBOSE`,
`python -v`): every process started with it, uvicorn's spawned workers included, writes
`import 'NAME' # LOADER` to stderr for each module it loads, which the harness keeps in the
server's log. (The import-time log, `-X importtime`, would not do: it also lists the imports
that fail, and misses those made through `importlib.import_module`.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter

import pytest
import requests

from rooms import RoomsAction, RoomsEnv
from rooms.kit.command import capacity_message
from rooms.kit.settings import Settings
from tests.conftest import (
    LiveServer,
    ServerFactory,
    assert_web_interface_shows_the_description,
    console_script,
    free_port,
    wait_for,
)

IMPORT_LOG = {"PYTHONVERBOSE": "1"}
SERVED_APP = "rooms.server.app"  # the app the server command serves: each worker loads it once


def imported_modules(log: str) -> Counter[str]:
    """How many times each module was loaded, over every process writing to `log`."""
    # Not anchored to line starts: two workers writing at once may interleave their lines.
    return Counter(re.findall(r"import '([\w.]+)' # ", log))


def gradio_modules(imports: Counter[str]) -> list[str]:
    return [name for name in imports if name == "gradio" or name.startswith("gradio.")]


def wait_for_in_log(server: LiveServer, text: str, times: int, timeout: float = 90) -> None:
    wait_for(
        lambda: server.log().count(text) >= times,
        timeout,
        lambda: f"{text!r} {times} times in the log:\n{server.log()}",
    )


def server_command(port: int, workers: int) -> list[str]:
    return [console_script("server"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


@pytest.mark.parametrize("workers", [1, 2])
def test_server_command_without_web_interface_never_imports_gradio_and_serves_steps(
    server_factory: ServerFactory, workers: int
) -> None:
    port = free_port()
    env = {**IMPORT_LOG, "ENABLE_WEB_INTERFACE": "false"}
    server = server_factory(command=server_command(port, workers), env=env, port=port)
    wait_for_in_log(server, "Application startup complete.", times=workers)  # /health answers once one is up
    for message in ("a", "bb", "ccc", "dddd"):  # one session each: with two workers, both likely serve some
        with RoomsEnv(base_url=server.url).sync() as client:
            assert client.step(RoomsAction(message=message)).observation.echoed_message == message
    assert requests.get(f"{server.url}/web/", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/metadata", timeout=10).json()["name"] == "Rooms"
    assert capacity_message(Settings.from_env().max_concurrent_envs, workers) in server.log()  # its limit, announced
    imports = imported_modules(server.log())
    assert imports[SERVED_APP] == workers, "every worker's imports are in the log"
    assert gradio_modules(imports) == []
    assert "fastmcp.server" not in imports, "the kit serves MCP without FastMCP's server"


def test_server_command_with_web_interface_serves_the_playground_without_gradio(server_factory: ServerFactory) -> None:
    server = server_factory(env={**IMPORT_LOG, "ENABLE_WEB_INTERFACE": "true"})
    assert_web_interface_shows_the_description(server.url)
    imports = imported_modules(server.log())
    assert imports[SERVED_APP] == 1 and gradio_modules(imports) == []


@pytest.mark.slow
def test_a_program_importing_rooms_can_still_import_gradio_and_the_web_interface() -> None:
    program = (
        "import rooms\n"
        "from rooms import RoomsEnv\n"
        "import rooms.server.app\n"
        "import gradio\n"
        "from openenv.core.env_server import create_web_interface_app\n"
        "assert create_web_interface_app is not None, 'OpenEnv lost its web interface'\n"
        "print(gradio.__name__, create_web_interface_app.__name__)\n"
    )
    env = {**os.environ, "ENABLE_WEB_INTERFACE": "false"}  # as the server command would have it
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gradio", "create_web_interface_app"]
