"""Ways to open a stepping session: an env's typed client, bare WebSocket frames, or HTTP `/step`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from websockets.sync.client import connect


@dataclass(frozen=True)
class EnvClasses:
    """An environment's client class (an openenv `EnvClient`) and its action class."""

    client: Any
    action: Callable[..., Any]


@dataclass(frozen=True)
class SyncSession:
    step: Callable[[], object]
    close: Callable[[], object]


@dataclass(frozen=True)
class AsyncSession:
    step: Callable[[], Awaitable[object]]
    close: Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class SyncSessions:
    """Opens sessions stepped from threads."""

    transport: str
    open: Callable[[], SyncSession]
    mode: ClassVar[str] = "sync"


@dataclass(frozen=True)
class AsyncSessions:
    """Opens sessions stepped on one event loop."""

    transport: str
    open: Callable[[], Awaitable[AsyncSession]]
    mode: ClassVar[str] = "async"


def env_client_sync(env: EnvClasses, url: str, message: str) -> SyncSessions:
    """The env's client, `.sync()`, connected and reset; each step sends `message`."""

    def open_session() -> SyncSession:
        action = env.action(message=message)
        client = env.client(base_url=url).sync()
        client.connect()
        client.reset()
        return SyncSession(step=lambda: client.step(action), close=client.close)

    return SyncSessions("ws", open_session)


def env_client_async(env: EnvClasses, url: str, message: str) -> AsyncSessions:
    """The env's async client, connected and reset; each step sends `message`."""

    async def open_session() -> AsyncSession:
        action = env.action(message=message)
        client = env.client(base_url=url)
        await client.connect()
        await client.reset()
        return AsyncSession(step=lambda: client.step(action), close=client.close)

    return AsyncSessions("ws", open_session)


def step_frame(message: str) -> str:
    """The WebSocket frame openenv's clients send for a step with `message`."""
    return json.dumps({"type": "step", "data": {"message": message}})


def websocket_sync(url: str, message: str) -> SyncSessions:
    """Bare WebSocket frames: send a step frame, read one reply. For the floor server."""
    frame = step_frame(message)

    def open_session() -> SyncSession:
        stack = ExitStack()
        websocket = stack.enter_context(connect(url.replace("http", "ws", 1), max_size=None))

        def step() -> None:
            websocket.send(frame)
            websocket.recv()

        return SyncSession(step=step, close=stack.close)

    return SyncSessions("ws", open_session)


def http_sync(url: str, message: str) -> SyncSessions:
    """POST `/step` with one keep-alive `httpx.Client` per thread."""
    body = {"action": {"message": message}}

    def open_session() -> SyncSession:
        session = httpx.Client(timeout=60)

        def step() -> None:
            session.post(f"{url}/step", json=body).raise_for_status()

        return SyncSession(step=step, close=session.close)

    return SyncSessions("http", open_session)


def http_async(url: str, message: str) -> AsyncSessions:
    """POST `/step` with one keep-alive `httpx.AsyncClient` per session."""
    body = {"action": {"message": message}}

    async def open_session() -> AsyncSession:
        client = httpx.AsyncClient(timeout=60)

        async def step() -> None:
            (await client.post(f"{url}/step", json=body)).raise_for_status()

        return AsyncSession(step=step, close=client.aclose)

    return AsyncSessions("http", open_session)


def sessions_for(transport: str, mode: str, env: EnvClasses, url: str, message: str) -> SyncSessions | AsyncSessions:
    """The sessions `--transport` and `--mode` ask for."""
    if transport == "ws":
        return env_client_sync(env, url, message) if mode == "sync" else env_client_async(env, url, message)
    return http_sync(url, message) if mode == "sync" else http_async(url, message)
