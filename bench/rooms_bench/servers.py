"""The servers the benchmark starts itself: Rooms, the floor, and the `openenv init` template."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from importlib import metadata
from importlib.machinery import PathFinder
from pathlib import Path
from types import ModuleType

import httpx

from rooms.kit.testing import LiveServer, free_port, start_server
from rooms_bench.sessions import EnvClasses

# Sessions a server started by the benchmark admits, at least.
MIN_SESSION_SLOTS = 64
TEMPLATE_PACKAGE = "rooms_template"


def rooms_classes() -> EnvClasses:
    from rooms import RoomsAction, RoomsEnv

    return EnvClasses(client=RoomsEnv, action=RoomsAction)


def start_rooms(log_dir: Path, max_sessions: int, env: dict[str, str] | None = None) -> LiveServer:
    """The Rooms server, admitting `max_sessions` sessions at once; `env` adds settings."""
    slots = {"MAX_CONCURRENT_ENVS": str(max(MIN_SESSION_SLOTS, max_sessions))}
    return start_server(log_dir, env={**slots, **(env or {})})


def observation_frame(url: str, message: str) -> str:
    """The WebSocket reply a Rooms step with `message` gets, for the floor to answer with."""
    response = httpx.post(f"{url}/step", json={"action": {"message": message}}, timeout=30)
    response.raise_for_status()
    return json.dumps({"type": "observation", "data": response.json()})


def start_floor(log_dir: Path, response: str, reset_response: str | None = None) -> LiveServer:
    """A bare `websockets` server answering every frame with `response` (a reset with `reset_response`)."""
    port = free_port()
    command = [sys.executable, "-m", "rooms_bench.floor", str(port), response]
    return start_server(log_dir, command + ([reset_response] if reset_response else []), port=port)


@dataclass(frozen=True)
class Template:
    """The package `openenv init` generated into `directory`, and its classes."""

    directory: Path
    classes: EnvClasses


def template_cache() -> Path:
    """Where the `openenv init` template is kept, one per OpenEnv release (`$XDG_CACHE_HOME`, else ~/.cache)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "rooms-bench" / f"openenv-{metadata.version('openenv')}"


def generate_template() -> Template:
    """`openenv init rooms_template`, once per OpenEnv release, then its client and action imported from there.

    `openenv init` also locks the new project with uv, seconds of every comparison: the result is kept
    in `template_cache()`. A run that finds none makes it aside, then moves it there in one rename.
    """
    directory = template_cache()
    if not (directory / TEMPLATE_PACKAGE).is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory.parent, ignore_cleanup_errors=True) as fresh:
            subprocess.run(
                [sys.executable, "-m", "openenv.cli", "init", TEMPLATE_PACKAGE, "--output-dir", fresh],
                check=True,
                capture_output=True,
            )
            with suppress(OSError):  # a run alongside put its own there first
                Path(fresh).rename(directory)
    package = import_package_from(directory, TEMPLATE_PACKAGE)
    return Template(directory, EnvClasses(client=package.RoomsTemplateEnv, action=package.RoomsTemplateAction))


def import_package_from(directory: Path, name: str) -> ModuleType:
    """Import package `name` from `directory` alone, leaving `sys.path` as it is.

    importlib's recipe for importing a module from a given location: find its spec there, make
    the module, register it under its name (its relative imports resolve through that
    registration) and run it.
    """
    spec = PathFinder.find_spec(name, [str(directory)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no package {name!r} in {directory}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def start_template(
    log_dir: Path, template: Template, max_sessions: int, env: dict[str, str] | None = None
) -> LiveServer:
    """The template's environment served by `rooms_bench.template_app`, its package on PYTHONPATH."""
    port = free_port()
    command = [sys.executable, "-m", "rooms_bench.template_app", str(port), str(max(MIN_SESSION_SLOTS, max_sessions))]
    return start_server(log_dir, command, env={**template_path(template), **(env or {})}, port=port)


def template_path(template: Template) -> dict[str, str]:
    """The environment variable that puts the template's package on a Python process's path."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(template.directory), os.environ.get("PYTHONPATH")]))}
