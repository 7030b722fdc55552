"""Data models for the Rooms environment: what goes in, what comes out."""

import os

from openenv.core.env_server.types import Action, Observation
from pydantic import Field

DEFAULT_MAX_MESSAGE_LENGTH = 1_048_576


def max_message_length_from_env() -> int:
    """Read `ROOMS_MAX_MESSAGE_LENGTH` (characters); a bad value names the variable."""
    raw = os.environ.get("ROOMS_MAX_MESSAGE_LENGTH", str(DEFAULT_MAX_MESSAGE_LENGTH))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"ROOMS_MAX_MESSAGE_LENGTH must be a positive integer, got {raw!r}")
    return value


MAX_MESSAGE_LENGTH = max_message_length_from_env()


class RoomsAction(Action):
    """A message for the environment to echo back."""

    message: str = Field(
        ...,
        max_length=MAX_MESSAGE_LENGTH,
        description="The message to echo back",
    )


class RoomsObservation(Observation):
    """The echoed message and its length, plus the base `done`, `reward` and `metadata`."""

    echoed_message: str = Field(..., description="The message echoed back")
    message_length: int = Field(..., ge=0, description="Length of the message in characters")


__all__ = ["MAX_MESSAGE_LENGTH", "RoomsAction", "RoomsObservation"]
