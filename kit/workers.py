"""Workers of one server, and replicas of one service, that reach each other.

uvicorn's workers share the listening socket, and the kernel gives each new connection to
any of them, so the requests of one standard MCP session (a client's separate HTTP requests)
land on different workers. Each worker therefore also serves the app on a Unix socket of its
own in the server's run directory (`<PREFIX>RUN_DIR`, made by the `server` command), names its
MCP sessions with its pid (`<pid>.<id>`), and hands a request for another worker's session to
that worker over its socket. A worker that died takes only its own sessions: their requests get
404 "Session not found", as the MCP specification has it, and their clients initialize anew.

Replicas behind one address (a Swarm service's routing mesh, a load balancer without
affinity) do the same between them when `<PREFIX>PEERS` is the DNS name of all replicas
(`tasks.<service>` in Swarm): session ids then also name the replica (`<address>.<pid>.<id>`,
its address in hex), and a replica hands a request for another's session to that replica's
address, only if it is one the name resolves to.

Requests that come in over a worker's socket were checked by the worker that took them
(access, bounds); the socket's directory is the server user's alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
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
PEERS_SETTING = f"{PREFIX}PEERS"
FORWARDED = "forwarded-by-worker"  # the ASGI scope extension marking a request another worker handed over
HOP_HEADERS = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})
# Peers speak plain HTTP (over a worker's socket, or to a replica's address), but httpx gives each client a TLS
# context all the same, by default one it loads with its CA bundle: a tenth of a second (seconds on a busy machine)
# in which the worker's event loop serves nothing. This one, never used, costs nothing to make (and, holding no
# trust anchors, would accept no certificate).
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Workers:
    """This worker and its peers, found by their sockets in the run directory."""

    def __init__(self, run_dir: Path | None, peers: str | None = None) -> None:
        self.run_dir = run_dir
        self.pid = os.getpid()
        self.clients: dict[int, httpx.AsyncClient] = {}
        self.replicas = Replicas(peers) if peers else None

    @classmethod
    def from_env(cls) -> Workers:
        run_dir = os.environ.get(RUN_DIR_SETTING)
        return cls(Path(run_dir) if run_dir else None, os.environ.get(PEERS_SETTING) or None)

    async def tag(self, session_id: str) -> str:
        """`session_id` named after this worker (and replica): what its clients are given."""
        replica = await self.replicas.own() if self.replicas is not None else None
        return f"{replica}.{self.pid}.{session_id}" if replica else f"{self.pid}.{session_id}"

    @staticmethod
    def owner(tagged: str) -> tuple[str | None, int | None, str]:
        """The replica (hex address; None: no replica named) and the worker pid a tagged id names, and the
        transport's own id; `(None, None, tagged)` for an id that is no tag of ours."""
        parts = tagged.split(".")
        if len(parts) == 3 and parts[1].isdigit():
            return parts[0], int(parts[1]), parts[2]
        if len(parts) == 2 and parts[0].isdigit():
            return None, int(parts[0]), parts[1]
        return None, None, tagged

    async def is_this_replica(self, replica: str | None) -> bool:
        """Whether sessions of `replica` are this replica's (any, when the server has no peers)."""
        if replica is None or self.replicas is None:
            return True
        return replica == await self.replicas.own()

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
        """Serve `app` on this worker's socket while the context is open (entered once the socket answers)."""
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
                await answering(server, path)
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
            self.clients[pid] = socket_client(path)
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
        if not await relay(client, scope, body, send):
            self.forget(pid)
            return False
        return True

    async def forward_to_replica(self, replica: str, scope: Scope, body: bytes, send: Send) -> bool:
        """Hand the request to replica `replica` (hex address); False if it is none of the peers, or gone."""
        if self.replicas is None:
            return False
        server = scope.get("server")
        client = await self.replicas.client(replica, server[1] if server else 8000)
        return client is not None and await relay(client, scope, body, send)

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


def socket_client(path: Path) -> httpx.AsyncClient:
    """An HTTP client of the worker socket at `path`."""
    transport = httpx.AsyncHTTPTransport(uds=str(path), verify=PLAIN_HTTP)
    return httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=None)


PEER_START_S = 30.0  # the most a worker waits for its own socket to listen before it takes requests


async def answering(server: PeerServer, path: Path) -> None:
    """Until the worker's socket at `path` listens and has answered one request, the worker's own. httpx, httpcore
    and anyio finish their setup (imports) at their first request: done here, as the worker starts (it takes requests
    only after), it does not hold up the worker's first hand-over, its event loop blocked meanwhile. (On a busy
    machine that was long enough for a new session's GET stream, handed over, to reach its owner only after the
    session ended.)"""
    with anyio.move_on_after(PEER_START_S) as waited:
        await server.listening.wait()
    if waited.cancelled_caught:
        logging.getLogger("uvicorn.error").warning("The worker's socket %s does not listen yet", path)
        return
    async with socket_client(path) as client:
        try:
            await client.get("/health", timeout=30)  # any answer will do
        except httpx.HTTPError as error:
            logging.getLogger("uvicorn.error").warning("The worker's socket %s does not answer: %r", path, error)


async def relay(client: httpx.AsyncClient, scope: Scope, body: bytes, send: Send) -> bool:
    """Send the request to `client`'s server and stream its answer back; False if it could not be reached."""
    request = client.build_request(
        scope["method"],
        scope["path"],
        params=scope.get("query_string", b"").decode("latin-1") or None,
        headers=[(k, v) for k, v in scope["headers"] if k not in HOP_HEADERS],
        content=body,
    )
    try:
        response = await client.send(request, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
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


class Replicas:
    """The replicas a DNS name resolves to, and which of them is this one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.own_address: str | None = None
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def addresses(self) -> set[str]:
        """The replicas' addresses, each in hex (IPv4), as the name resolves now."""
        try:
            found = await anyio.getaddrinfo(self.name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError:
            return set()
        return {socket.inet_aton(str(entry[4][0])).hex() for entry in found}

    async def own(self) -> str | None:
        """This replica's address (hex): the one of the name's that is an address of this machine."""
        if self.own_address is None:
            for address in await self.addresses():
                with socket.socket() as probe, contextlib.suppress(OSError):
                    probe.bind((socket.inet_ntoa(bytes.fromhex(address)), 0))
                    self.own_address = address
        return self.own_address

    async def client(self, address: str, port: int) -> httpx.AsyncClient | None:
        """An HTTP client of replica `address`, if the name still resolves to it."""
        if address not in await self.addresses():
            return None
        if address not in self.clients:
            host = socket.inet_ntoa(bytes.fromhex(address))
            self.clients[address] = httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=None, verify=PLAIN_HTTP)
        return self.clients[address]


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

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


__all__ = ["PEERS_SETTING", "RUN_DIR_SETTING", "Workers", "forwarded"]
