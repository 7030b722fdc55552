"""`RoomsEnv`: the typed client for a Rooms server, for sync and async code alike.

In async code (an event loop is running) `RoomsEnv` is openenv's `EnvClient`,
unchanged. In plain synchronous code, such as a rollout loop calling
`env.step(...)`, it talks to the server over a blocking WebSocket read in the
calling thread (`rooms.connection`) instead of handing every call to a
background event loop: same messages, same results, same exceptions, a fraction
of the latency.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
from collections.abc import Coroutine
from typing import Any, Awaitable, Callable, Dict, Optional

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient, _is_localhost_ws_url
from openenv.core.env_server.types import State
from openenv.core.sync_client import SyncEnvClient
from pydantic_core import from_json
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from rooms.connection import CallingThreadConnection
from rooms.models import RoomsAction, RoomsObservation

# Options for a connection held open without `with`: websockets >= 17 warns unless asked for directly.
DIRECT_CONNECTION = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


class RoomsEnv(EnvClient[RoomsAction, RoomsObservation, State]):
    """Client for a Rooms server; one instance is one session on the server.

    >>> with RoomsEnv(base_url="http://localhost:8000") as env:    # doctest: +SKIP
    ...     env.reset()
    ...     result = env.step(RoomsAction(message="Hi"))
    ...     result.reward
    0.2

    The same calls work with `async with` / `await`, on `.sync()`, and on the
    clients returned by `from_docker_image(...)` and `from_hub(...)`.
    """

    def _step_payload(self, action: RoomsAction) -> Dict[str, Any]:
        """The `data` of a step message: the action's fields."""
        return action.model_dump(exclude_defaults=True)

    def _parse_result(self, payload: Dict[str, Any]) -> StepResult[RoomsObservation]:
        """Turn a server observation payload into a `StepResult`."""
        observation = RoomsObservation(
            **payload.get("observation", {}),
            reward=payload.get("reward"),
            done=payload.get("done", False),
        )
        return StepResult(
            observation=observation,
            reward=observation.reward,
            done=observation.done,
            metadata=observation.metadata,
        )

    def _parse_state(self, payload: Dict[str, Any]) -> State:
        """Turn a server state payload into a `State`."""
        return State.model_validate(payload)

    def sync(self) -> "RoomsSyncEnv":
        """A synchronous view of this client, sharing its session."""
        if self._sync_client is None:
            self._sync_client = RoomsSyncEnv(self)
        return self._sync_client

    async def _send_and_receive(self, message: Dict[str, Any]) -> Dict[str, Any]:
        try:
            await self._send(message)
        except ConnectionClosed:
            # A refused session sends an error frame, then closes; read the frame.
            pass
        return raise_for_server_error(await self._receive())

    async def _receive(self) -> Dict[str, Any]:
        """The reply on the socket that carried the request, as openenv reads it, with less overhead.

        Before Python 3.12, `asyncio.wait_for` (which openenv uses) starts a task per
        call; `asyncio.timeout` does not. Replies are parsed by pydantic's JSON parser.
        As in openenv, a socket given up on is dropped and closed in the background,
        so a late reply is never read as the answer to the next request.
        """
        ws = self._ws
        assert ws is not None
        try:
            raw = await _within(self._message_timeout, ws.recv(decode=False))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._ws = None
            self._ws_loop = None
            self._schedule_socket_close(ws)
            raise
        return from_json(raw)

    def _blocking(self) -> Optional["RoomsSyncEnv"]:
        """The sync client when called from synchronous code, else None.

        With an event loop running, openenv's own async behaviour applies. As in
        openenv, a client used with `await` may be handed over to sync code.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._execution_mode == "async":
                self._execution_mode = "sync"
            return self.sync()
        return None

    def connect(self) -> Any:
        """Open the session (awaitable in async code)."""
        blocking = self._blocking()
        return blocking.connect() if blocking else super().connect()

    def disconnect(self) -> Any:
        """Close the WebSocket, keeping any container running."""
        blocking = self._blocking()
        return blocking.disconnect() if blocking else super().disconnect()

    def reset(self, **kwargs: Any) -> Any:
        """Start a new episode; kwargs (`seed`, `episode_id`) go to the server."""
        blocking = self._blocking()
        return blocking.reset(**kwargs) if blocking else super().reset(**kwargs)

    def step(self, action: RoomsAction, **kwargs: Any) -> Any:
        """Send one action and return its `StepResult`."""
        blocking = self._blocking()
        return blocking.step(action, **kwargs) if blocking else super().step(action, **kwargs)

    def state(self) -> Any:
        """The session's `State` (episode id and step count)."""
        blocking = self._blocking()
        return blocking.state() if blocking else super().state()

    def close(self) -> Any:
        """Close the session and stop any container or process this client started."""
        blocking = self._blocking()
        return blocking.close() if blocking else super().close()

    def __enter__(self) -> "RoomsEnv":
        self._blocking_anyway().connect()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._blocking_anyway().close()

    def _blocking_anyway(self) -> "RoomsSyncEnv":
        if self._execution_mode == "async":
            self._claim_execution_mode("sync")  # raises, as openenv does
        return self.sync()

    @classmethod
    def from_docker_image(cls, image: str, provider: Any = None, **kwargs: Any) -> "RoomsLaunch":
        """Start a container from `image` and connect to it.

        Use the result directly in sync code, `await` it in async code, or chain
        `.sync()`. `close()` stops the container.
        """
        return RoomsLaunch(
            super().from_docker_image(image, provider, **kwargs),
            lambda: cls._bootstrap_container(image, provider, **kwargs),
        )

    @classmethod
    def from_hub(
        cls,
        repo_id: str,
        *,
        use_docker: bool = True,
        provider: Any = None,
        **provider_kwargs: Any,
    ) -> "RoomsLaunch":
        """Run the Hugging Face Space `repo_id` locally and connect to it.

        By default its image is pulled from the Space's registry and run in
        Docker; `use_docker=False` runs it with uv instead, from the Space's git
        repository or from `project_path=` (a local checkout). Same use as
        `from_docker_image`.
        """
        options = dict(use_docker=use_docker, provider=provider, **provider_kwargs)
        return RoomsLaunch(
            super().from_env(repo_id, **options),
            lambda: cls._bootstrap_env(repo_id, **options),
        )


async def _within(seconds: float, reply: Awaitable[bytes]) -> bytes:
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await reply
    return await asyncio.wait_for(reply, seconds)


def raise_for_server_error(response: Dict[str, Any]) -> Dict[str, Any]:
    """Return `response`, or raise `RuntimeError` saying what the server refused and why.

    The text starts as openenv's client words it, `Server error: <message>
    (code: <code>)`, followed by each validation problem the server listed.
    """
    if response.get("type") != "error":
        return response
    error = response.get("data", {})
    text = f"Server error: {error.get('message', 'Unknown error')} (code: {error.get('code', 'UNKNOWN')})"
    problems = [
        f"{'.'.join(str(part) for part in problem.get('loc', ())) or 'frame'}: {problem.get('msg', problem)}"
        for problem in error.get("errors", ())
        if isinstance(problem, dict)
    ]
    raise RuntimeError("; ".join([text, *problems]))


class RoomsSyncEnv(SyncEnvClient[RoomsAction, RoomsObservation, State]):
    """The synchronous form of `RoomsEnv`, talking over a blocking WebSocket.

    Obtained from `RoomsEnv(...).sync()`, or implicitly by calling a
    `RoomsEnv` from synchronous code. Protocol, results and exceptions are
    those of openenv's client: `ConnectionError` when the server cannot be
    reached, `RuntimeError("Server error: ...")` for an error frame,
    `TimeoutError` after `message_timeout_s`, and a transparent reconnect on the
    next call when the server closed the socket.
    """

    def __init__(self, async_client: RoomsEnv):
        super().__init__(async_client)
        self._ws: Optional[CallingThreadConnection] = None
        self._closing: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def connect(self) -> "RoomsSyncEnv":
        """Open the session (idempotent)."""
        with self._lock:
            self._ensure_connected()
        return self

    def disconnect(self) -> None:
        """Tell the server the session ends, then close the WebSocket."""
        self._claim_sync_mode()
        with self._lock:
            ws, self._ws = self._ws, None
            if ws is not None:
                _graceful_close(ws)

    def reset(self, **kwargs: Any) -> StepResult[RoomsObservation]:
        """Start a new episode."""
        response = self._send_and_receive({"type": "reset", "data": kwargs})
        return self._async._parse_result(response.get("data", {}))

    def step(self, action: RoomsAction, **kwargs: Any) -> StepResult[RoomsObservation]:
        """Send one action."""
        response = self._send_and_receive({"type": "step", "data": self._async._step_payload(action)})
        return self._async._parse_result(response.get("data", {}))

    def state(self) -> State:
        """The session's state."""
        response = self._send_and_receive({"type": "state"})
        return self._async._parse_state(response.get("data", {}))

    def close(self) -> None:
        """Close the session, then let openenv release children and any provider."""
        try:
            self.disconnect()
            self._join_closing()
            self._run(self._async._close_async())
        finally:
            self._stop_loop()

    def new_session(self) -> "RoomsSyncEnv":
        """Open another session on the same server, closed with this one."""
        child = self._async._create_session_client().sync()
        child.connect()
        self._child_clients.append(child)
        return child

    def _ensure_connected(self) -> CallingThreadConnection:
        self._claim_sync_mode()
        if self._ws is not None and self._ws.is_open():
            return self._ws
        self._ws = None
        # A socket dropped after a timeout frees its server slot when its close finishes.
        self._join_closing()
        client = self._async
        # An async connection made on another (now finished) event loop cannot be reused.
        client._ws = None
        client._ws_loop = None
        try:
            client._start_provider_if_needed()
        except Exception:
            if not client._provider_cleanup_pending:
                self._close_quietly()
            raise
        ws_url = client._ws_url
        try:
            self._ws = connect(
                ws_url,
                open_timeout=client._connect_timeout,
                max_size=client._max_message_size,
                ping_interval=client._websocket_ping_interval_s,
                ping_timeout=client._websocket_ping_timeout_s,
                additional_headers=client._headers,
                create_connection=CallingThreadConnection,
                **DIRECT_CONNECTION,
                **({"proxy": None} if _is_localhost_ws_url(ws_url) else {}),
            )
        except Exception as e:
            self._close_quietly()
            raise ConnectionError(f"Failed to connect to {ws_url}: {e}") from e
        return self._ws

    def _send_and_receive(self, message: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            ws = self._ensure_connected()
            try:
                ws.send_text(json.dumps(message))
            except ConnectionClosed:
                # A refused session sends an error frame, then closes; read the frame.
                pass
            try:
                raw = ws.recv(timeout=self._async._message_timeout)
            except TimeoutError:
                # A late reply must not be read as the answer to the next request.
                self._ws = None
                self._closing = threading.Thread(target=_quiet_close, args=(ws,), daemon=True)
                self._closing.start()
                raise asyncio.TimeoutError() from None
        # pydantic's JSON parser reads the reply bytes as json.loads would, in a third of the time.
        return raise_for_server_error(from_json(raw))

    def _join_closing(self) -> None:
        if self._closing is not None:
            self._closing.join()
            self._closing = None

    def _close_quietly(self) -> None:
        try:
            self._run(self._async._close_async())
        except Exception:
            pass


def _graceful_close(ws: CallingThreadConnection) -> None:
    try:
        ws.send_text(json.dumps({"type": "close"}))
    except Exception:
        pass
    _quiet_close(ws)


def _quiet_close(ws: CallingThreadConnection) -> None:
    try:
        ws.close()
    except Exception:
        pass


class RoomsLaunch(Coroutine):
    """What `from_docker_image` and `from_hub` return: a client not yet started.

    - In sync code, use it as the client: the first call starts the container
      (or process) and connects; `close()` stops it.
    - In async code, `await` it for a connected `RoomsEnv`.
    - `.sync()` starts it and returns the synchronous client.
    """

    def __init__(self, launch_async: Coroutine, build_client: Callable[[], RoomsEnv]):
        self._launch_async = launch_async
        self._build_client = build_client
        self._client: Optional[RoomsEnv] = None

    def _started(self) -> RoomsEnv:
        if self._client is None:
            client = self._build_client()
            try:
                client.sync().connect()
            except Exception:
                client._stop_provider_best_effort()
                raise
            self._client = client
        return self._client

    def sync(self) -> RoomsSyncEnv:
        """Start and connect now; return the synchronous client."""
        return self._started().sync()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._started(), name)

    def __enter__(self) -> RoomsEnv:
        return self._started().__enter__()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._started().__exit__(exc_type, exc_val, exc_tb)

    def __await__(self):
        return self._launch_async.__await__()

    def send(self, value: Any) -> Any:
        return self._launch_async.send(value)

    def throw(self, *args: Any) -> Any:
        return self._launch_async.throw(*args)

    def close(self) -> Any:
        """Stop what was started; if nothing was, discard the pending launch."""
        if self._client is not None:
            return self._client.close()
        return self._launch_async.close()

    def __repr__(self) -> str:
        state = "started" if self._client is not None else "not started"
        return f"<RoomsLaunch {state} (use it, await it, or call .sync())>"


__all__ = ["RoomsEnv", "RoomsLaunch", "RoomsSyncEnv"]
