"""The __ENV_TITLE_NAME__ environment: `reset` starts an episode, `step` plays one action."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata, State

from __ENV_NAME__.kit.package import package_readme, package_version
from __ENV_NAME__.models import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation


class __ENV_CLASS_NAME__Environment(Environment[__ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation, State]):
    """The __ENV_TITLE_NAME__ environment.

    `reset()` starts an episode; `step(action)` plays one `__ENV_CLASS_NAME__Action` and returns
    a `__ENV_CLASS_NAME__Observation` (models.py) with its `reward` and `done` (`step` says which).
    The server creates one instance per session (WebSocket or MCP), and one per plain HTTP
    request: `POST /step` steps a new instance, never reset.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True
    # All sessions share one executor thread, and reset and step run on the server's event loop
    # (reset_async and step_async call them). If step waits (on I/O, on a model), set this to False
    # and delete reset_async and step_async: steps then run in executor threads, off the loop.
    REQUIRES_SINGLE_THREAD_EXECUTOR = True

    def __init__(self) -> None:
        super().__init__()
        # Every attribute `step` reads starts here as well as in `reset`: a plain HTTP `POST /step`
        # steps a new instance that was never reset.
        self._state = State(episode_id=str(uuid4()), step_count=0)

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        **kwargs: Any,
    ) -> __ENV_CLASS_NAME__Observation:
        """Start a new episode and return its first observation."""
        self._state = State(episode_id=episode_id or str(uuid4()), step_count=0)
        return __ENV_CLASS_NAME__Observation(echoed_message="", reward=0.0, done=False)

    def step(
        self,
        action: __ENV_CLASS_NAME__Action,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> __ENV_CLASS_NAME__Observation:
        """Echo `action.message` back; the reward is its length / 10; the episode never ends."""
        self._state.step_count += 1
        message = action.message
        return __ENV_CLASS_NAME__Observation(echoed_message=message, reward=len(message) / 10, done=False)

    async def reset_async(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        **kwargs: Any,
    ) -> __ENV_CLASS_NAME__Observation:
        """Start a new episode (async form of `reset`)."""
        return self.reset(seed=seed, episode_id=episode_id, **kwargs)

    async def step_async(
        self,
        action: __ENV_CLASS_NAME__Action,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> __ENV_CLASS_NAME__Observation:
        """Play one action (async form of `step`)."""
        return self.step(action, timeout_s=timeout_s, **kwargs)

    @property
    def state(self) -> State:
        """The current episode id and step count."""
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        """Name, description, version and README, for `/metadata` and `/web`."""
        return EnvironmentMetadata(
            name="__ENV_TITLE_NAME__",
            description="The __ENV_TITLE_NAME__ environment.",
            version=package_version(),
            readme_content=package_readme(),
        )
