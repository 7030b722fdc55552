"""RoomsEnv against a live server: every usage form, concurrency, and parity of
the synchronous transport with openenv's own client (results and exceptions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from openenv.core.client_types import StepResult
from openenv.core.env_server.types import State
from websockets.asyncio.server import ServerConnection

from rooms import RoomsAction, RoomsEnv, RoomsObservation, SyncClient
from rooms.kit.application import create_app
from rooms.kit.client import SessionLost
from rooms.kit.settings import Settings
from rooms.models import MAX_MESSAGE_LENGTH
from rooms.server.rooms_environment import RoomsEnvironment
from tests.conftest import (
    ROOT,
    InProcessServer,
    LiveServer,
    ServerFactory,
    SharedServers,
    free_port,
    wait_for,
    wait_until_healthy,
    websockets_server,
)
from tests.openenv_reference import ReferenceEnv

# --- the three ways to drive a session --------------------------------------------------

# `do(name, *args, **kwargs)` calls the client's method `name` and gives its outcome; a script drives a session with it.
Do = Callable[..., Any]
Script = Callable[[Do], list[Any]]


def _outcome(call: Callable[[], Any]) -> Any:
    """A call's result, or its exception as (type, text)."""
    try:
        return call()
    except Exception as exc:
        return (type(exc), str(exc))


def run_sync(client: type[Any], url: str, script: Script, **client_kwargs: Any) -> list[Any]:
    """Run `script(do)` on the synchronous client, `Client(...).sync()`."""
    env = client(base_url=url, **client_kwargs).sync()
    try:
        return script(lambda name, *args, **kw: _outcome(lambda: getattr(env, name)(*args, **kw)))
    finally:
        env.close()


def run_direct(client: type[Any], url: str, script: Script, **client_kwargs: Any) -> list[Any]:
    """The same on the client itself called from synchronous code (OpenEnv's dispatch)."""
    env = client(base_url=url, **client_kwargs)
    try:
        return script(lambda name, *args, **kw: _outcome(lambda: getattr(env, name)(*args, **kw)))
    finally:
        env.close()


def run_async(client: type[Any], url: str, script: Script, **client_kwargs: Any) -> list[Any]:
    """The same with `await` on one event loop."""

    async def main() -> list[Any]:
        env = client(base_url=url, **client_kwargs)
        loop = asyncio.get_running_loop()

        def do(name: str, *args: Any, **kw: Any) -> Any:
            async def call() -> Any:
                return await getattr(env, name)(*args, **kw)

            # The script is synchronous; run each awaited call to completion in a helper thread's view.
            return _outcome(lambda: asyncio.run_coroutine_threadsafe(call(), loop).result())

        try:
            return await loop.run_in_executor(None, script, do)
        finally:
            await env.close()

    return asyncio.run(main())


# Each way of driving a session, on RoomsEnv and on OpenEnv's own client (the reference).
FORMS: dict[str, Callable[..., list[Any]]] = {
    f"{name}-{drive.__name__.removeprefix('run_')}": partial(drive, client)
    for name, client in {"rooms": RoomsEnv, "openenv": ReferenceEnv}.items()
    for drive in (run_sync, run_direct, run_async)
}


def episode(do: Do) -> list[Any]:
    return [
        do("reset", episode_id="parity"),
        do("step", RoomsAction(message="Hello, World!")),
        do("step", RoomsAction(message="日本語 👋🏽")),
        do("state"),
    ]


# --- usage forms --------------------------------------------------------------------------


def test_context_manager(base_url: str) -> None:
    with RoomsEnv(base_url=base_url) as env:
        assert env.reset().observation.echoed_message == "Rooms environment ready!"
        result = env.step(RoomsAction(message="abc"))
    assert isinstance(result.observation, RoomsObservation)
    assert (result.observation.echoed_message, result.observation.message_length) == ("abc", 3)
    assert result.reward == result.observation.reward == 0.3
    assert result.done is result.observation.done is False
    assert result.metadata == result.observation.metadata == {"original_message": "abc", "step": 1}


def test_plain_client_without_with(base_url: str) -> None:
    env = RoomsEnv(base_url=base_url)
    env.reset(episode_id="plain")
    assert env.step(RoomsAction(message="Hello!")).reward == 0.6
    assert env.state() == State(episode_id="plain", step_count=1)
    env.close()


def test_explicit_sync_client(base_url: str) -> None:
    client = RoomsEnv(base_url=base_url).sync()
    assert isinstance(client, SyncClient)
    with client:
        assert client.step(RoomsAction(message="Hi")).reward == 0.2
        assert client.state().step_count == 1


async def test_async_with_and_await(base_url: str) -> None:
    async with RoomsEnv(base_url=base_url) as env:
        await env.reset(episode_id="async")
        result = await env.step(RoomsAction(message="Hello"))
        assert (result.reward, result.observation.metadata["step"]) == (0.5, 1)
        assert await env.state() == State(episode_id="async", step_count=1)


def test_a_client_used_with_await_can_be_handed_to_sync_code(base_url: str) -> None:
    env = asyncio.run(_connected(base_url))
    # The episode was reset on a connection of an event loop that has ended: it cannot go on here.
    with pytest.raises(SessionLost, match=r"another event loop.*reset\(\) starts a new episode"):
        env.step(RoomsAction(message="handed over"))
    env.reset(episode_id="handed over")
    assert env.step(RoomsAction(message="handed over")).reward == 1.1
    assert env.state() == State(episode_id="handed over", step_count=1)
    env.close()


async def _connected(base_url: str) -> RoomsEnv:
    env = RoomsEnv(base_url=base_url)
    await env.connect()
    await env.reset()
    return env


def test_new_session_is_a_separate_episode(base_url: str) -> None:
    with RoomsEnv(base_url=base_url).sync() as parent:
        parent.reset(episode_id="parent")
        child = parent.new_session()
        child.reset(episode_id="child")
        child.step(RoomsAction(message="x"))
        assert parent.state() == State(episode_id="parent", step_count=0)
        assert child.state() == State(episode_id="child", step_count=1)


# --- parity of results and exceptions -----------------------------------------------------


def _comparable(outcomes: list[Any]) -> list[Any]:
    """Outcomes with the per-session random parts left out."""
    return [o.model_dump() if hasattr(o, "model_dump") else o for o in outcomes]


def test_all_forms_give_the_same_results(base_url: str) -> None:
    outcomes = {form: _comparable(run(base_url, episode)) for form, run in FORMS.items()}
    assert all(outcome == outcomes["openenv-sync"] for outcome in outcomes.values()), outcomes
    _, hello, unicode, state = FORMS["rooms-sync"](base_url, episode)
    assert (hello.reward, unicode.observation.message_length, state.step_count) == (1.3, 6, 2)


@pytest.mark.parametrize("form", FORMS)
def test_unreachable_server_raises_connection_error(form: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    [outcome] = FORMS[form](url, lambda do: [do("reset")])
    exc_type, text = outcome
    assert issubclass(exc_type, ConnectionError)
    assert text.startswith(f"Failed to connect to ws://127.0.0.1:{url.rsplit(':', 1)[1]}/ws:")


@pytest.mark.parametrize("form", FORMS)
def test_server_validation_error_says_what_was_wrong(shared_server: SharedServers, form: str) -> None:
    server = shared_server(env={})
    too_long = RoomsAction.model_construct(message="x" * (MAX_MESSAGE_LENGTH + 1))  # as a client without the bound
    outcomes = FORMS[form](server.url, lambda do: [do("step", too_long), do("state")])
    assert outcomes[0] == (
        RuntimeError,
        f"Server error: Invalid message: message: String should have at most {MAX_MESSAGE_LENGTH} characters "
        "(code: VALIDATION_ERROR)",
    )
    assert outcomes[1].step_count == 0  # the session survived the refusal


@pytest.mark.parametrize("form", FORMS)
def test_capacity_reached_names_the_limit(shared_server: SharedServers, form: str) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "1"})
    with RoomsEnv(base_url=server.url) as holder:
        holder.reset()
        [outcome] = FORMS[form](server.url, lambda do: [do("reset")])
    assert outcome == (
        RuntimeError,
        "Server error: Server at capacity: 1/1 sessions active. Cannot accept new connections. "
        "(code: CAPACITY_REACHED)",
    )


def echo_reply(text: str) -> str:
    """The observation frame Rooms answers a step of `text` with."""
    observation = {"echoed_message": text, "message_length": len(text), "metadata": {}}
    return json.dumps(
        {"type": "observation", "data": {"observation": observation, "reward": len(text) / 10, "done": False}}
    )


@pytest.fixture(scope="module")
def slow_peer() -> Iterator[str]:
    """A WebSocket peer that answers like Rooms, but waits `float(message)` seconds on such a step."""

    async def answer(ws: ServerConnection) -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "state":
                await ws.send(json.dumps({"type": "state", "data": {"episode_id": "slow", "step_count": 0}}))
                continue
            text = message.get("data", {}).get("message", "")
            with contextlib.suppress(ValueError):
                await asyncio.sleep(float(text))
            await ws.send(echo_reply(text))

    port = free_port()
    with websockets_server(answer, port):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("form", FORMS)
def test_a_timeout_raises_timeout_error_and_the_next_call_works(slow_peer: str, form: str) -> None:
    def script(do: Do) -> list[Any]:
        return [
            do("reset"),
            do("step", RoomsAction(message="0.5")),
            do("step", RoomsAction(message="fast")),
            do("state"),
        ]

    def rooms_script(do: Do) -> list[Any]:
        return [*script(do)[:3], do("reset"), do("step", RoomsAction(message="fast")), do("state")]

    if form.startswith("openenv"):
        reset, slow, fast, state = FORMS[form](slow_peer, script, message_timeout_s=0.2)
        assert fast.observation.echoed_message == "fast"  # on a fresh socket, a new session: no stale reply read
    else:
        # The timed-out call closed its connection: the next call is told the session is gone, reset() opens a new one.
        reset, slow, lost, again, fast, state = FORMS[form](slow_peer, rooms_script, message_timeout_s=0.2)
        assert lost[0] is SessionLost and "no reply came within 0.2 s" in lost[1], lost
        assert again.observation.echoed_message == ""
        assert fast.observation.echoed_message == "fast"  # not the late "0.5"
    assert reset.observation.echoed_message == ""
    assert slow[0] is TimeoutError
    assert state.episode_id == "slow"


def test_server_restart_mid_episode(server_factory: ServerFactory) -> None:
    """Rooms: `SessionLost` from every call but `reset()`, while the server is down and once it is back;
    `reset()` then starts a new episode (step 1, a new id). OpenEnv's client: a `ConnectionError` while
    down, and once back a step silently answered by a new session.

    Every form at once, each mid-episode on its own session, around one kill and one restart."""
    server = server_factory()

    def kill() -> None:
        server.stop(signal.SIGKILL)

    def restart() -> None:
        server_factory(port=server.port)

    killed = threading.Barrier(len(FORMS), action=kill)
    restarted = threading.Barrier(len(FORMS), action=restart)

    def script(do: Do) -> list[Any]:
        before = [do("reset"), do("step", RoomsAction(message="before")), do("state")]
        killed.wait(timeout=120)
        down = [do("step", RoomsAction(message="while down")), do("state"), do("reset")]
        restarted.wait(timeout=120)
        back = [do("step", RoomsAction(message="back")), do("state")]
        after = [do("reset"), do("step", RoomsAction(message="after")), do("state")]
        return [before, down, back, after]

    with ThreadPoolExecutor(len(FORMS)) as forms:
        running = {form: forms.submit(drive, server.url, script) for form, drive in FORMS.items()}
    refused = f"Failed to connect to ws://127.0.0.1:{server.port}/ws"
    for form, outcome in running.items():
        (_, before, old), (step_down, state_down, reset_down), (step_back, state_back), after = outcome.result()
        assert (before.reward, old.step_count) == (0.6, 1), form
        if form.startswith("openenv"):
            assert issubclass(step_down[0], ConnectionError), (form, step_down)
            assert issubclass(reset_down[0], ConnectionError) and refused in reset_down[1], (form, reset_down)
            # Once the server is back, its next step is answered by a new session: step 1 of another episode.
            assert state_back.step_count == 1 and state_back.episode_id != old.episode_id, form
            continue
        for call in (step_down, state_down, step_back, state_back):
            assert call[0] is SessionLost, (form, call)
            assert "reset() starts a new episode" in call[1], (form, call)
        # The server is down: reset() tries a new session and says it cannot reach the server.
        assert reset_down[0] is ConnectionError and refused in reset_down[1], (form, reset_down)
        reset, step, state = after
        assert reset.observation.echoed_message == "Rooms environment ready!", form
        assert (step.reward, step.observation.metadata["step"], state.step_count) == (0.5, 1, 1), form
        assert state.episode_id != old.episode_id, form


@pytest.fixture
def pinging_server(shared_server: SharedServers) -> InProcessServer:
    """A server that pings every 0.2 s and drops a socket that leaves a ping unanswered for 1 s."""
    return shared_server(env={"ROOMS_WS_PING_INTERVAL_S": "0.2", "ROOMS_WS_PING_TIMEOUT_S": "1"})


@pytest.mark.parametrize("form", FORMS)
def test_idle_longer_than_the_server_ping_timeout_keeps_the_episode(pinging_server: InProcessServer, form: str) -> None:
    """The server pings every 0.2 s and drops a socket that leaves a ping unanswered for 1 s."""

    def script(do: Do) -> list[Any]:
        first = [do("reset", episode_id="idle"), do("step", RoomsAction(message="before"))]
        time.sleep(3)
        return [*first, do("step", RoomsAction(message="after")), do("state")]

    _, before, after, state = FORMS[form](pinging_server.url, script)
    assert (before.reward, after.reward) == (0.6, 0.5)
    assert state == State(episode_id="idle", step_count=2)


@pytest.fixture(scope="module")
def freezable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of this module's own, which its tests may suspend (SIGSTOP) for a while."""
    factory = ServerFactory(tmp_path_factory.mktemp("freezable-server"), cwd=ROOT)
    yield factory()
    factory.stop_all()


@pytest.mark.xdist_group("freezable-server")  # its cases, on one pytest-xdist worker, share the server
@pytest.mark.parametrize("form", FORMS)
def test_a_server_that_stops_answering_pings_is_left_for_a_new_session(freezable_server: LiveServer, form: str) -> None:
    """Our keepalive gives up on a silent server; once it answers again, the next call opens a new session."""
    server = freezable_server

    def script(do: Do) -> list[Any]:
        first = [do("reset", episode_id="frozen"), do("step", RoomsAction(message="before"))]
        os.killpg(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
        finally:
            os.killpg(server.process.pid, signal.SIGCONT)
        return [*first, do("state")]

    def rooms_script(do: Do) -> list[Any]:
        return [*script(do), do("reset", episode_id="thawed"), do("state")]

    options = {"websocket_ping_interval_s": 0.2, "websocket_ping_timeout_s": 0.3}
    if form.startswith("openenv"):
        _, before, state = FORMS[form](server.url, script, **options)
        assert state.step_count == 0 and state.episode_id != "frozen"  # silently, another session
    else:
        _, before, lost, _, state = FORMS[form](server.url, rooms_script, **options)
        assert lost[0] is SessionLost, lost
        assert state == State(episode_id="thawed", step_count=0)
    assert before.reward == 0.6


@pytest.fixture(scope="module")
def tls_authority() -> trustme.CA:
    """A certificate authority of this test run only."""
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_certificate(tls_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The authority's certificate, for clients to trust (`SSL_CERT_FILE`)."""
    path = tmp_path_factory.mktemp("tls") / "authority.pem"
    tls_authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def tls_server_url(tls_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The https:// address of a server in this process, its certificate for localhost issued by the authority."""
    directory = tmp_path_factory.mktemp("tls-server")
    issued = tls_authority.issue_cert("localhost")
    certificate, key = directory / "cert.pem", directory / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    server = InProcessServer(
        create_app(RoomsEnvironment, RoomsAction, RoomsObservation, settings=Settings.from_env({})),
        Settings.from_env({}),
        ssl_certfile=str(certificate),
        ssl_keyfile=str(key),
    )
    yield f"https://localhost:{server.port}"
    server.stop()


@pytest.mark.parametrize("form", FORMS)
def test_wss_with_messages_spanning_many_tls_records(
    tls_server_url: str, tls_certificate: Path, monkeypatch: pytest.MonkeyPatch, base_url: str, form: str
) -> None:
    url = tls_server_url
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_certificate))
    large = "ü" * 300_000  # a reply of ~600 KB: dozens of 16 KB TLS records

    def script(do: Do) -> list[Any]:
        return [*episode(do), do("step", RoomsAction(message=large))]

    *first, big = FORMS[form](url, script)
    assert _comparable(first) == _comparable(FORMS[form](base_url, episode))  # as over plain ws
    assert (big.observation.echoed_message == large, big.observation.message_length) == (True, 300_000)


# --- concurrency ----------------------------------------------------------------------------


def test_four_threads_each_with_its_own_session(base_url: str) -> None:
    def run_episode(client_id: int) -> tuple[int, str, State]:
        with RoomsEnv(base_url=base_url) as env:
            env.reset(episode_id=f"thread-{client_id}")
            for i in range(10):
                result = env.step(RoomsAction(message=f"Client {client_id}, step {i}"))
            return client_id, result.observation.echoed_message, env.state()

    with ThreadPoolExecutor(max_workers=4) as executor:
        results = list(executor.map(run_episode, range(4)))
    for client_id, echoed, state in results:
        assert echoed == f"Client {client_id}, step 9"
        assert state == State(episode_id=f"thread-{client_id}", step_count=10)


async def test_sixteen_async_sessions_stay_isolated(base_url: str) -> None:
    async def session(n: int) -> tuple[int, StepResult[RoomsObservation], State]:
        async with RoomsEnv(base_url=base_url) as env:
            await env.reset(episode_id=f"session-{n}")
            for _ in range(n + 1):  # a different number of steps per session
                result = await env.step(RoomsAction(message="s" * n))
                await asyncio.sleep(0)
            return n, result, await env.state()

    results = await asyncio.gather(*(session(n) for n in range(16)))
    for n, result, state in results:
        assert result.observation.message_length == n
        assert result.reward == n / 10
        assert state == State(episode_id=f"session-{n}", step_count=n + 1)


def test_closing_a_session_frees_its_slot(shared_server: SharedServers) -> None:
    server = shared_server(env={"MAX_CONCURRENT_ENVS": "1"})
    for _ in range(3):
        with RoomsEnv(base_url=server.url) as env:
            assert env.step(RoomsAction(message="turn")).reward == 0.4
        assert shared_server.becomes_idle(server), "the closed session kept its slot"


async def test_the_sync_client_works_inside_a_running_event_loop(base_url: str) -> None:
    """As when an async trainer calls a synchronous tool: no await, no deadlock."""
    asyncio.get_running_loop()
    with RoomsEnv(base_url=base_url).sync() as env:
        env.reset(episode_id="in-a-loop")
        assert env.step(RoomsAction(message="Hi")).reward == 0.2
        assert env.state() == State(episode_id="in-a-loop", step_count=1)


@pytest.fixture(scope="module")
def vanishing_peer() -> Iterator[str]:
    """A WebSocket peer that drops the connection instead of answering a step of "vanish"."""

    async def answer(ws: ServerConnection) -> None:
        async for frame in ws:
            message = json.loads(frame)
            text = message.get("data", {}).get("message", "")
            if text == "vanish":
                ws.transport.abort()  # no close frame: as when the server's machine dies
                return
            await ws.send(echo_reply(text))

    port = free_port()
    with websockets_server(answer, port):
        yield f"http://127.0.0.1:{port}"


def test_a_session_lost_while_waiting_for_a_reply_raises_session_lost(vanishing_peer: str) -> None:
    with RoomsEnv(base_url=vanishing_peer).sync() as env:
        assert env.step(RoomsAction(message="before")).reward == 0.6
        with pytest.raises(SessionLost, match="the connection dropped"):
            env.step(RoomsAction(message="vanish"))
        with pytest.raises(SessionLost, match="the connection dropped"):
            env.step(RoomsAction(message="after"))  # never on a new connection behind the episode's back
        env.reset()
        assert env.step(RoomsAction(message="after")).reward == 0.5  # on a new connection


# --- request/response pairing and sessions the server ends, on an in-process server ------------


class SlowRooms(RoomsEnvironment):
    """Rooms, whose step of "sleep:<seconds>" answers that much later (a test-only environment)."""

    async def step_async(self, action: RoomsAction, timeout_s: float | None = None, **kwargs: Any) -> RoomsObservation:
        if action.message.startswith("sleep:"):
            await asyncio.sleep(float(action.message.removeprefix("sleep:")))
        return self.step(action)


@contextlib.contextmanager
def in_process_server(settings: Settings) -> Iterator[str]:
    """`SlowRooms` served by uvicorn in a thread of this process; yields its URL."""
    import uvicorn

    port = free_port()
    app = create_app(SlowRooms, RoomsAction, RoomsObservation, settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def slow_rooms() -> Iterator[str]:
    with in_process_server(Settings()) as url:
        yield url


ROOMS_FORMS = {form: run for form, run in FORMS.items() if form.startswith("rooms")}


@pytest.mark.parametrize("form", ROOMS_FORMS)
def test_openenv_1143_a_late_reply_never_answers_the_next_call(slow_rooms: str, form: str) -> None:
    """OpenEnv issue #1143: after a receive timeout, each later reply answered the call before it.

    A step whose reply comes after the client's receive timeout, then more calls: none of them is
    answered by that late reply (or by the session it belongs to)."""

    def script(do: Do) -> list[Any]:
        return [
            do("reset", episode_id="first"),
            do("step", RoomsAction(message="sleep:1")),
            do("step", RoomsAction(message="next")),
            do("state"),
            do("reset", episode_id="second"),
            do("step", RoomsAction(message="next")),
            do("step", RoomsAction(message="and next")),
            do("state"),
        ]

    _, late, lost_step, lost_state, reset, step, step_after, state = ROOMS_FORMS[form](
        slow_rooms, script, message_timeout_s=0.3
    )
    assert late[0] is TimeoutError, late
    for lost in (lost_step, lost_state):
        assert lost[0] is SessionLost and "no reply came within 0.3 s" in lost[1], lost
    assert reset.observation.echoed_message == "Rooms environment ready!"
    assert (step.observation.echoed_message, step.observation.metadata["step"]) == ("next", 1)
    assert (step_after.observation.echoed_message, step_after.observation.metadata["step"]) == ("and next", 2)
    assert state == State(episode_id="second", step_count=2)


async def test_a_cancelled_call_closes_its_connection(slow_rooms: str) -> None:
    """A caller's own deadline (`asyncio.wait_for`) cancels the call: its reply is never read as another's."""
    async with RoomsEnv(base_url=slow_rooms) as env:
        await env.reset(episode_id="cancelled")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(env.step(RoomsAction(message="sleep:1")), timeout=0.3)
        with pytest.raises(SessionLost, match="cancelled while its reply was due"):
            await env.step(RoomsAction(message="next"))
        await env.reset(episode_id="again")
        result = await env.step(RoomsAction(message="next"))
        assert (result.observation.echoed_message, result.observation.metadata["step"]) == ("next", 1)
        assert await env.state() == State(episode_id="again", step_count=1)


def sessions_open(url: str) -> int:
    answer: int = requests.get(f"{url}/capacity", timeout=10).json()["active_sessions"]
    return answer


@pytest.mark.parametrize("form", ROOMS_FORMS)
def test_a_session_the_server_ended_for_idleness_is_lost(form: str) -> None:
    """The server ends an idle session (an error frame SESSION_EXPIRED, then close 4408): SessionLost."""
    with in_process_server(Settings(session_timeout_s=0.5)) as url:

        def script(do: Do) -> list[Any]:
            first = [do("reset", episode_id="idle"), do("step", RoomsAction(message="before"))]
            wait_for(lambda: not sessions_open(url), 60, "the server ended the idle session")
            # Time for the client's reader to take in the error frame and the close: a frame sent to a socket the
            # server has closed draws a reset, and a reset discards what the client's kernel had not handed over
            # yet (then the client can only say the connection dropped).
            time.sleep(1.0)
            return [*first, do("step", RoomsAction(message="after")), do("state"), do("reset"), do("state")]

        _, before, step, state, _, after = ROOMS_FORMS[form](url, script)
    assert before.reward == 0.6
    for lost in (step, state):
        assert lost[0] is SessionLost and "the server ended it" in lost[1], lost
        assert "idle" in lost[1]
    assert after.step_count == 0 and after.episode_id != "idle"


def test_the_docs_rollout_loop_begins_a_lost_episode_again(
    server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/client.md's rollout loop, its server restarted mid-episode: the lost episode is begun again, and the
    rewards are one whole episode's."""
    from tests.readme_blocks import readme_blocks

    [block] = [b for b in readme_blocks("live-server") if b.source == "docs/client.md" and "SessionLost" in b.code]
    definitions, _ = block.code.split("\nwith RoomsEnv(", 1)
    namespace: dict[str, Any] = {"__name__": "docs_client"}
    exec(compile(definitions, "<docs/client.md>", "exec"), namespace)
    server = server_factory()

    class RestartedAfterTheFirst(list[str]):
        """The messages of an episode; the server is killed and started again after the first, once."""

        restarted = False

        def __iter__(self) -> Iterator[str]:
            for number, message in enumerate(super().__iter__()):
                if number == 1 and not self.restarted:
                    self.restarted = True
                    server.stop(signal.SIGKILL)
                    server_factory(port=server.port)
                yield message

    messages = RestartedAfterTheFirst(["Hi", "Hello"])
    with RoomsEnv(base_url=server.url).sync() as env:
        rewards = namespace["rollout"](env, messages)
        state = env.state()
    assert messages.restarted
    assert rewards == [0.2, 0.5] and state.step_count == 2
    assert "episode lost (the connection dropped" in capsys.readouterr().out
