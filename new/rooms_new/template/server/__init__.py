"""The __ENV_TITLE_NAME__ server: the environment and the FastAPI app that serves it."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .__ENV_NAME___environment import __ENV_CLASS_NAME__Environment

__all__ = ["__ENV_CLASS_NAME__Environment"]


def __getattr__(name: str) -> Any:
    # Imported on first use: importing the package loads neither OpenEnv's server nor the environment.
    if name == "__ENV_CLASS_NAME__Environment":
        return import_module(".__ENV_NAME___environment", __name__).__ENV_CLASS_NAME__Environment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
