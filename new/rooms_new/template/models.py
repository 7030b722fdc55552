"""Data models for the __ENV_TITLE_NAME__ environment: what goes in, what comes out."""

from openenv.core.env_server.types import Action, Observation
from pydantic import Field

MAX_MESSAGE_LENGTH = 1_000  # characters: the reward stays within [0, 100] (openenv.yaml)


class __ENV_CLASS_NAME__Action(Action):
    """A message for the environment to echo back."""

    message: str = Field(..., max_length=MAX_MESSAGE_LENGTH, description="The message to echo back")


class __ENV_CLASS_NAME__Observation(Observation):
    """The echoed message, plus the base `done`, `reward` and `metadata`."""

    echoed_message: str = Field(..., description="The message echoed back")


__all__ = ["MAX_MESSAGE_LENGTH", "__ENV_CLASS_NAME__Action", "__ENV_CLASS_NAME__Observation"]
