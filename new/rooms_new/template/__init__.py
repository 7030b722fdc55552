"""__ENV_TITLE_NAME__: an OpenEnv environment.

`__ENV_CLASS_NAME__Action` goes in, a `__ENV_CLASS_NAME__Observation` comes out (models.py);
`__ENV_CLASS_NAME__Env` is the typed client.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import __ENV_CLASS_NAME__Env
    from .kit.client import Launch, SyncClient
    from .models import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation

# Each name is imported from its module on first use (PEP 562): the `server` command decides
# what OpenEnv may import before anything imports OpenEnv, and a server never loads the client.
EXPORTS = {
    "__ENV_CLASS_NAME__Action": ".models",
    "__ENV_CLASS_NAME__Observation": ".models",
    "__ENV_CLASS_NAME__Env": ".client",
    "SyncClient": ".kit.client",
    "Launch": ".kit.client",
}
__all__ = ["Launch", "SyncClient", "__ENV_CLASS_NAME__Action", "__ENV_CLASS_NAME__Env", "__ENV_CLASS_NAME__Observation"]


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
