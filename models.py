"""Data models for the Rooms environment: what goes in, what comes out."""

from openenv.core.env_server.types import Action, Observation
from pydantic import Field

MAX_MESSAGE_LENGTH = 1_048_576  # characters: the reward stays within [0, 104857.6] (openenv.yaml)


class RoomsAction(Action):
    """A message for the environment to echo back."""

    message: str = Field(..., max_length=MAX_MESSAGE_LENGTH, description="The message to echo back")


class RoomsObservation(Observation):
    """The echoed message and its length, plus the base `done`, `reward` and `metadata`."""

    echoed_message: str = Field(..., description="The message echoed back")
    message_length: int = Field(..., ge=0, description="Length of the message in characters")


__all__ = ["MAX_MESSAGE_LENGTH", "RoomsAction", "RoomsObservation"]
