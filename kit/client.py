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
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager, suppress
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
from openenv.core.env_server.types import Action, Observation, State
from openenv.core.sync_client import SyncEnvClient
from openenv.core.utils import convert_to_ws_url, hf_space_subdomain
from pydantic_core import from_json
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State as SocketState
from websockets.sync.client import ClientConnection, connect

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


class TypedEnvClient(EnvClient[ActT, ObsT, StateT]):
    """OpenEnv's `EnvClient` with `.sync()` and launch handles; one instance is one session.

    Takes OpenEnv's `EnvClient` arguments (`base_url`, `connect_timeout_s`,
    `message_timeout_s`, `headers`, ...). In async code, `await` its methods or
    use `async with`; in sync code, use `.sync()` (or the client directly, which
    goes through OpenEnv's own sync wrapper).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arguments = ENV_CLIENT_ARGUMENTS.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        #: The constructor's arguments, defaults included: `.sync()` connects with them.
        self.arguments: dict[str, Any] = {k: v for k, v in arguments.arguments.items() if k != "self"}
        self.sync_client: SyncClient[ActT, ObsT, StateT] | None = None

    def connect(self) -> Any:
        """Open the session; `AccessDenied` if the server refuses the token, or its absence."""
        return self.access_explained(super().connect)

    def reset(self, **kwargs: Any) -> Any:
        """Start a new episode (opening the session first if need be)."""
        return self.access_explained(partial(super().reset, **kwargs))

    def step(self, action: ActT, **kwargs: Any) -> Any:
        """Send one action (opening the session first if need be)."""
        return self.access_explained(partial(super().step, action, **kwargs))

    def state(self) -> Any:
        """The session's `State` (opening the session first if need be)."""
        return self.access_explained(super().state)

    def access_explained(self, call: Callable[[], Any]) -> Any:
        """`call()`, whose refused handshake raises `AccessDenied`, now or when its result is awaited."""
        with self.explaining_refusal():
            result = call()
        if inspect.isawaitable(result):
            return Explained(result, self.explaining_refusal)
        return result

    @contextmanager
    def explaining_refusal(self) -> Iterator[None]:
        """Turn OpenEnv's `ConnectionError` for a handshake refused over the token into `AccessDenied`."""
        try:
            yield
        except ConnectionError as error:
            denied = access_denied(convert_to_ws_url(self.base_url or "") + "/ws", self.arguments["headers"], error)
            if denied is None:
                raise
            raise denied from error

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
    error: ...")` for an error frame, `TimeoutError` after `message_timeout_s`,
    and a new session on the next call once the server has closed the socket.
    A session lost while a call waits for its reply (the server died) raises
    `ConnectionError` too, where OpenEnv's raises websockets' `ConnectionClosedError`.
    `websockets` answers the server's pings between calls, in its own thread.
    """

    def __init__(self, client: TypedEnvClient[ActT, ObsT, StateT]) -> None:
        super().__init__(client)
        self.client = client
        self.server_url: str | None = client.base_url
        self.sessions: list[SyncClient[ActT, ObsT, StateT]] = []
        self._socket: ClientConnection | None = None
        self._one_call_at_a_time = threading.Lock()

    def connect(self) -> SyncClient[ActT, ObsT, StateT]:
        """Open the session (nothing to do if it is open)."""
        with self._one_call_at_a_time:
            self._open_socket()
        return self

    def disconnect(self) -> None:
        """End the session on the server and close the WebSocket; a container keeps running."""
        with self._one_call_at_a_time:
            socket, self._socket = self._socket, None
        if socket is not None:
            with suppress(ConnectionClosed):
                socket.send(json.dumps({"type": "close"}))
            socket.close()

    def reset(self, **kwargs: Any) -> StepResult[ObsT]:
        """Start a new episode; `seed`, `episode_id` and other kwargs go to the server."""
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
        if isinstance(action, (ListToolsAction, CallToolAction)):
            return tool_step_result(self._request({"type": "step", "data": action.model_dump(exclude={"metadata"})}))
        return self.client._parse_result(self._request({"type": "step", "data": self.client._step_payload(action)}))

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
        arguments = {**self.client.arguments, "base_url": self._url(), "provider": None}
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

    def _url(self) -> str:
        if self.server_url is None:
            self.server_url = start_provider(self.client.arguments["provider"])
        return self.server_url

    def _open_socket(self) -> ClientConnection:
        if self._socket is not None and self._socket.state is SocketState.OPEN:
            return self._socket
        self._socket = None
        arguments = self.client.arguments
        ws_url = convert_to_ws_url(self._url()) + "/ws"
        options: dict[str, Any] = {
            "open_timeout": arguments["connect_timeout_s"],
            "max_size": int(arguments["max_message_size_mb"] * 1024 * 1024),
            "ping_interval": arguments["websocket_ping_interval_s"],
            "ping_timeout": arguments["websocket_ping_timeout_s"],
            "additional_headers": arguments["headers"],
            **({"proxy": None} if is_loopback(ws_url) else {}),
            **DIRECT_CONNECTION,
        }
        try:
            self._socket = connect(ws_url, **options)
        except Exception as error:
            denied = access_denied(ws_url, arguments["headers"], error)
            if denied is not None:
                raise denied from error
            raise ConnectionError(f"Failed to connect to {ws_url}: {error}") from error
        return self._socket

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._one_call_at_a_time:
            socket = self._open_socket()
            with suppress(ConnectionClosed):  # a refused session sends its error frame, then closes
                socket.send(json.dumps(message))
            try:
                reply = socket.recv(timeout=self.client.arguments["message_timeout_s"], decode=False)
            except ConnectionClosed as closed:
                self._socket = None
                raise ConnectionError(f"The server closed the session before replying: {closed}") from closed
            except TimeoutError:
                # A late reply must never be read as the answer to the next request.
                self._socket = None
                threading.Thread(target=socket.close, daemon=True).start()
                raise asyncio.TimeoutError(f"No reply within {self.client.arguments['message_timeout_s']} s") from None
        data: dict[str, Any] = raise_for_server_error(from_json(reply)).get("data", {})
        return data


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


class Explained(Awaitable[Any]):
    """An OpenEnv client call's pending result, whose refused handshake raises `AccessDenied`.

    Awaited, or resolved synchronously as OpenEnv lets its first call in a running
    event loop be (by reading one of its attributes).
    """

    def __init__(self, pending: Awaitable[Any], explaining: Callable[[], Any]) -> None:
        self.pending = pending
        self.explaining = explaining

    def __await__(self) -> Generator[Any, None, Any]:
        return self.resolved().__await__()

    async def resolved(self) -> Any:
        with self.explaining():
            return await self.pending

    def __getattr__(self, name: str) -> Any:
        with self.explaining():
            return getattr(self.pending, name)

    def __bool__(self) -> bool:
        with self.explaining():
            return bool(self.pending)


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


__all__ = ["AccessDenied", "Launch", "SyncClient", "TypedEnvClient"]
