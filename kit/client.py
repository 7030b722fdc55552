"""A typed OpenEnv client with a fast synchronous form and launch handles, for any environment.

`TypedEnvClient` is OpenEnv's `EnvClient`: subclass it with the three hooks
(`_step_payload`, `_parse_result`, `_parse_state`), as OpenEnv's template does.
In async code it is OpenEnv's client unchanged. `.sync()` gives a `SyncClient`,
a synchronous client on one blocking `websockets` connection, so a rollout loop's
`env.step(...)` is a single round trip in the calling thread. `from_docker_image`,
`from_env` and `from_hub` return a `Launch`: await it, call `.sync()`, or use it
directly as the synchronous client.

A server that wants an access token (`<PREFIX>API_TOKEN` on the server) gets it from
`headers={"Authorization": "Bearer <token>"}`, which every form of the client sends;
`from_docker_image` and `from_env` take `api_token=` and give it to the server they
start too. A server that refuses the token, or its absence, raises `AccessDenied`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextlib import suppress
from functools import partial
from ipaddress import ip_address
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from openenv.core.client_types import StepResult
from openenv.core.containers.runtime import ContainerProvider, LocalDockerProvider, RuntimeProvider, UVProvider
from openenv.core.env_client import EnvClient
from openenv.core.env_server.mcp_types import (
    CallToolAction,
    CallToolObservation,
    ListToolsAction,
    ListToolsObservation,
    Tool,
)
from openenv.core.env_server.types import Action, Observation, State, WSErrorCode
from openenv.core.sync_client import SyncEnvClient
from openenv.core.utils import convert_to_ws_url, hf_space_subdomain
from pydantic_core import from_json, to_json
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State as SocketState
from websockets.sync.client import ClientConnection, connect

from .sessions import EXPIRED_CLOSE_CODE, EXPIRED_CODE
from .settings import PREFIX

ActT = TypeVar("ActT", bound=Action)
ObsT = TypeVar("ObsT", bound=Observation)
StateT = TypeVar("StateT", bound=State)

ENV_CLIENT_ARGUMENTS = inspect.signature(EnvClient.__init__)
# websockets >= 17 warns about a connection opened without `with` unless asked for directly.
DIRECT_CONNECTION: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
#: The server setting `from_docker_image(api_token=...)` and `from_env(api_token=...)` give their server.
API_TOKEN_SETTING = f"{PREFIX}API_TOKEN"
# What a server answers a WebSocket handshake that lacks the right token (403: one that cannot say 401).
ACCESS_REFUSED_STATUSES = (401, 403)


class LocalDocker(LocalDockerProvider):
    """OpenEnv's `LocalDockerProvider`, with a stop that waits as long as a busy engine needs.

    `LocalDockerProvider.stop_container` gives `docker stop` and `docker rm` 10 s each: on a
    loaded host `docker rm` can take longer, and the client's `close()` raised `TimeoutExpired`
    and left the container behind. This one stops (10 s of grace, as `docker stop`) and removes
    the container it started with up to `ENGINE_TIMEOUT_S` for each command.
    """

    ENGINE_TIMEOUT_S = 120.0

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.container_id: str | None = None

    def start_container(
        self, image: str, port: int | None = None, env_vars: dict[str, str] | None = None, **kwargs: Any
    ) -> str:
        """Start `image` as `LocalDockerProvider` does, and note the container that publishes its port."""
        base_url = super().start_container(image, port, env_vars, **kwargs)
        published = self.docker("ps", "--quiet", "--no-trunc", "--filter", f"publish={urlsplit(base_url).port}").split()
        self.container_id = published[0] if published else None
        return base_url

    def stop_container(self) -> None:
        """Stop and remove the container this provider started."""
        if self.container_id is None:
            super().stop_container()
            return
        container, self.container_id = self.container_id, None
        self.docker("stop", container)
        self.docker("rm", "--force", container)

    def docker(self, *arguments: str) -> str:
        done = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=self.ENGINE_TIMEOUT_S)
        return done.stdout


class AccessDenied(PermissionError):
    """The server refused the WebSocket handshake: it wants an access token, or not the one sent."""

    def __init__(self, url: str, status: int, sent_token: bool) -> None:
        if status == 401 and not sent_token:
            problem = "wants an access token"
        elif status == 401:
            problem = "refused the access token sent"
        else:
            problem = "refused the connection: it wants an access token, or another one, or another origin"
        super().__init__(
            f"The server at {url} {problem} (HTTP {status}): pass "
            'headers={"Authorization": "Bearer <token>"} with the token the server was given'
        )
        self.url, self.status = url, status


def access_denied(url: str, headers: dict[str, str] | None, error: BaseException) -> AccessDenied | None:
    """The `AccessDenied` that `error` (a failed handshake, maybe wrapped) stands for, if it is one."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, InvalidStatus):
        cause = cause.__cause__
    if cause is None or cause.response.status_code not in ACCESS_REFUSED_STATUSES:
        return None
    sent_token = any(name.lower() == "authorization" for name in headers or {})
    return AccessDenied(url, cause.response.status_code, sent_token)


def with_token(headers: dict[str, str] | None, api_token: str | None) -> dict[str, str] | None:
    """`headers` with `Authorization: Bearer <api_token>` added, when there is a token."""
    if api_token is None:
        return headers
    return {**(headers or {}), "Authorization": f"Bearer {api_token}"}


def token_setting(env_vars: dict[str, str] | None, api_token: str | None) -> dict[str, str] | None:
    """A started server's environment variables, with the token when there is one."""
    if api_token is None:
        return env_vars
    return {**(env_vars or {}), API_TOKEN_SETTING: api_token}


class SessionLost(ConnectionError):
    """The server-side session this client's episode was on is gone: the episode cannot go on.

    Raised by every call but `reset()` once the WebSocket the episode was reset on has
    closed (the server restarted or ended the idle session, the connection dropped, a
    call timed out or was cancelled). `reset()` opens a new session and starts a new
    episode there; no call is ever answered by another session than its episode's.
    """

    def __init__(self, url: str, why: str) -> None:
        super().__init__(
            f"The session at {url} is gone: {why}. Its episode cannot go on; "
            "reset() starts a new episode on a new session"
        )
        self.url, self.why = url, why


def why_closed(code: int | None, reason: str | None) -> str:
    """What a WebSocket's close code and reason say happened to its session."""
    if code == EXPIRED_CLOSE_CODE:
        return f"the server ended it ({reason or 'idle too long'})"
    if code in (None, 1006):
        return "the connection dropped (the server, or the network to it, went away)"
    return f"the server closed the connection (code {code}{f': {reason}' if reason else ''})"


class Tether:
    """Which WebSocket connection a client's session is, and why it is gone once it is.

    The server keeps a session (one environment, one episode) for as long as its
    connection lives, so the connection *is* the session: a call may only go on the
    connection the session was opened on. Shared by a client's async and sync forms.
    """

    def __init__(self) -> None:
        self.connection: object | None = None
        self.lost: str | None = None

    def opens_new(self, socket: object | None, is_open: bool, resetting: bool, url: Callable[[], str]) -> bool:
        """Whether the call must open a new connection first; `SessionLost` (for the session at `url()`) if it
        may not."""
        if socket is not None and socket is self.connection and is_open:
            return False
        if self.connection is None:
            return True  # no session yet (or the last one was closed on purpose): a call opens one
        if self.lost is None:
            self.lost = (
                why_closed(socket.close_code, socket.close_reason)  # type: ignore[attr-defined]
                if socket is self.connection
                else "it was opened by the client's other form (async or .sync()) or on another event loop"
            )
        if resetting:
            return True
        raise SessionLost(url(), self.lost)

    def bind(self, socket: object) -> None:
        """The session is now `socket`'s."""
        self.connection, self.lost = socket, None

    def lose(self, url: str, why: str) -> SessionLost:
        """The session is gone because `why`; the `SessionLost` to raise."""
        self.lost = why
        return SessionLost(url, why)

    def forget(self) -> None:
        """The session was closed on purpose (or never began): the next call opens a new one."""
        self.connection, self.lost = None, None


def timed_out(timeout_s: float) -> str:
    return (
        f"no reply came within {timeout_s} s, so its connection was closed "
        "(a late reply must never answer another call)"
    )


CANCELLED = "a call was cancelled while its reply was due, so its connection was closed"


class TypedEnvClient(EnvClient[ActT, ObsT, StateT]):
    """OpenEnv's `EnvClient` with `.sync()`, launch handles and episode integrity; one instance is one session.

    Takes OpenEnv's `EnvClient` arguments (`base_url`, `connect_timeout_s`,
    `message_timeout_s`, `headers`, ...). In async code, `await` its methods or
    use `async with`; in sync code, call them directly, use `with`, or `.sync()`.
    It speaks OpenEnv's WebSocket protocol on a connection of its own, one call at
    a time: a call whose session is gone raises `SessionLost` (only `reset()`
    opens a new one), and a call that times out or is cancelled closes its
    connection, so that no reply is ever read as the answer to another call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arguments = ENV_CLIENT_ARGUMENTS.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        #: The constructor's arguments, defaults included: both forms connect with them.
        self.arguments: dict[str, Any] = {k: v for k, v in arguments.arguments.items() if k != "self"}
        self.sync_client: SyncClient[ActT, ObsT, StateT] | None = None
        self.tether = Tether()
        self.server_url: str | None = self.base_url
        self.socket: AsyncConnection | None = None
        self.socket_loop: asyncio.AbstractEventLoop | None = None
        self.one_call_at_a_time: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.closing: set[asyncio.Task[None]] = set()

    # --- the public calls: awaitable in async code, answered directly in sync code -----------------

    def connect(self) -> Any:
        """Open the session (nothing to do if it is open); `AccessDenied` if the server refuses the token."""
        return self.dispatch(self.connect_async, self.connect_blocking)

    def connect_blocking(self) -> TypedEnvClient[ActT, ObsT, StateT]:
        self.sync().connect()
        return self

    def reset(self, **kwargs: Any) -> Any:
        """Start a new episode; on a new session if the last one is gone. Kwargs go to the server."""
        message = {"type": "reset", "data": kwargs}
        return self.dispatch(
            partial(self.request_async, message, self._parse_result), partial(self.sync().reset, **kwargs)
        )

    def step(self, action: ActT, **kwargs: Any) -> Any:
        """Send one action; `SessionLost` if the episode's session is gone."""
        return self.dispatch(partial(self.step_async, action), partial(self.sync().step, action, **kwargs))

    async def step_async(self, action: ActT) -> StepResult[Any]:
        result: StepResult[Any] = await self.request_async(
            step_message(self, action), partial(step_result, self, action)
        )
        return result

    def state(self) -> Any:
        """The session's `State`; `SessionLost` if the episode's session is gone."""
        return self.dispatch(partial(self.request_async, {"type": "state"}, self._parse_state), self.sync().state)

    def disconnect(self) -> Any:
        """End the session on the server and close its connection; the next call opens a new one."""
        return self.dispatch(self.disconnect_async, self.sync().disconnect)

    def close(self) -> Any:
        """End the session, close the sessions from `new_session()`, and stop any server the client started."""
        return self.dispatch(self.close_async, self.sync().close)

    def __enter__(self) -> TypedEnvClient[ActT, ObsT, StateT]:
        self.sync().connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sync().close()

    def dispatch(self, awaited: Callable[[], Awaitable[Any]], blocking: Callable[[], Any]) -> Any:
        """`blocking()` in sync code; in async code, an awaitable of `awaited()`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return blocking()
        return Pending(awaited, blocking)

    # --- the async form's connection ------------------------------------------------------------

    def url(self) -> str:
        """The server's address, starting the client's provider first if it owns one."""
        if self.server_url is None:
            self.server_url = start_provider(self.arguments["provider"])
        return self.server_url

    def ws_url(self) -> str:
        return convert_to_ws_url(self.server_url or self.base_url or "") + "/ws"

    async def connect_async(self) -> TypedEnvClient[ActT, ObsT, StateT]:
        async with self.lock():
            await self.session_socket(resetting=False)
        return self

    async def disconnect_async(self) -> None:
        socket, self.socket = self.socket, None
        self.tether.forget()
        if socket is not None and self.socket_loop is asyncio.get_running_loop():
            with suppress(ConnectionClosed):
                await socket.send(json.dumps({"type": "close"}))
            await socket.close()

    async def close_async(self) -> None:
        try:
            await self.disconnect_async()
            if self.sync_client is not None:
                self.sync_client.disconnect()
            await asyncio.gather(*self.closing, return_exceptions=True)
        finally:
            await super().close()

    def lock(self) -> asyncio.Lock:
        """The lock that lets one call at a time use the connection, on the running event loop."""
        loop = asyncio.get_running_loop()
        if self.one_call_at_a_time is None or self.one_call_at_a_time[0] is not loop:
            self.one_call_at_a_time = (loop, asyncio.Lock())
        return self.one_call_at_a_time[1]

    async def session_socket(self, resetting: bool) -> AsyncConnection:
        """The connection of this client's session, opened if it may be; `SessionLost` if it may not."""
        loop = asyncio.get_running_loop()
        socket = self.socket if self.socket_loop is loop else None
        is_open = socket is not None and socket.state is SocketState.OPEN
        if not self.tether.opens_new(socket, is_open, resetting, self.ws_url):
            assert socket is not None
            return socket
        if self.socket is not None:
            self.close_later(self.socket)
            self.socket = None
        ws_url = convert_to_ws_url(self.url()) + "/ws"
        try:
            socket = await connect_async(ws_url, **connection_options(self.arguments, ws_url, sync=False))
        except Exception as error:
            raise connection_refused(ws_url, self.arguments["headers"], error) from error
        self.socket, self.socket_loop = socket, loop
        self.tether.bind(socket)
        return socket

    def close_later(self, socket: AsyncConnection) -> None:
        if self.socket_loop is not asyncio.get_running_loop():
            return  # its event loop has ended: it cannot be closed from here
        task = asyncio.ensure_future(socket.close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def request_async(self, message: dict[str, Any], parse: Callable[[dict[str, Any]], Any]) -> Any:
        """Send `message` on the session's connection and parse its reply; see `SyncClient.request`."""
        async with self.lock():
            socket = await self.session_socket(resetting=message["type"] == "reset")
            timeout_s = self.arguments["message_timeout_s"]
            try:
                with suppress(ConnectionClosed):  # a refused session sends its error frame, then closes
                    await socket.send(to_json(message).decode())
                reply = await asyncio.wait_for(socket.recv(decode=False), timeout=timeout_s)
            except ConnectionClosed as closed:
                self.socket = None
                raise self.tether.lose(self.ws_url(), why_closed(socket.close_code, socket.close_reason)) from closed
            except BaseException as error:
                self.socket = None
                self.close_later(socket)
                if isinstance(error, TimeoutError):
                    self.tether.lose(self.ws_url(), timed_out(timeout_s))
                    raise TimeoutError(f"No reply within {timeout_s} s") from None
                self.tether.lose(self.ws_url(), CANCELLED)
                raise
            response = from_json(reply)
            if response.get("type") == "error":

                def drop() -> None:
                    self.socket = None
                    self.close_later(socket)

                self.check_reply(response, drop)
        return parse(response.get("data", {}))

    def check_reply(self, response: dict[str, Any], drop: Callable[[], Any]) -> None:
        """Raise for an error frame: `SessionLost` for a session the server ended, else OpenEnv's `RuntimeError`."""
        if response.get("type") != "error":
            return
        code = response.get("data", {}).get("code")
        if code == EXPIRED_CODE:
            drop()
            raise self.tether.lose(self.ws_url(), f"the server ended it ({response['data'].get('message')})")
        if code == WSErrorCode.CAPACITY_REACHED:
            drop()
            self.tether.forget()  # no session was had: the next call may try again
        raise_for_server_error(response)

    def sync(self) -> SyncClient[ActT, ObsT, StateT]:
        """The synchronous client for this session."""
        if self.sync_client is None:
            self.sync_client = SyncClient(self)
        return self.sync_client

    @classmethod
    def from_docker_image(  # type: ignore[override]
        cls,
        image: str,
        provider: ContainerProvider | None = None,
        *,
        api_token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Launch[ActT, ObsT, StateT]:
        """Run `image` in a container (`LocalDocker` unless `provider` is given).

        `close()` on the client stops the container. With `api_token`, the container's
        server wants that token (it gets it as `<PREFIX>API_TOKEN`) and the client sends
        it; `headers` are sent too. Other `kwargs` go to `start_container`.
        """
        if api_token is not None:
            kwargs["env_vars"] = token_setting(kwargs.get("env_vars"), api_token)
        headers = with_token(headers, api_token)

        def start() -> TypedEnvClient[ActT, ObsT, StateT]:
            containers = provider or LocalDocker()
            try:
                base_url = containers.start_container(image, **kwargs)
                containers.wait_for_ready(base_url)
                return cls(base_url=base_url, provider=containers, headers=headers)
            except BaseException:
                containers.stop_container()
                raise

        return Launch(start)

    @classmethod
    def from_env(  # type: ignore[override]
        cls,
        repo_id: str,
        *,
        use_docker: bool = True,
        provider: ContainerProvider | RuntimeProvider | None = None,
        api_token: str | None = None,
        headers: dict[str, str] | None = None,
        **provider_kwargs: Any,
    ) -> Launch[ActT, ObsT, StateT]:
        """Run the Hugging Face Space `repo_id` locally, as OpenEnv's `from_env` does.

        With Docker (the default) its image is pulled from the Space's registry
        (`tag=` picks the tag); with `use_docker=False` it runs with uv from the
        Space's git repository, or from `project_path=` (a local checkout).
        `api_token` and `headers` are as in `from_docker_image`.
        """
        if use_docker:
            tag = provider_kwargs.pop("tag", "latest")
            image = f"registry.hf.space/{hf_space_subdomain(repo_id)}:{tag}"
            return cls.from_docker_image(
                image,
                provider,  # type: ignore[arg-type]
                api_token=api_token,
                headers=headers,
                **provider_kwargs,
            )
        start_args = {
            key: provider_kwargs.pop(key) for key in ("port", "env_vars", "workers") if key in provider_kwargs
        }
        if api_token is not None:
            start_args["env_vars"] = token_setting(start_args.get("env_vars"), api_token)
        headers = with_token(headers, api_token)
        if provider is None:
            project_path = provider_kwargs.pop("project_path", f"git+https://huggingface.co/spaces/{repo_id}")
            provider = UVProvider(project_path=project_path, **provider_kwargs)
        elif provider_kwargs:
            raise ValueError("provider_kwargs cannot be used when supplying a provider instance")
        runtime: RuntimeProvider = provider  # type: ignore[assignment]

        def start() -> TypedEnvClient[ActT, ObsT, StateT]:
            try:
                base_url = runtime.start(**start_args)
                runtime.wait_for_ready()
                return cls(base_url=base_url, provider=runtime, headers=headers)
            except BaseException:
                runtime.stop()
                raise

        return Launch(start)

    from_hub = from_env


class SyncClient(SyncEnvClient[ActT, ObsT, StateT]):
    """The synchronous client: one blocking WebSocket, replies read in the caller's call.

    Protocol, results and exceptions are those of OpenEnv's sync client:
    `ConnectionError` when the server cannot be reached, `RuntimeError("Server
    error: ...")` for an error frame, `TimeoutError` after `message_timeout_s`.
    Where OpenEnv's opens a new session on the next call once the server has closed
    the socket, this one raises `SessionLost` (a `ConnectionError`) from every call
    but `reset()`, which opens a new session: an episode never goes on in another
    session. A call that times out closes its connection (the next call gets
    `SessionLost`), so no late reply is read as another call's answer. It shares
    its session with the client it came from. `websockets` answers the server's
    pings between calls, in its own thread.
    """

    def __init__(self, client: TypedEnvClient[ActT, ObsT, StateT]) -> None:
        super().__init__(client)
        self.client = client
        self.sessions: list[SyncClient[ActT, ObsT, StateT]] = []
        self._socket: ClientConnection | None = None
        self._one_call_at_a_time = threading.Lock()

    def connect(self) -> SyncClient[ActT, ObsT, StateT]:
        """Open the session (nothing to do if it is open); `SessionLost` if it is gone."""
        with self._one_call_at_a_time:
            self._session_socket(resetting=False)
        return self

    def disconnect(self) -> None:
        """End the session on the server and close the WebSocket; a container keeps running."""
        with self._one_call_at_a_time:
            socket, self._socket = self._socket, None
            if socket is not None and socket is self.client.tether.connection:
                self.client.tether.forget()
        if socket is not None:
            with suppress(ConnectionClosed):
                socket.send(json.dumps({"type": "close"}))
            socket.close()

    def reset(self, **kwargs: Any) -> StepResult[ObsT]:
        """Start a new episode, on a new session if the last one is gone; kwargs go to the server."""
        return self.client._parse_result(self._request({"type": "reset", "data": kwargs}))

    @overload
    def step(self, action: CallToolAction, **kwargs: Any) -> StepResult[CallToolObservation]: ...
    @overload
    def step(self, action: ListToolsAction, **kwargs: Any) -> StepResult[ListToolsObservation]: ...
    @overload
    def step(self, action: ActT, **kwargs: Any) -> StepResult[ObsT]: ...
    def step(self, action: Any, **kwargs: Any) -> StepResult[Any]:
        """Send one action and return its `StepResult`.

        OpenEnv's MCP actions are steps too, on a server whose environment declares tools:
        `ListToolsAction()` and `CallToolAction(tool_name=..., arguments={...})`, whose
        results are OpenEnv's `ListToolsObservation` and `CallToolObservation`.
        """
        return step_result(self.client, action, self._request(step_message(self.client, action)))

    def list_tools(self) -> list[Tool]:
        """The tools the environment declares (name, description, input schema)."""
        return self.step(ListToolsAction()).observation.tools

    def call_tool(self, name: str, **arguments: Any) -> StepResult[CallToolObservation]:
        """Call tool `name`, a step of this session; raises `RuntimeError` if the call fails."""
        result = self.step(CallToolAction(tool_name=name, arguments=arguments))
        error = result.observation.error
        if error is not None:
            raise RuntimeError(f"Tool {name!r} failed ({error.error_type.value}): {error.message}")
        return result

    def state(self) -> StateT:
        """The session's `State`: episode id and step count."""
        return self.client._parse_state(self._request({"type": "state"}))

    def new_session(self) -> SyncClient[ActT, ObsT, StateT]:
        """Open another session on the same server; it is closed with this one."""
        arguments = {**self.client.arguments, "base_url": self.client.url(), "provider": None}
        session = type(self.client)(**arguments).sync().connect()
        self.sessions.append(session)
        return session

    def close(self) -> None:
        """Close this session and those from `new_session()`, then stop any server the client started."""
        try:
            for session in self.sessions:
                with suppress(Exception):
                    session.close()
            self.sessions.clear()
            self.disconnect()
        finally:
            super().close()

    def __enter__(self) -> SyncClient[ActT, ObsT, StateT]:
        return self.connect()

    def _session_socket(self, resetting: bool) -> ClientConnection:
        socket = self._socket
        is_open = socket is not None and socket.state is SocketState.OPEN
        if not self.client.tether.opens_new(socket, is_open, resetting, self.client.ws_url):
            assert socket is not None
            return socket
        if socket is not None:
            threading.Thread(target=socket.close, daemon=True).start()
        self._socket = None
        ws_url = convert_to_ws_url(self.client.url()) + "/ws"
        try:
            self._socket = connect(ws_url, **connection_options(self.client.arguments, ws_url, sync=True))
        except Exception as error:
            raise connection_refused(ws_url, self.client.arguments["headers"], error) from error
        self.client.tether.bind(self._socket)
        return self._socket

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._one_call_at_a_time:
            socket = self._session_socket(resetting=message["type"] == "reset")
            timeout_s = self.client.arguments["message_timeout_s"]
            try:
                with suppress(ConnectionClosed):  # a refused session sends its error frame, then closes
                    socket.send(to_json(message).decode())
                reply = socket.recv(timeout=timeout_s, decode=False)
            except ConnectionClosed as closed:
                self._socket = None
                why = why_closed(socket.close_code, socket.close_reason)
                raise self.client.tether.lose(self.client.ws_url(), why) from closed
            except BaseException as error:
                # A late reply must never be read as the answer to the next request: drop the connection.
                self._socket = None
                threading.Thread(target=socket.close, daemon=True).start()
                if isinstance(error, TimeoutError):
                    self.client.tether.lose(self.client.ws_url(), timed_out(timeout_s))
                    raise TimeoutError(f"No reply within {timeout_s} s") from None
                self.client.tether.lose(self.client.ws_url(), CANCELLED)
                raise
            response = from_json(reply)
            if response.get("type") == "error":

                def drop() -> None:
                    self._socket = None
                    threading.Thread(target=socket.close, daemon=True).start()

                self.client.check_reply(response, drop)
        data: dict[str, Any] = response.get("data", {})
        return data


def connection_options(arguments: dict[str, Any], ws_url: str, sync: bool) -> dict[str, Any]:
    """websockets' `connect` options for a client built with OpenEnv's `arguments`."""
    return {
        "open_timeout": arguments["connect_timeout_s"],
        "max_size": int(arguments["max_message_size_mb"] * 1024 * 1024),
        "ping_interval": arguments["websocket_ping_interval_s"],
        "ping_timeout": arguments["websocket_ping_timeout_s"],
        "additional_headers": arguments["headers"],
        **({"proxy": None} if is_loopback(ws_url) else {}),
        **(DIRECT_CONNECTION if sync else {}),
    }


def connection_refused(ws_url: str, headers: dict[str, str] | None, error: Exception) -> Exception:
    """The error a failed handshake raises: `AccessDenied` for the token, else OpenEnv's `ConnectionError`."""
    denied = access_denied(ws_url, headers, error)
    return denied if denied is not None else ConnectionError(f"Failed to connect to {ws_url}: {error}")


def step_message(client: TypedEnvClient[Any, Any, Any], action: Any) -> dict[str, Any]:
    """The step message of `action`: OpenEnv's MCP actions as they are, others through the client's hook."""
    if isinstance(action, (ListToolsAction, CallToolAction)):
        return {"type": "step", "data": action.model_dump(exclude={"metadata"})}
    return {"type": "step", "data": client._step_payload(action)}


def step_result(client: TypedEnvClient[Any, Any, Any], action: Any, payload: dict[str, Any]) -> StepResult[Any]:
    """The `StepResult` of `action`'s reply `payload`."""
    if isinstance(action, (ListToolsAction, CallToolAction)):
        return tool_step_result(payload)
    return client._parse_result(payload)


class Launch(Coroutine[Any, Any, TypedEnvClient[ActT, ObsT, StateT]], Generic[ActT, ObsT, StateT]):
    """What `from_docker_image`, `from_env` and `from_hub` return: a server not started yet.

    `await` it (or `asyncio.run` it) for a connected client; `.sync()` for its
    connected `SyncClient`; or call `reset()`, `step()`, `close()`, `with`...
    on it directly, as on that synchronous client. Either way it starts one
    server, once: resolving it a second time raises `RuntimeError`.
    """

    def __init__(self, start: Callable[[], TypedEnvClient[ActT, ObsT, StateT]]) -> None:
        self._start = start
        self._started = False
        self._connecting: Coroutine[Any, Any, TypedEnvClient[ActT, ObsT, StateT]] | None = None
        self._sync_env: SyncClient[ActT, ObsT, StateT] | None = None

    def sync(self) -> SyncClient[ActT, ObsT, StateT]:
        """Start the server, connect, and return the synchronous client."""
        env = self._start_once().sync()
        try:
            env.connect()
        except BaseException:
            env.close()
            raise
        self._sync_env = env
        return env

    def reset(self, **kwargs: Any) -> StepResult[ObsT]:
        """`reset` on the synchronous client, started on first use."""
        return self._synchronous().reset(**kwargs)

    def step(self, action: ActT, **kwargs: Any) -> StepResult[ObsT]:
        """`step` on the synchronous client, started on first use."""
        return self._synchronous().step(action, **kwargs)

    def state(self) -> StateT:
        """`state` on the synchronous client, started on first use."""
        return self._synchronous().state()

    def list_tools(self) -> list[Tool]:
        """`list_tools` on the synchronous client, started on first use."""
        return self._synchronous().list_tools()

    def call_tool(self, name: str, **arguments: Any) -> StepResult[CallToolObservation]:
        """`call_tool` on the synchronous client, started on first use."""
        return self._synchronous().call_tool(name, **arguments)

    def new_session(self) -> SyncClient[ActT, ObsT, StateT]:
        """`new_session` on the synchronous client, started on first use."""
        return self._synchronous().new_session()

    def close(self) -> None:
        """Close the client and stop its server; if nothing started, discard the launch."""
        if self._sync_env is not None:
            self._sync_env.close()
        elif self._connecting is not None:
            self._connecting.close()

    def __enter__(self) -> SyncClient[ActT, ObsT, StateT]:
        return self._synchronous()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __await__(self) -> Generator[Any, None, TypedEnvClient[ActT, ObsT, StateT]]:
        return self._connection().__await__()

    def send(self, value: Any) -> Any:
        return self._connection().send(value)

    def throw(self, *args: Any) -> Any:
        return self._connection().throw(*args)

    def __repr__(self) -> str:
        return f"<Launch {'started' if self._started else 'not started'} (await it, or use it as a sync client)>"

    def _start_once(self) -> TypedEnvClient[ActT, ObsT, StateT]:
        if self._started:
            raise RuntimeError(
                "This bootstrap handle has already been resolved; call the factory again to start a new environment."
            )
        self._started = True
        return self._start()

    def _synchronous(self) -> SyncClient[ActT, ObsT, StateT]:
        return self._sync_env if self._sync_env is not None else self.sync()

    def _connection(self) -> Coroutine[Any, Any, TypedEnvClient[ActT, ObsT, StateT]]:
        if self._connecting is None:
            self._connecting = self._connect()
        return self._connecting

    async def _connect(self) -> TypedEnvClient[ActT, ObsT, StateT]:
        env = self._start_once()
        try:
            await env.connect()
        except BaseException:
            with suppress(Exception):
                await env.close()
            raise
        return env


class Pending(Awaitable[Any]):
    """A call's result in async code: awaited, or resolved synchronously on first use of one of its attributes.

    OpenEnv's client lets a call made in a running event loop without `await` be read as its
    result (`env.reset().observation`); this one does too, through the synchronous form.
    """

    def __init__(self, awaited: Callable[[], Awaitable[Any]], blocking: Callable[[], Any]) -> None:
        self.awaited, self.blocking = awaited, blocking
        self.resolved = False
        self.result: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.awaited().__await__()

    def value(self) -> Any:
        if not self.resolved:
            self.result, self.resolved = self.blocking(), True
        return self.result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.value(), name)

    def __bool__(self) -> bool:
        return bool(self.value())


def start_provider(provider: ContainerProvider | RuntimeProvider | None) -> str:
    """Start a provider that owns its source (no `base_url` given) and return its URL."""
    if isinstance(provider, ContainerProvider):
        base_url = provider.start_container()  # type: ignore[call-arg]
        provider.wait_for_ready(base_url)
        return base_url
    if isinstance(provider, RuntimeProvider):
        base_url = provider.start()
        provider.wait_for_ready()
        return base_url
    raise RuntimeError("The client has no base URL or provider.")


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine (such connections bypass any proxy, as in OpenEnv)."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


def tool_step_result(payload: dict[str, Any]) -> StepResult[Any]:
    """The `StepResult` of a `ListToolsAction` or `CallToolAction` step, from its server payload."""
    fields = payload.get("observation", {})
    kind = ListToolsObservation if "tools" in fields else CallToolObservation
    done, reward = payload.get("done", False), payload.get("reward")
    observation = kind.model_validate({**fields, "done": done, "reward": reward})
    return StepResult(observation=observation, reward=reward, done=done, metadata=payload.get("metadata"))


def raise_for_server_error(response: dict[str, Any]) -> dict[str, Any]:
    """Return `response`, or raise `RuntimeError` worded as OpenEnv's client words it."""
    if response.get("type") != "error":
        return response
    error = response.get("data", {})
    raise RuntimeError(f"Server error: {error.get('message', 'Unknown error')} (code: {error.get('code', 'UNKNOWN')})")


__all__ = ["AccessDenied", "Launch", "SessionLost", "SyncClient", "TypedEnvClient"]
