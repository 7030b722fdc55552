"""OpenEnv's own client for Rooms, written as `openenv init` writes one: the reference behaviour.

Also a `ContainerProvider` that serves Rooms in this process instead of a container, so that
provider lifecycles can be compared without Docker.
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.containers.runtime import ContainerProvider
from openenv.core.env_client import EnvClient
from openenv.core.env_server.types import State

from rooms import RoomsAction, RoomsObservation
from tests.conftest import InProcessServer, in_process_server, settings_with, wait_until_healthy


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
    """Serves Rooms in this process where a container provider would run a container (what a provider does
    with the server is what is compared, not the process)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.started: list[InProcessServer] = []
        self.stops = 0

    def start_container(
        self, image: str, port: int | None = None, env_vars: dict[str, str] | None = None, **kwargs: Any
    ) -> str:
        server = in_process_server(settings_with({**self.env, **(env_vars or {})}))
        self.started.append(server)
        return server.url

    def stop_container(self) -> None:
        self.stops += 1
        for server in self.started:
            server.stop()

    def wait_for_ready(self, base_url: str, timeout_s: float = 30.0) -> None:
        wait_until_healthy(base_url, timeout=max(timeout_s, 90.0))

    @property
    def running(self) -> int:
        return sum(server.thread.is_alive() for server in self.started)
