"""Workers of one server that reach each other: `server --workers N`.

uvicorn's workers share the listening socket, and the kernel gives each new connection to
any of them, so the requests of one standard MCP session (a client's separate HTTP requests)
land on different workers. Each worker therefore also serves the app on a Unix socket of its
own in the server's run directory (`<PREFIX>RUN_DIR`, made by the `server` command), names its
MCP sessions with its pid (`<pid>.<id>`), and hands a request for another worker's session to
that worker over its socket. A worker that died takes only its own sessions: their requests get
404 "Session not found", as the MCP specification has it, and their clients initialize anew.

Requests that come in over a worker's socket were checked by the worker that took them
(access, bounds); the socket's directory is the server user's alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import PREFIX

RUN_DIR_SETTING = f"{PREFIX}RUN_DIR"
FORWARDED = "forwarded-by-worker"  # the ASGI scope extension marking a request another worker handed over
HOP_HEADERS = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


class Workers:
    """This worker and its peers, found by their sockets in the run directory."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.pid = os.getpid()
        self.clients: dict[int, httpx.AsyncClient] = {}

    @classmethod
    def from_env(cls) -> Workers:
        run_dir = os.environ.get(RUN_DIR_SETTING)
        return cls(Path(run_dir) if run_dir else None)

    def socket(self, pid: int) -> Path | None:
        return self.run_dir / f"worker-{pid}.sock" if self.run_dir is not None else None

    def peers(self) -> list[int]:
        """The pids of the other workers whose sockets are there."""
        if self.run_dir is None:
            return []
        found = (path.stem.removeprefix("worker-") for path in self.run_dir.glob("worker-*.sock"))
        return sorted(int(pid) for pid in found if pid.isdigit() and int(pid) != self.pid)

    @asynccontextmanager
    async def serving(self, app: ASGIApp) -> AsyncIterator[None]:
        """Serve `app` on this worker's socket while the context is open."""
        path = self.socket(self.pid)
        if path is None:
            yield
            return
        # log_config=None: the worker's logging stays as its own server configured it.
        config = uvicorn.Config(TrustedPeer(app), uds=str(path), lifespan="off", log_config=None, access_log=False)
        server = PeerServer(config)
        logging.getLogger("uvicorn.error").addFilter(QuietPeerStart())
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            try:
                yield
            finally:
                server.should_exit = True
                for client in self.clients.values():
                    await client.aclose()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def client(self, pid: int) -> httpx.AsyncClient | None:
        """An HTTP client of worker `pid`'s socket, or None if there is no such worker."""
        path = self.socket(pid)
        if path is None or not path.exists():
            return None
        if pid not in self.clients:
            transport = httpx.AsyncHTTPTransport(uds=str(path))
            self.clients[pid] = httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=None)
        return self.clients[pid]

    def forget(self, pid: int) -> None:
        """Worker `pid` is gone: drop its socket file and client."""
        self.clients.pop(pid, None)
        path = self.socket(pid)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def forward(self, pid: int, scope: Scope, body: bytes, send: Send) -> bool:
        """Hand the request (its `body` read already) to worker `pid` and stream its answer back;
        False if that worker is gone (nothing was sent)."""
        client = self.client(pid)
        if client is None:
            return False
        request = client.build_request(
            scope["method"],
            scope["path"],
            params=scope.get("query_string", b"").decode("latin-1") or None,
            headers=[(k, v) for k, v in scope["headers"] if k not in HOP_HEADERS],
            content=body,
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.RemoteProtocolError):
            self.forget(pid)
            return False
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_HEADERS]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        return True

    async def ask_each(self, path: str) -> list[tuple[int, Any]]:
        """GET `path` of every peer; their JSON answers by pid (a peer that does not answer is left out)."""
        answers: list[tuple[int, Any]] = []
        for pid in self.peers():
            client = self.client(pid)
            if client is None:
                continue
            try:
                answers.append((pid, (await client.get(path, timeout=5)).json()))
            except (httpx.HTTPError, ValueError):
                self.forget(pid)
        return answers


class TrustedPeer:
    """The app as a worker's socket serves it: requests marked as handed over by another worker."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "extensions": {**scope.get("extensions", {}), FORWARDED: {}}}
        await self.app(scope, receive, send)


def forwarded(scope: Scope) -> bool:
    """Whether another worker handed this request over (it checked it already)."""
    return FORWARDED in (scope.get("extensions") or {})


class QuietPeerStart(logging.Filter):
    """Leaves out of the log what the worker's socket server says as it starts (the worker said it first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Started server process", "Uvicorn running on unix socket"))


class PeerServer(uvicorn.Server):
    """A uvicorn server run inside a worker, on its socket: the worker's own server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


__all__ = ["RUN_DIR_SETTING", "Workers", "forwarded"]
