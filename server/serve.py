"""The app as the `server` command serves it: without Gradio when the web interface is off.

OpenEnv imports its Gradio web interface only if Gradio can be imported
(`openenv.core.env_server` catches `ModuleNotFoundError`). A `None` in
`sys.modules` makes an import raise exactly that (the import system's documented
behaviour), so a server whose web interface is off skips Gradio and what it pulls
in: a third of the start-up time, less than half the memory. Only the `server`
command (its process and uvicorn's workers) imports this module; a program that
imports the package or `server.app` itself keeps every module it can import.
"""

import sys

from .settings import Settings

if not Settings.from_env().enable_web_interface:
    sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]

from .app import app  # after Gradio is ruled out

__all__ = ["app"]
