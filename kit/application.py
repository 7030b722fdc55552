"""The server for any OpenEnv environment of this package: OpenEnv's app and what it lacks.

`create_app(env, action, observation)` is OpenEnv's server (`HTTPEnvServer`'s routes) with
the settings of `settings.py`, plus: one session model for every door (`sessions.py`), the
bounds of `limits.py`, the MCP tools the environment declares (`tools.py`, `mcp.py`,
`standard_mcp.py`), the access control of `access.py`, `GET /capacity`, `GET /metrics` (`metrics.py`), /docs and /redoc
served without a CDN, and the `/web` playground when `ENABLE_WEB_INTERFACE` is on
(`playground.py`). Nothing here names the environment: a copy of this package for another
environment uses it unchanged.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from openenv.core.env_server.http_server import HTTPEnvServer
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, ConcurrencyConfig, Observation

from .access import AccessControl
from .limits import ClientLimits, JsonBounds
from .mcp import Tools, accepting_tool_actions
from .metrics import Metering, Metrics, add_metrics_route, metered
from .package import NAME, PACKAGE, package_version
from .sessions import MCP_PATH, WS_PATH, SessionDoors, Sessions
from .settings import Settings
from .standard_mcp import StandardMcp, StandardMcpDoor
from .workers import Workers

WS_PATHS = (WS_PATH, MCP_PATH)  # OpenEnv's WebSockets: its sessions, and its MCP JSON-RPC
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def create_app(
    env: type[Environment[Any, Any, Any]],
    action_cls: type[Action],
    observation_cls: type[Observation],
    settings: Settings | None = None,
) -> FastAPI:
    """The app serving `env`: one instance per session, whatever door opens it, configured by
    `settings` (by default, read from the environment)."""
    settings = settings or Settings.from_env()
    sessions = Sessions(settings.max_concurrent_envs, settings.session_timeout_s)
    workers = Workers.from_env()
    metrics = Metrics(settings.max_concurrent_envs, workers) if settings.metrics else None
    if metrics is not None:  # metrics.py: GET /metrics, and what the doors and the environment count
        sessions.metrics, env = metrics, metered(env, metrics)
    tools = Tools.of(env)  # MCP tools (tools.py), when the environment declares some
    if tools is not None:
        tools.metrics = metrics
        env, action_cls = tools.environment(env), accepting_tool_actions(action_cls)
    app = FastAPI(title=f"{NAME} environment", version=package_version(), docs_url=None, redoc_url=None)
    server = HTTPEnvServer(
        env,
        action_cls,
        observation_cls,
        env_name=PACKAGE,
        # Sessions are admitted and ended by idleness in sessions.py, for every door: OpenEnv's limit is the
        # same one, and its own reaper (which would end a WebSocket's environment under a live socket) is off.
        concurrency_config=ConcurrencyConfig(max_concurrent_envs=settings.max_concurrent_envs, session_timeout=None),
    )
    server.register_routes(app)
    serve_docs_without_cdn(app)
    add_capacity_route(app, sessions, workers)
    if metrics is not None:
        add_metrics_route(app, metrics)
    if settings.enable_web_interface:
        from .playground import add_playground

        add_playground(app, env)
    app.add_middleware(SessionDoors, sessions=sessions, server=server)
    standard = None
    if tools is not None:
        standard = StandardMcp(tools, env, settings.max_payload_bytes)
        app.add_middleware(StandardMcpDoor, standard=standard, sessions=sessions, workers=workers)
    if metrics is not None:
        app.add_middleware(Metering, metrics=metrics)
    run_beside(app, sessions, workers, standard, metrics)
    bounds = JsonBounds(settings.max_json_depth, settings.max_json_items)
    app.add_middleware(
        ClientLimits, max_body_bytes=settings.max_payload_bytes, bounds=bounds, ws_paths=WS_PATHS, metrics=metrics
    )
    # Added last, so it runs first: a refused request reaches nothing else.
    app.add_middleware(AccessControl, token=settings.token(), allowed_origins=settings.allowed_origins, metrics=metrics)
    return app


def run_beside(
    app: FastAPI, sessions: Sessions, workers: Workers, standard: StandardMcp | None, metrics: Metrics | None = None
) -> None:
    """While the app runs: the idle sessions' reaper, this worker's socket for its peers, and the
    standard MCP transport (started by its first request); at its end, the worker leaves the metrics."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(outer: Any) -> AsyncIterator[Any]:
        async with anyio.create_task_group() as group:
            group.start_soon(sessions.reap_forever)
            if metrics is not None and metrics.saved is not None:
                group.start_soon(metrics.save_forever)
            async with AsyncExitStack() as stack:
                if standard is not None:
                    await stack.enter_async_context(standard.available())
                await stack.enter_async_context(workers.serving(app))
                async with previous(outer) as state:
                    yield state
            group.cancel_scope.cancel()
        if metrics is not None:
            metrics.stop()

    app.router.lifespan_context = lifespan


def add_capacity_route(app: FastAPI, sessions: Sessions, workers: Workers) -> None:
    """`GET /capacity`: the server's sessions by door, its limit and its free slots, summed over its
    workers (each listed under `workers`); `?worker=this` for this worker's alone."""

    def this_worker() -> dict[str, Any]:
        active = len(sessions.open)
        return {
            "active_sessions": active,
            "max_sessions": sessions.limit,
            "free_slots": max(0, sessions.limit - active),
            "by_door": sessions.counts(),
            "pid": os.getpid(),
        }

    @app.get("/capacity", tags=["Health"], summary="Sessions open and free, by door, in all workers")
    async def capacity(worker: str | None = None) -> dict[str, Any]:
        own = this_worker()
        if worker == "this":
            return own
        every = [own, *(answer for _, answer in await workers.ask_each("/capacity?worker=this"))]
        by_door = {door: sum(w["by_door"].get(door, 0) for w in every) for door in own["by_door"]}
        return {
            "active_sessions": sum(w["active_sessions"] for w in every),
            "max_sessions": sum(w["max_sessions"] for w in every),
            "free_slots": sum(w["free_slots"] for w in every),
            "by_door": by_door,
            "pid": own["pid"],
            "workers": sorted(every, key=lambda w: int(w["pid"])),
        }


def serve_docs_without_cdn(app: FastAPI) -> None:
    """Serve /docs and /redoc with their scripts from this server, so they work offline."""
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


__all__ = ["create_app"]
