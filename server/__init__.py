"""The Rooms server: the environment and the FastAPI app that serves it."""

from rooms.server.rooms_environment import RoomsEnvironment

__all__ = ["RoomsEnvironment"]
