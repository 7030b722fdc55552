"""OpenEnv's own client for Rooms, written as `openenv init` writes one: the reference behaviour.

Also a `ContainerProvider` that serves Rooms in this process instead of a container, so that
provider lifecycles can be compared without Docker.
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.containers.runtime import ContainerProvider, RuntimeProvider
from openenv.core.env_client import EnvClient
from openenv.core.env_server.types import State

from rooms import RoomsAction, RoomsObservation
from tests.conftest import InProcessServer, in_process_server, settings_with


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


class LocalServerProvider(ContainerProvider, RuntimeProvider):  # type: ignore[misc]
    """Serves Rooms in this process where a container (or runtime) provider would run a container: what a
    provider does with the server is what is compared, not the process. The settings come from the provider's
    `env` and the environment variables it is given (`env_vars`: those of its last start)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.env_vars: dict[str, str] | None = None
        self.started: list[InProcessServer] = []
        self.stops = 0

    def start_container(
        self, image: str = "", port: int | None = None, env_vars: dict[str, str] | None = None, **kwargs: Any
    ) -> str:
        return self.start(port, env_vars)

    def start(self, port: int | None = None, env_vars: dict[str, str] | None = None, **kwargs: Any) -> str:
        if port is not None:  # no launch in these tests asks for one
            raise NotImplementedError(f"port={port}: an in-process server takes a free port of its own")
        self.env_vars = env_vars
        server = in_process_server(settings_with({**self.env, **(env_vars or {})}))
        self.started.append(server)
        return server.url

    def stop_container(self) -> None:
        self.stop()

    def stop(self) -> None:
        self.stops += 1
        for server in self.started:
            server.stop()

    def wait_for_ready(self, *args: Any, **kwargs: Any) -> None:  # (base_url, timeout_s) or (timeout_s)
        pass  # serving once started

    def is_running(self) -> bool:
        return self.running > 0

    @property
    def running(self) -> int:
        return sum(server.thread.is_alive() for server in self.started)
