"""The `/web` playground: the environment's README beside a form that plays its actions.

Each visitor's page opens a `/ws` session of its own, as any client does, so it is counted,
bounded and ended by idleness like every other session (`sessions.py`), and a visitor sees
only their own episode and log. OpenEnv's Gradio web interface is not used: it plays every
visitor's actions on one shared environment and broadcasts each visitor's log to all of them.
The page needs no script from elsewhere (it works offline), and shows every value as text.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from markdown_it import MarkdownIt
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata

PAGE = "playground.html"


def add_playground(app: FastAPI, env: Callable[[], Environment[Any, Any, Any]]) -> None:
    """Serve the playground of `env` at `/web/`."""

    @cache
    def page() -> str:
        return playground_page(metadata_of(env))

    @app.get("/web", include_in_schema=False)
    async def web() -> RedirectResponse:
        return RedirectResponse("web/")

    @app.get("/web/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page())


def metadata_of(env: Callable[[], Environment[Any, Any, Any]]) -> EnvironmentMetadata:
    instance = env()
    try:
        return instance.get_metadata()
    finally:
        instance.close()


def playground_page(metadata: EnvironmentMetadata) -> str:
    """The page, with the environment's name, description and README (Markdown, its HTML not rendered)."""
    template = resources.files(__package__ or "").joinpath(PAGE).read_text(encoding="utf-8")
    values = {
        "title": html.escape(f"{metadata.name} playground"),
        "name": html.escape(metadata.name),
        "description": html.escape(metadata.description or ""),
        "readme": MarkdownIt("commonmark", {"html": False}).render(without_front_matter(metadata.readme_content or "")),
    }
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def without_front_matter(readme: str) -> str:
    """A README without its YAML front matter (a Space's card settings)."""
    if readme.startswith("---\n"):
        end = readme.find("\n---\n", 4)
        if end != -1:
            return readme[end + len("\n---\n") :]
    return readme


__all__ = ["add_playground"]
