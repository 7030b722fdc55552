"""Fixtures of the tests: a server started by the `server` command, an example action, the reward range."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydantic import ValidationError

from rooms import RoomsAction

PROJECT = Path(__file__).resolve().parents[1]
WORDS = "one two three "  # a string field's example value, cut or repeated to the field's length bounds


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a server that `python -m rooms.kit.command` (the `server` command) runs on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "rooms.kit.command", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with code {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer /health within {timeout_s} s:\n{log.read_text()}")


@pytest.fixture
def action() -> RoomsAction:
    """A valid action, built from the action's JSON schema: a value for each required field."""
    schema = RoomsAction.model_json_schema()
    definitions = schema.get("$defs", {})
    fields = {name: example(schema["properties"][name], definitions) for name in schema.get("required", [])}
    try:
        return RoomsAction.model_validate(fields)
    except ValidationError as error:
        pytest.fail(f"no example RoomsAction could be built from its schema: write one in tests/conftest.py\n{error}")


def example(schema: dict[str, Any], definitions: dict[str, Any]) -> Any:
    """A value that fits `schema`: its default, const, first example or first choice, else a small one of its type."""
    if "$ref" in schema:
        return example(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [option for option in schema.get(key, []) if option.get("type") != "null"]
        if options:
            return example(options[0], definitions)
    kind = schema.get("type", "string")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "array":
        return [example(schema.get("items", {}), definitions) for _ in range(schema.get("minItems", 0))]
    if kind == "object":
        required = schema.get("required", [])
        return {name: example(schema.get("properties", {}).get(name, {}), definitions) for name in required}
    if kind == "string":
        length = min(max(len(WORDS), schema.get("minLength", 0)), schema.get("maxLength", len(WORDS)))
        return (WORDS * (length // len(WORDS) + 1))[:length]
    return {"boolean": True, "null": None}[kind]


@pytest.fixture(scope="session")
def reward_range() -> tuple[float, float]:
    """The rewards openenv.yaml declares that `step` gives: (lowest, highest)."""
    manifest = yaml.safe_load((PROJECT / "openenv.yaml").read_text(encoding="utf-8"))
    low, high = manifest["validation"]["reward"]["range"]
    return float(low), float(high)
