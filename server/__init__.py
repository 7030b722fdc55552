"""The Rooms server: the environment and the FastAPI app that serves it."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rooms_environment import RoomsEnvironment

__all__ = ["RoomsEnvironment"]


def __getattr__(name: str) -> Any:
    # Imported on first use: importing the package loads neither OpenEnv's server nor the environment.
    if name == "RoomsEnvironment":
        return import_module(".rooms_environment", __name__).RoomsEnvironment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
