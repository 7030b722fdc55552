"""Fixtures of the tests: the app in process (Starlette's TestClient, and uvicorn on a free port for
the typed client, which needs a socket), an example action, the reward range."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from __ENV_NAME__.kit.settings import Settings
from __ENV_NAME__.kit.testing import InProcessServer

if TYPE_CHECKING:
    from __ENV_NAME__.models import __ENV_CLASS_NAME__Action

# The tests never use OpenEnv's Gradio web interface: without it, OpenEnv imports in a third of the time
# (a `None` in sys.modules makes `import gradio` raise ModuleNotFoundError, which OpenEnv expects). So
# nothing above imports OpenEnv, and the fixtures import the package's modules when they run.
sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]

PROJECT = Path(__file__).resolve().parents[1]
WORDS = "one two three "  # a string field's example value, cut or repeated to the field's length bounds


def new_app() -> Any:
    """The app, with the default settings."""
    from __ENV_NAME__.kit.application import create_app
    from __ENV_NAME__.models import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation
    from __ENV_NAME__.server.__ENV_NAME___environment import __ENV_CLASS_NAME__Environment

    return create_app(
        __ENV_CLASS_NAME__Environment,
        __ENV_CLASS_NAME__Action,
        __ENV_CLASS_NAME__Observation,
        Settings(),
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The app, served in process."""
    with TestClient(new_app()) as client:
        yield client


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The URL of the app served by uvicorn in a thread of this process, on a free port."""
    server = InProcessServer(new_app(), Settings())
    yield server.url
    server.stop()


@pytest.fixture
def action() -> __ENV_CLASS_NAME__Action:
    """A valid action, built from the action's JSON schema: a value for each required field."""
    from __ENV_NAME__.models import __ENV_CLASS_NAME__Action

    schema = __ENV_CLASS_NAME__Action.model_json_schema()
    definitions = schema.get("$defs", {})
    fields = {name: example(schema["properties"][name], definitions) for name in schema.get("required", [])}
    try:
        return __ENV_CLASS_NAME__Action.model_validate(fields)
    except ValidationError as error:
        pytest.fail(f"no example action could be built from its schema: write one in tests/conftest.py\n{error}")


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
        return [example(schema.get("items", {}), definitions) for _ in range(max(1, schema.get("minItems", 0)))]
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
