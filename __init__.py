"""Rooms: the OpenEnv echo environment.

`RoomsAction(message)` goes in; a `RoomsObservation` (the echoed message, its
length, reward = length × 0.1) comes out. `RoomsEnv` is the typed client.
"""

from typing import TYPE_CHECKING, Any

from rooms.models import RoomsAction, RoomsObservation

if TYPE_CHECKING:
    from rooms.client import RoomsEnv, RoomsLaunch, RoomsSyncEnv

__all__ = ["RoomsAction", "RoomsEnv", "RoomsLaunch", "RoomsObservation", "RoomsSyncEnv"]


def __getattr__(name: str) -> Any:
    # The client is imported on first use: a server process never needs it.
    if name in ("RoomsEnv", "RoomsLaunch", "RoomsSyncEnv"):
        from rooms import client

        return getattr(client, name)
    raise AttributeError(f"module 'rooms' has no attribute {name!r}")
