"""The Rooms server: `RoomsEnvironment` over HTTP and WebSocket via OpenEnv's `create_app`.

Run it with `uv run server`, `python -m rooms.server.app`, or from the project
directory with `uvicorn server.app:app`. Settings come from the environment:

- `MAX_CONCURRENT_ENVS`: WebSocket sessions served at once, per worker (default 512).
- `SESSION_TIMEOUT_S`: reap sessions idle this long (default: never).
- `ENABLE_WEB_INTERFACE`: `true` serves the Gradio playground at `/web`.
- `ROOMS_WS_PING_INTERVAL_S`, `ROOMS_WS_PING_TIMEOUT_S`: the server pings every WebSocket this
  often and closes one whose pong is this late, freeing its session (defaults 20 and 20, uvicorn's).
- `ROOMS_MAX_MESSAGE_LENGTH`: longest message, in characters; request bodies and
  WebSocket frames are bounded accordingly (see `server/limits.py`).
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import fastapi_offline
import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.types import ConcurrencyConfig

from rooms.models import RoomsAction, RoomsObservation
from rooms.server.limits import MAX_PAYLOAD_BYTES, ClientLimits
from rooms.server.rooms_environment import RoomsEnvironment

# TRL's AsyncGRPO keeps 128 rollouts in flight: 512 runs it with 4x headroom. An idle session costs
# 20-40 KB of server memory (README, Performance > Capacity): 512 of them, about 20 MB.
DEFAULT_MAX_CONCURRENT_ENVS = 512


def _positive_number_from_env(name: str, default: Optional[str], convert: type) -> Optional[float]:
    raw = os.environ.get(name, default)
    if raw is None or raw == "":
        return None
    try:
        value = convert(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SystemExit(f"{name} must be a positive {convert.__name__}, got {raw!r}")
    return value


def concurrency_config_from_env() -> ConcurrencyConfig:
    """Build the session limits from `MAX_CONCURRENT_ENVS` and `SESSION_TIMEOUT_S`."""
    return ConcurrencyConfig(
        max_concurrent_envs=_positive_number_from_env(
            "MAX_CONCURRENT_ENVS", str(DEFAULT_MAX_CONCURRENT_ENVS), int
        ),
        session_timeout=_positive_number_from_env("SESSION_TIMEOUT_S", None, float),
    )


DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def serve_docs_without_cdn(app: FastAPI) -> None:
    """Serve /docs and /redoc with their scripts from this server, so they work offline."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ("/docs", "/redoc")]
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
            redoc_favicon_url=f"{root}/docs-assets/favicon.png",
            with_google_fonts=False,
        )


# The /web page reads the README from this path when it is given a class.
os.environ.setdefault("ENV_README_PATH", str(resources.files("rooms").joinpath("README.md")))

def add_capacity_route(app: FastAPI, max_sessions: int) -> None:
    """`GET /capacity`: this worker's WebSocket sessions, its limit, its free slots and its pid."""

    @app.get("/capacity", tags=["Health"], summary="Sessions open and free in this worker process")
    async def capacity() -> dict[str, int]:
        active = RoomsEnvironment.open_instances()
        return {"active_sessions": active, "max_sessions": max_sessions,
                "free_slots": max(0, max_sessions - active), "pid": os.getpid()}


app = create_app(
    RoomsEnvironment,
    RoomsAction,
    RoomsObservation,
    env_name="rooms",
    concurrency_config=concurrency_config_from_env(),
)
serve_docs_without_cdn(app)
add_capacity_route(app, concurrency_config_from_env().max_concurrent_envs)
app.add_middleware(ClientLimits)

SHUTDOWN_GRACE_S = 3  # open WebSockets are closed (1012) and the process exits within this
WORKER_HEALTHCHECK_TIMEOUT_S = 60


WS_PING_DEFAULT_S = "20"  # uvicorn's own default for both


def ws_keepalive_from_env() -> dict[str, float | None]:
    """uvicorn's WebSocket ping settings from `ROOMS_WS_PING_INTERVAL_S` and `ROOMS_WS_PING_TIMEOUT_S`."""
    return {
        "ws_ping_interval": _positive_number_from_env("ROOMS_WS_PING_INTERVAL_S", WS_PING_DEFAULT_S, float),
        "ws_ping_timeout": _positive_number_from_env("ROOMS_WS_PING_TIMEOUT_S", WS_PING_DEFAULT_S, float),
    }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options of the `server` script."""
    parser = argparse.ArgumentParser(prog="server", description="Serve the Rooms environment.")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="bind address (env HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="port (env PORT, default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    return parser.parse_args(argv)


def capacity_message(max_sessions: int, workers: int) -> str:
    """What the `server` script says at start-up about the sessions it accepts."""
    if workers > 1:
        return (f"Rooms accepts up to {max_sessions} concurrent WebSocket sessions per worker, "
                f"{max_sessions * workers} in all over {workers} workers (MAX_CONCURRENT_ENVS={max_sessions})")
    return f"Rooms accepts up to {max_sessions} concurrent WebSocket sessions (MAX_CONCURRENT_ENVS={max_sessions})"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the `server` console script."""
    args = parse_args(argv)
    print(capacity_message(concurrency_config_from_env().max_concurrent_envs, args.workers), flush=True)
    target = "rooms.server.app:app" if args.reload or args.workers > 1 else app
    uvicorn.run(
        target,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        # websockets' Sans-I/O protocol: less CPU per frame than uvicorn's default (legacy) implementation.
        ws="websockets-sansio",
        ws_max_size=MAX_PAYLOAD_BYTES,
        # Step frames are a few hundred bytes: compressing each costs more CPU than it saves.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        # With --workers, each worker first imports OpenEnv (and with it Gradio): several seconds on a
        # small or busy machine, longer than uvicorn's default 5 s before it kills a silent worker.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
        **ws_keepalive_from_env(),
    )


if __name__ == "__main__":
    main()
