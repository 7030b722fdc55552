"""Rooms: the OpenEnv echo environment.

`RoomsAction(message)` goes in; a `RoomsObservation` (the echoed message, its
length, reward = length × 0.1) comes out. `RoomsEnv` is the typed client.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import RoomsEnv
    from .kit.client import AccessDenied, Launch, SessionLost, SyncClient
    from .models import RoomsAction, RoomsObservation

# Each name is imported from its module on first use (PEP 562): the `server` command decides
# what OpenEnv may import before anything imports OpenEnv, and a server never loads the client.
EXPORTS = {
    "RoomsAction": ".models",
    "RoomsObservation": ".models",
    "RoomsEnv": ".client",
    "SyncClient": ".kit.client",
    "Launch": ".kit.client",
    "SessionLost": ".kit.client",
    "AccessDenied": ".kit.client",
}
__all__ = ["AccessDenied", "Launch", "RoomsAction", "RoomsEnv", "RoomsObservation", "SessionLost", "SyncClient"]


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
