"""The `server` command: serve this package's environment with uvicorn (`uv run server`).

uvicorn imports `app` from this module (in each worker, with `--workers`). OpenEnv imports
its Gradio web interface whenever Gradio can be imported (`openenv.core.env_server` catches
`ModuleNotFoundError`), though the kit serves a playground of its own (`playground.py`); a
`None` in `sys.modules` makes that import raise exactly that (the import system's documented
behaviour), so the server skips Gradio and what it pulls in: a third of the start-up time,
less than half the memory. A program that imports the package or `server.app` itself keeps
every module it can import.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from importlib import import_module
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .package import NAME, PACKAGE
from .settings import PREFIX, Settings, SettingsError
from .workers import RUN_DIR_SETTING

SHUTDOWN_GRACE_S = 3  # open WebSockets are closed (1012) and the process exits within this
# With --workers, each worker first imports OpenEnv (and Gradio, with the web interface on): several
# seconds on a small or busy machine, longer than uvicorn's default 5 s before it kills a silent worker.
WORKER_HEALTHCHECK_TIMEOUT_S = 60
ENVIRONMENT_APP = f"{PACKAGE}.server.app"  # the environment's own app module (OpenEnv's template layout)


@cache
def settings() -> Settings:
    """This process's settings (each worker reads them once)."""
    return Settings.from_env()


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with a bound on the time and the bytes a request head may take.

    A connection that has not sent a whole request head within `<PREFIX>HEADER_TIMEOUT_S` (of
    its opening, or of its previous response) is closed; a head past `<PREFIX>MAX_HEADER_BYTES`
    is answered 431 and closed without reading the rest. So idle and slow clients cannot hold
    the server's connections, and no header is read in full before the access check.
    """

    head_deadline: asyncio.TimerHandle | None = None
    head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_deadline is not None:  # still within a head: the data was all head
            self.head_bytes += len(data)
            if self.head_bytes > settings().max_header_bytes:
                self.refuse_head(b"431 Request Header Fields Too Large", f"{PREFIX}MAX_HEADER_BYTES")

    def on_headers_complete(self) -> None:
        self.stop_waiting_for_head()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_waiting_for_head()
        super().connection_lost(exc)

    def await_head(self) -> None:
        self.stop_waiting_for_head()
        self.head_bytes = 0
        timeout = settings().header_timeout_s
        self.head_deadline = self.loop.call_later(
            timeout, self.refuse_head, b"408 Request Timeout", f"{PREFIX}HEADER_TIMEOUT_S"
        )

    def stop_waiting_for_head(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def refuse_head(self, status: bytes, setting: str) -> None:
        self.stop_waiting_for_head()
        if self.transport.is_closing():
            return
        body = f"The request head was past the server's bound ({setting})".encode()
        head = b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: "
        self.transport.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def parse_args(settings: Settings, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the `server` command."""
    parser = argparse.ArgumentParser(prog="server", description=f"Serve the {NAME} environment.")
    parser.add_argument("--host", default=settings.host, help=f"bind address (env HOST, default {settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"port (env PORT, default {settings.port})")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    return parser.parse_args(argv)


def capacity_message(max_sessions: int, workers: int) -> str:
    """What the `server` command says at start-up about the sessions it accepts."""
    if workers > 1:
        return (
            f"{NAME} accepts up to {max_sessions} concurrent WebSocket sessions per worker, "
            f"{max_sessions * workers} in all over {workers} workers (MAX_CONCURRENT_ENVS={max_sessions})"
        )
    return f"{NAME} accepts up to {max_sessions} concurrent WebSocket sessions (MAX_CONCURRENT_ENVS={max_sessions})"


def access_message(settings: Settings) -> str:
    """What the `server` command says at start-up about who may use it (never the token itself)."""
    if settings.api_token is None:
        return (
            f"Access is open: anyone who reaches this port may open sessions "
            f"(set {PREFIX}API_TOKEN or {PREFIX}API_TOKEN_FILE to require a token)"
        )
    return "Access is token-protected: every route but /health wants 'Authorization: Bearer <token>'"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `server` command."""
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise SystemExit(f"server: {error}") from None
    args = parse_args(settings, argv)
    print(capacity_message(settings.max_concurrent_envs, args.workers), flush=True)
    print(access_message(settings), flush=True)
    with tempfile.TemporaryDirectory(prefix=f"{PACKAGE}-server-") as run_dir:
        os.environ[RUN_DIR_SETTING] = run_dir  # the workers' sockets (workers.py), inherited by each worker
        serve(settings, args)


def serve(settings: Settings, args: argparse.Namespace) -> None:
    """Run uvicorn as the `server` command configures it."""
    import uvicorn

    uvicorn.run(
        f"{__name__}:app",
        http=BoundedHttp,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        # websockets' Sans-I/O protocol: less CPU per frame than uvicorn's default (legacy) implementation.
        ws="websockets-sansio",
        ws_max_size=settings.max_payload_bytes,
        # Step frames are a few hundred bytes: compressing each costs more CPU than it saves.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
    )


def __getattr__(name: str) -> Any:
    """`app`: the environment's app, imported at first use, without Gradio."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]
    return import_module(ENVIRONMENT_APP).app


if __name__ == "__main__":
    main()
