"""The Rooms server: `RoomsEnvironment` over HTTP and WebSocket via OpenEnv's `create_app`.

Run it with `uv run server` (see `server/__main__.py`), or from the project
directory with `uvicorn server.app:app`. Its settings are environment variables,
read by `server/settings.py` when the app is built.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from openenv.core.env_server.http_server import create_fastapi_app
from openenv.core.env_server.types import ConcurrencyConfig
from pydantic import Field, create_model

from rooms.models import RoomsAction, RoomsObservation
from rooms.server.limits import ClientLimits
from rooms.server.rooms_environment import RoomsEnvironment
from rooms.server.settings import Settings


def bounded_action(max_message_length: int) -> type[RoomsAction]:
    """`RoomsAction` whose `message` the server accepts up to `max_message_length` characters."""
    return create_model(
        "RoomsAction",
        __base__=RoomsAction,
        __doc__=RoomsAction.__doc__,
        message=(str, Field(..., max_length=max_message_length, description="The message to echo back")),
    )


def create_rooms_app(settings: Settings) -> FastAPI:
    """The Rooms app for `settings`: OpenEnv's app, with the web interface if enabled."""
    create_app: Callable[..., FastAPI] = create_fastapi_app
    if settings.enable_web_interface:
        # Imported only when asked for: it imports Gradio, which the `server` command leaves out otherwise.
        from openenv.core.env_server.web_interface import create_web_interface_app

        # It takes the environment's class too, though its signature names an instance.
        create_app = create_web_interface_app
    app = create_app(
        RoomsEnvironment,
        bounded_action(settings.max_message_length),
        RoomsObservation,
        env_name="rooms",
        concurrency_config=ConcurrencyConfig(
            max_concurrent_envs=settings.max_concurrent_envs,
            session_timeout=settings.session_timeout_s,
        ),
    )
    serve_docs_without_cdn(app)
    add_capacity_route(app, settings.max_concurrent_envs)
    app.add_middleware(ClientLimits, max_body_bytes=settings.max_payload_bytes)
    return app


DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def serve_docs_without_cdn(app: FastAPI) -> None:
    """Serve /docs and /redoc with their scripts from this server, so they work offline."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ("/docs", "/redoc")]
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    pages: dict[str, tuple[Callable[..., HTMLResponse], str, dict[str, Any]]] = {
        "/docs": (
            get_swagger_ui_html,
            "Swagger UI",
            {
                "swagger_js_url": "swagger-ui-bundle.js",
                "swagger_css_url": "swagger-ui.css",
                "swagger_favicon_url": "favicon.png",
            },
        ),
        "/redoc": (
            get_redoc_html,
            "ReDoc",
            {"redoc_js_url": "redoc.standalone.js", "redoc_favicon_url": "favicon.png", "with_google_fonts": False},
        ),
    }
    for path, (render, title, assets) in pages.items():
        app.add_api_route(path, docs_page(app, render, title, assets), include_in_schema=False)


def docs_page(
    app: FastAPI, render: Callable[..., HTMLResponse], title: str, assets: dict[str, Any]
) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """An endpoint rendering a docs page whose URLs follow the request's root path (behind a proxy's prefix)."""

    async def endpoint(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        urls = {name: f"{root}/docs-assets/{value}" for name, value in assets.items() if name.endswith("_url")}
        return render(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - {title}", **{**assets, **urls})

    return endpoint


def add_capacity_route(app: FastAPI, max_sessions: int) -> None:
    """`GET /capacity`: this worker's WebSocket sessions, its limit, its free slots and its pid."""

    @app.get("/capacity", tags=["Health"], summary="Sessions open and free in this worker process")
    async def capacity() -> dict[str, int]:
        active = RoomsEnvironment.open_instances()
        return {
            "active_sessions": active,
            "max_sessions": max_sessions,
            "free_slots": max(0, max_sessions - active),
            "pid": os.getpid(),
        }


app = create_rooms_app(Settings.from_env())
