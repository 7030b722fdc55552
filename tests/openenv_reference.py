"""OpenEnv's own client for Rooms, written as `openenv init` writes one: the reference behaviour.

Also a `ContainerProvider` that starts a local Rooms server instead of a container, so that
provider lifecycles can be compared without Docker.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.containers.runtime import ContainerProvider
from openenv.core.env_client import EnvClient
from openenv.core.env_server.types import State

from rooms import RoomsAction, RoomsObservation
from tests.conftest import LiveServer, start_server, wait_until_healthy


class ReferenceEnv(EnvClient[RoomsAction, RoomsObservation, State]):
    """The template's client: the three hooks and nothing else."""

    def _step_payload(self, action: RoomsAction) -> dict[str, Any]:
        return {"message": action.message}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[RoomsObservation]:
        observation = RoomsObservation(
            **payload.get("observation", {}), reward=payload.get("reward"), done=payload.get("done", False)
        )
        return StepResult(
            observation=observation, reward=observation.reward, done=observation.done, metadata=observation.metadata
        )

    def _parse_state(self, payload: dict[str, Any]) -> State:
        return State.model_validate(payload)


class LocalServerProvider(ContainerProvider):
    """Runs a Rooms server process where a container provider would run a container."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = env or {}
        self.started: list[LiveServer] = []
        self.stops = 0

    def start_container(
        self, image: str, port: int | None = None, env_vars: dict[str, str] | None = None, **kwargs: Any
    ) -> str:
        server = start_server(self.log_dir, env={**self.env, **(env_vars or {})}, port=port, wait=False)
        self.started.append(server)
        return server.url

    def stop_container(self) -> None:
        self.stops += 1
        for server in self.started:
            if not server.stopped:
                server.stop(signal.SIGTERM)

    def wait_for_ready(self, base_url: str, timeout_s: float = 30.0) -> None:
        [server] = [server for server in self.started if server.url == base_url]
        wait_until_healthy(base_url, server.process, timeout=max(timeout_s, 90.0))

    @property
    def running(self) -> int:
        return sum(server.process.poll() is None for server in self.started)
