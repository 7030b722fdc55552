"""Rooms Environment Client."""

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_server.types import State

from .kit.client import TypedEnvClient
from .models import RoomsAction, RoomsObservation


class RoomsEnv(TypedEnvClient[RoomsAction, RoomsObservation, State]):
    """Client for a Rooms server; one instance is one session on the server.

    It keeps one WebSocket open to the server, so every call is one round trip.
    In async code, `await` its methods; in sync code, use `.sync()`:

    >>> with RoomsEnv(base_url="http://localhost:8000").sync() as env:  # doctest: +SKIP
    ...     env.reset()
    ...     print(env.step(RoomsAction(message="Hello!")).reward)
    0.6

    `RoomsEnv.from_docker_image("rooms-env:latest")` starts a container first and
    stops it on `close()`.
    """

    def _step_payload(self, action: RoomsAction) -> dict[str, Any]:
        """The `data` of a step message: the action's fields."""
        return action.model_dump(exclude_defaults=True)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[RoomsObservation]:
        """Turn a server observation payload into a `StepResult`."""
        observation = RoomsObservation(
            **payload.get("observation", {}),
            reward=payload.get("reward"),
            done=payload.get("done", False),
        )
        return StepResult(
            observation=observation, reward=observation.reward, done=observation.done, metadata=observation.metadata
        )

    def _parse_state(self, payload: dict[str, Any]) -> State:
        """Turn a server state payload into a `State`."""
        return State.model_validate(payload)


__all__ = ["RoomsEnv"]
