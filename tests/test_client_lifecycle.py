"""Lifecycle parity: the same scripts against RoomsEnv and against OpenEnv's own client.

Each script reports what a user can observe: the sessions still held on the server after
`close()`, the servers a provider started and stopped, and the errors raised. Both clients
must report the same.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import connect

from rooms import RoomsAction, RoomsEnv
from tests.conftest import InProcessServer, SharedServers
from tests.openenv_reference import LocalServerProvider, ReferenceEnv

LIMIT = 3
CLIENTS: dict[str, type[Any]] = {"rooms": RoomsEnv, "openenv": ReferenceEnv}  # driven alike, sync or awaited
IMAGE = "rooms-env:latest"  # a label only: LocalServerProvider runs a local process


def sessions_held(ws_url: str, limit: int = LIMIT, settle_s: float = 3.0) -> int:
    """Sessions the server holds for others: `limit` minus the sessions it still accepts."""
    deadline = time.monotonic() + settle_s
    while True:
        accepted = 0
        with ExitStack() as stack:
            for _ in range(limit):
                ws = stack.enter_context(connect(ws_url, open_timeout=10))
                ws.send(json.dumps({"type": "reset", "data": {}}))
                if json.loads(ws.recv(timeout=10))["type"] == "error":
                    break
                accepted += 1
        if accepted == limit or time.monotonic() > deadline:
            return limit - accepted
        time.sleep(0.1)


@pytest.fixture
def limited_server(shared_server: SharedServers) -> InProcessServer:
    return shared_server(env={"MAX_CONCURRENT_ENVS": str(LIMIT)})


def sync_parent_and_child(client: type[Any], url: str) -> None:
    parent = client(base_url=url).sync()
    parent.connect()
    child = parent.new_session()
    child.reset()
    parent.close()


def async_parent_and_child(client: type[Any], url: str) -> None:
    async def script() -> None:
        parent = client(base_url=url)
        await parent.connect()
        child = await parent.new_session()
        await child.reset()
        await parent.close()

    asyncio.run(script())


def direct_sync(client: type[Any], url: str) -> None:
    env = client(base_url=url)
    env.reset()
    env.step(RoomsAction(message="x"))
    env.close()


def context_manager(client: type[Any], url: str) -> None:
    with client(base_url=url) as env:
        env.reset()


def sync_view_closed_through_with(client: type[Any], url: str) -> None:
    with client(base_url=url).sync() as env:
        env.reset()
        env.step(RoomsAction(message="x"))


def async_with(client: type[Any], url: str) -> None:
    async def script() -> None:
        async with client(base_url=url) as env:
            await env.reset()

    asyncio.run(script())


SESSION_SCRIPTS: dict[str, Callable[[type[Any], str], None]] = {
    f.__name__: f
    for f in (
        sync_parent_and_child,
        async_parent_and_child,
        direct_sync,
        context_manager,
        sync_view_closed_through_with,
        async_with,
    )
}


@pytest.mark.parametrize("script", SESSION_SCRIPTS)
def test_close_frees_every_session_it_opened(limited_server: InProcessServer, script: str) -> None:
    held: dict[str, int] = {}
    for name, client in CLIENTS.items():
        SESSION_SCRIPTS[script](client, limited_server.url)
        held[name] = sessions_held(limited_server.ws_url)
    assert held == {"rooms": 0, "openenv": 0}


def test_reproduction_1_a_child_session_is_closed_with_its_parent(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "2"})
    parent = RoomsEnv(base_url=server.url).sync()
    child = parent.new_session()
    parent.close()
    with RoomsEnv(base_url=server.url).sync() as next_client, next_client.new_session() as its_child:
        assert its_child.step(RoomsAction(message="room")).reward == 0.4
    assert child.sessions == []


# --- handles and providers ------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:  # the error is the outcome
        return (type(error).__name__, str(error))


def handle_sync_then_close(client: type[Any], provider: LocalServerProvider) -> list[Any]:
    env = client.from_docker_image(IMAGE, provider=provider).sync()
    result = env.step(RoomsAction(message="Hi")).reward
    env.close()
    return [result]


def handle_awaited_then_closed(client: type[Any], provider: LocalServerProvider) -> list[Any]:
    async def script() -> Any:
        env = await client.from_docker_image(IMAGE, provider=provider)
        try:
            return (await env.step(RoomsAction(message="Hi"))).reward
        finally:
            await env.close()

    return [asyncio.run(script())]


def handle_run_by_asyncio_run(client: type[Any], provider: LocalServerProvider) -> list[Any]:
    """What `AutoEnv.from_env` does with the handle."""
    env = asyncio.run(client.from_docker_image(IMAGE, provider=provider))
    started = provider.running
    outcome(env.close)
    return [started]


def handle_resolved_twice(client: type[Any], provider: LocalServerProvider) -> list[Any]:
    handle = client.from_docker_image(IMAGE, provider=provider)
    env = handle.sync()

    async def await_again() -> Any:
        return await handle

    second = outcome(lambda: asyncio.run(await_again()))
    third = outcome(handle.sync)
    env.close()
    return [second, third]


HANDLE_SCRIPTS: dict[str, Callable[[type[Any], LocalServerProvider], list[Any]]] = {
    f.__name__: f
    for f in (handle_sync_then_close, handle_awaited_then_closed, handle_run_by_asyncio_run, handle_resolved_twice)
}


# What each script gives on RoomsEnv, where the reproductions of the handle's defects pinned it.
RESOLVED_TWICE = (
    "RuntimeError",
    "This bootstrap handle has already been resolved; call the factory again to start a new environment.",
)
HANDLE_RESULTS = {
    "handle_sync_then_close": [0.2],
    "handle_awaited_then_closed": [0.2],
    "handle_run_by_asyncio_run": [1],  # reproduction 3: one server running while the client is open
    "handle_resolved_twice": [RESOLVED_TWICE, RESOLVED_TWICE],  # reproductions 2 and 4
}


@pytest.mark.parametrize("script", HANDLE_SCRIPTS)
def test_handles_start_one_server_and_close_stops_it(script: str) -> None:
    reports: dict[str, dict[str, Any]] = {}
    for name, client in CLIENTS.items():
        provider = LocalServerProvider()
        results = HANDLE_SCRIPTS[script](client, provider)
        reports[name] = {"results": results, "started": len(provider.started), "running_after_close": provider.running}
    assert reports["rooms"] == reports["openenv"]
    assert reports["rooms"]["results"] == HANDLE_RESULTS[script]
    assert reports["rooms"]["started"] == 1
    assert reports["rooms"]["running_after_close"] == 0


def test_a_handle_used_directly_in_sync_code_starts_once_and_stops_on_close() -> None:
    """The Quick Start's form, which OpenEnv's handle does not offer."""
    provider = LocalServerProvider()
    env = RoomsEnv.from_docker_image(IMAGE, provider=provider)
    assert provider.started == []  # nothing starts before the first call
    assert env.reset().observation.echoed_message == "Rooms environment ready!"
    assert env.step(RoomsAction(message="Hello, World!")).reward == 1.3
    assert env.state().step_count == 1
    env.close()
    assert (len(provider.started), provider.running) == (1, 0)


def test_a_handle_that_fails_to_connect_stops_its_server() -> None:
    """The server starts and answers /health, but refuses the client (it wants a token the handle was not given)."""
    provider = LocalServerProvider(env={"ROOMS_API_TOKEN": "a-token-the-client-does-not-send"})
    for client in CLIENTS.values():
        with pytest.raises(Exception):  # noqa: B017 - both raise their own error
            client.from_docker_image(IMAGE, provider=provider).sync()
    assert (len(provider.started), provider.running) == (2, 0)
