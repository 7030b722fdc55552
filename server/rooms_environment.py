"""The Rooms environment: echoes every message back and rewards its length."""

from __future__ import annotations

import sys
from typing import Annotated, Any
from uuid import uuid4

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata, State
from pydantic import Field

from rooms.kit.package import package_readme, package_version
from rooms.kit.tools import tool
from rooms.models import MAX_MESSAGE_LENGTH, RoomsAction, RoomsObservation

READY_MESSAGE = "Rooms environment ready!"


class RoomsEnvironment(Environment[RoomsAction, RoomsObservation, State]):
    """
    ## Description

    Rooms is the smallest complete OpenEnv environment: every step echoes the
    action's message back unchanged and rewards it by its length. It exists to
    exercise the OpenEnv APIs (HTTP, WebSocket, typed clients, Docker, Spaces)
    and to measure an env-serving stack with a step that costs next to nothing.

    ## Action Space

    `RoomsAction(message: str)`: any Unicode string of at most
    `MAX_MESSAGE_LENGTH` (1,048,576) characters. Unknown fields are rejected.

    The same step is the MCP tool `echo(message)` (`kit/mcp.py` serves it):
    `step(CallToolAction(tool_name="echo", arguments={"message": m}))`, or a call
    from any MCP client, earns the reward of `step(RoomsAction(message=m))`.

    ## Observation Space

    `RoomsObservation`:

    | Field            | Type  | Value after `step(RoomsAction(message=m))`      |
    |------------------|-------|-------------------------------------------------|
    | `echoed_message` | str   | `m`, unchanged                                  |
    | `message_length` | int   | `len(m)`, in characters (code points)           |
    | `reward`         | float | `len(m) / 10`                                   |
    | `done`           | bool  | `False`                                         |
    | `metadata`       | dict  | `{"original_message": m, "step": step_count}`   |

    ## Rewards

    `message_length × 0.1`, computed as `message_length / 10` so that it is the
    exact decimal: "Hi" gives 0.2, "abc" gives 0.3, "Hello, World!" gives 1.3,
    "" gives 0.0. There is no cap; the bound is the message length limit.

    ## Starting State

    `reset()` starts a new episode with `step_count` 0 and `episode_id` set to
    the given `episode_id` or a fresh UUID4. Its observation is
    `echoed_message="Rooms environment ready!"`, `message_length=0`,
    `reward=0.0`, `done=False`, `metadata={"step": 0}`. The `seed` is accepted
    and ignored: nothing in Rooms is random.

    ## Episode End

    Never: `done` is always `False`. A client ends an episode by calling
    `reset()` again or by closing its session.

    ## Arguments

    `RoomsEnvironment()` takes no arguments. The server creates one instance
    per WebSocket session (`SUPPORTS_CONCURRENT_SESSIONS = True`) and one per
    stateless HTTP request.

    ## Examples

    >>> from rooms import RoomsAction
    >>> from rooms.server.rooms_environment import RoomsEnvironment
    >>> env = RoomsEnvironment()
    >>> env.reset(episode_id="ep-1").echoed_message
    'Rooms environment ready!'
    >>> obs = env.step(RoomsAction(message="Hello, World!"))
    >>> obs.echoed_message, obs.message_length, obs.reward, obs.done
    ('Hello, World!', 13, 1.3, False)
    >>> obs.metadata
    {'original_message': 'Hello, World!', 'step': 1}
    >>> env.state
    State(episode_id='ep-1', step_count=1)
    """

    SUPPORTS_CONCURRENT_SESSIONS = True
    # OpenEnv creates and closes each WebSocket session's environment in an executor: by default a
    # new thread per session, whose start blocks the event loop and whose wake-ups take the GIL
    # from it. Rooms does no blocking work there (reset and step are native async), so all sessions
    # share one thread: about 15 % less server CPU per session (docs/performance.md).
    REQUIRES_SINGLE_THREAD_EXECUTOR = True

    def __init__(self) -> None:
        super().__init__()
        self._state = State(episode_id=str(uuid4()), step_count=0)

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        **kwargs: Any,
    ) -> RoomsObservation:
        """Start a new episode and return the ready observation."""
        self._state = State(episode_id=episode_id or str(uuid4()), step_count=0)
        return RoomsObservation(
            echoed_message=READY_MESSAGE,
            message_length=0,
            reward=0.0,
            done=False,
            metadata={"step": 0},
        )

    def step(
        self,
        action: RoomsAction,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> RoomsObservation:
        """Echo `action.message` back, rewarded by its length."""
        self._state.step_count += 1
        message = action.message
        length = len(message)
        return RoomsObservation(
            echoed_message=message,
            message_length=length,
            reward=length / 10,
            done=False,
            metadata={"original_message": message, "step": self._state.step_count},
        )

    # Native async versions: the server awaits these directly instead of
    # handing every call to a per-session thread pool.
    async def reset_async(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        **kwargs: Any,
    ) -> RoomsObservation:
        """Start a new episode (async form of `reset`)."""
        return self.reset(seed=seed, episode_id=episode_id)

    async def step_async(
        self,
        action: RoomsAction,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> RoomsObservation:
        """Echo a message (async form of `step`)."""
        return self.step(action)

    @tool
    async def echo(
        self, message: Annotated[str, Field(max_length=MAX_MESSAGE_LENGTH, description="The message to echo back")]
    ) -> RoomsObservation:
        """Echo a message back; the reward is its length × 0.1. Each call is a step of the session."""
        return await self.step_async(RoomsAction(message=message))

    @property
    def state(self) -> State:
        """The current episode id and step count."""
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        """Name, description, version and README, for `/metadata` and `/web`."""
        return EnvironmentMetadata(
            name="Rooms",
            description="Echoes each message back; the reward is its length × 0.1.",
            version=package_version(),
            readme_content=package_readme(),
        )


def _self_check() -> int:
    """Exercise reset, step, state and rewards; print each check; return the failure count."""
    env = RoomsEnvironment()
    checks: list[tuple[str, object, object]] = []

    ready = env.reset(episode_id="self-check")
    checks.append(("reset echoes the ready message", ready.echoed_message, READY_MESSAGE))
    checks.append(("reset reward is 0.0", ready.reward, 0.0))
    checks.append(("reset starts at step 0", env.state.step_count, 0))
    checks.append(("reset keeps the given episode_id", env.state.episode_id, "self-check"))

    for message, reward in [("Hi", 0.2), ("abc", 0.3), ("Hello, World!", 1.3), ("", 0.0)]:
        obs = env.step(RoomsAction(message=message))
        checks.append((f"step echoes {message!r}", obs.echoed_message, message))
        checks.append((f"reward of {message!r} is {reward}", obs.reward, reward))
        checks.append((f"length of {message!r} is {len(message)}", obs.message_length, len(message)))
    checks.append(("state counts 4 steps", env.state.step_count, 4))
    checks.append(("done stays False", obs.done, False))

    failures = 0
    for name, actual, expected in checks:
        ok = actual == expected
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": got {actual!r}"))
    print(f"{len(checks) - failures} checks passed, {failures} failed")
    return failures


if __name__ == "__main__":
    sys.exit(1 if _self_check() else 0)
