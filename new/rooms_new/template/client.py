"""The __ENV_TITLE_NAME__ client."""

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_server.types import State

from .kit.client import TypedEnvClient
from .models import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation


class __ENV_CLASS_NAME__Env(TypedEnvClient[__ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation, State]):
    """Client for a __ENV_TITLE_NAME__ server; one instance is one session on the server.

    It keeps one WebSocket open to the server, so every call is one round trip.
    In async code, `await` its methods; in sync code, use `.sync()`:

    >>> with __ENV_CLASS_NAME__Env(base_url="http://localhost:8000").sync() as env:  # doctest: +SKIP
    ...     result = env.reset()
    ...     result = env.step(action)  # a __ENV_CLASS_NAME__Action

    `__ENV_CLASS_NAME__Env.from_docker_image("__ENV_DIST_NAME__-env:latest")` starts a container first and
    stops it on `close()`.
    """

    def _step_payload(self, action: __ENV_CLASS_NAME__Action) -> dict[str, Any]:
        """The `data` of a step message: the action's fields."""
        return action.model_dump(exclude_defaults=True)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[__ENV_CLASS_NAME__Observation]:
        """Turn a server observation payload into a `StepResult`."""
        observation = __ENV_CLASS_NAME__Observation(
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


__all__ = ["__ENV_CLASS_NAME__Env"]
