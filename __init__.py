"""Rooms: the OpenEnv echo environment.

`RoomsAction(message)` goes in; a `RoomsObservation` (the echoed message, its
length, reward = length × 0.1) comes out. `RoomsEnv` is the typed client.
"""

from rooms.client import RoomsEnv, RoomsLaunch, RoomsSyncEnv
from rooms.models import RoomsAction, RoomsObservation

__all__ = ["RoomsAction", "RoomsEnv", "RoomsLaunch", "RoomsObservation", "RoomsSyncEnv"]
