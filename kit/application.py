"""The server for any OpenEnv environment of this package: OpenEnv's app and what it lacks.

`create_app(env, action, observation)` is OpenEnv's `create_fastapi_app` (or its
web interface, when `ENABLE_WEB_INTERFACE` is on) with the concurrency settings
of `settings.py`, plus: /docs and /redoc served without a CDN, `GET /capacity`,
the payload bounds of `limits.py`, the MCP tools the environment declares
(`tools.py`), and the access control of `access.py`. Nothing here names the environment: a copy
of this package for another environment uses it unchanged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from openenv.core.env_server.http_server import create_fastapi_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, ConcurrencyConfig, Observation

from .access import AccessControl
from .limits import ClientLimits
from .mcp import Tools, accepting_tool_actions
from .package import PACKAGE, package_file
from .settings import Settings

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def create_app(
    env: type[Environment[Any, Any, Any]],
    action_cls: type[Action],
    observation_cls: type[Observation],
    settings: Settings | None = None,
) -> FastAPI:
    """The app serving `env`: one instance per WebSocket session, configured by `settings`
    (by default, read from the environment)."""
    settings = settings or Settings.from_env()
    sessions = SessionCount()
    # MCP tools (tools.py), when the environment declares some.
    tools = Tools.of(env)
    if tools is not None:
        env, action_cls = tools.environment(env), accepting_tool_actions(action_cls)
    create: Callable[..., FastAPI] = create_fastapi_app
    if settings.enable_web_interface:
        # Imported only when asked for: it imports Gradio, which the `server` command leaves out otherwise.
        from openenv.core.env_server.web_interface import create_web_interface_app

        # OpenEnv's /web shows the README it finds at this path (in a container, also /app/env/README.md).
        os.environ.setdefault("ENV_README_PATH", str(package_file("README.md")))
        # It takes the environment's class too, though its signature names an instance.
        create = create_web_interface_app
    counted_env = sessions.counted(env)
    app = create(
        counted_env,
        action_cls,
        observation_cls,
        env_name=PACKAGE,
        concurrency_config=ConcurrencyConfig(
            max_concurrent_envs=settings.max_concurrent_envs,
            session_timeout=settings.session_timeout_s,
        ),
    )
    serve_docs_without_cdn(app)
    add_capacity_route(app, sessions, settings.max_concurrent_envs)
    if tools is not None:
        tools.serve_standard_mcp(app, counted_env, lambda: sessions.open < settings.max_concurrent_envs)
    app.add_middleware(ClientLimits, max_body_bytes=settings.max_payload_bytes)
    # Added last, so it runs first: a refused request reaches nothing else.
    app.add_middleware(AccessControl, token=settings.api_token, allowed_origins=settings.allowed_origins)
    return app


class SessionCount:
    """How many environments a server holds open: one per WebSocket session."""

    def __init__(self) -> None:
        self.open = 0
        self.lock = threading.Lock()  # the server creates and closes sessions in executor threads

    def counted(self, env: type[Environment[Any, Any, Any]]) -> type[Environment[Any, Any, Any]]:
        """`env` whose instances count themselves here from creation until their first `close()`.

        A stateless HTTP `/reset` or `/step` creates and closes its own instance within one
        event-loop step, so a request handled on the same event loop never sees it.
        """
        count = self

        class Counted(env):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.counted_open = True
                count.change(+1)

            def close(self) -> None:
                if getattr(self, "counted_open", False):
                    self.counted_open = False
                    count.change(-1)
                super().close()

        Counted.__name__, Counted.__qualname__, Counted.__doc__ = env.__name__, env.__qualname__, env.__doc__
        return Counted

    def change(self, by: int) -> None:
        with self.lock:
            self.open += by


def add_capacity_route(app: FastAPI, sessions: SessionCount, max_sessions: int) -> None:
    """`GET /capacity`: this worker's WebSocket sessions, its limit, its free slots and its pid."""

    @app.get("/capacity", tags=["Health"], summary="Sessions open and free in this worker process")
    async def capacity() -> dict[str, int]:
        active = sessions.open
        return {
            "active_sessions": active,
            "max_sessions": max_sessions,
            "free_slots": max(0, max_sessions - active),
            "pid": os.getpid(),
        }


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


__all__ = ["SessionCount", "create_app"]
