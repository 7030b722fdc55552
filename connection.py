"""A blocking WebSocket client connection that reads in the thread calling it.

websockets' sync client reads the socket in a background thread and hands each
message over to the caller: two thread switches per request and reply, most of
a local round trip. `CallingThreadConnection` lets the caller read its reply
itself, through the same Sans-I/O `websockets.ClientProtocol` that websockets'
clients run. It is made by websockets' own `connect(...,
create_connection=CallingThreadConnection)`, so the handshake, proxies, TLS,
redirects, frame limits and close codes stay websockets'.

While the connection is idle, a keepalive thread answers the server's pings,
sends ours (`ping_interval`, `ping_timeout`) and takes in a close from the
server, as websockets' reader thread would.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from websockets.client import ClientProtocol
from websockets.datastructures import HeadersLike
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import CloseCode, Opcode
from websockets.http11 import USER_AGENT, Response
from websockets.protocol import State
from websockets.sync.utils import Deadline

logger = logging.getLogger(__name__)

RECV_BUFSIZE = 65536
IDLE_AFTER_S = 0.25  # unused this long, the connection is looked after by its keepalive thread
DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class _NoReaderThread:
    """websockets' `connect` joins the reader thread after a failed handshake; there is none here."""

    @staticmethod
    def join(timeout: Optional[float] = None) -> None:
        return None


class CallingThreadConnection:
    """A WebSocket client connection whose `send_text`/`recv` do their I/O in the calling thread.

    Against a running Rooms server::

        from websockets.sync.client import connect

        ws = connect("ws://localhost:8000/ws", create_connection=CallingThreadConnection)
        ws.send_text('{"type": "state"}')
        ws.recv(timeout=5)  # b'{"type":"state","data":{"episode_id":"...","step_count":0}}'
        ws.close()

    One request at a time: calls from several threads are serialized.
    """

    recv_events_thread = _NoReaderThread()

    def __init__(
        self,
        sock: socket.socket,
        protocol: ClientProtocol,
        *,
        ping_interval: Optional[float] = 20,
        ping_timeout: Optional[float] = 20,
        close_timeout: Optional[float] = 10,
        max_queue: Any = None,
    ) -> None:
        sock.settimeout(None)
        self.socket = sock
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.request: Any = None
        self.response: Optional[Response] = None
        self.pending_legacy_warning = False  # set by connect(); there is no legacy behaviour to warn about
        self._io = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._tls_pending: Callable[[], int] = sock.pending if isinstance(sock, ssl.SSLSocket) else _nothing
        self._messages: deque[bytes] = deque()
        self._fragments: list[bytes] = []
        self._last_used = self._last_received = time.monotonic()
        self._ping_payload = b""
        self._ping_sent_at: Optional[float] = None
        self._close_deadline: Optional[float] = None
        self._connection_exc: Optional[BaseException] = None
        self._stopped = threading.Event()

    # --- what websockets' connect() calls -------------------------------------------------

    def handshake(
        self,
        additional_headers: Optional[HeadersLike] = None,
        user_agent_header: Optional[str] = USER_AGENT,
        timeout: Optional[float] = None,
    ) -> None:
        """Send the opening request and read the server's response."""
        self.request = self.protocol.connect()
        if additional_headers is not None:
            self.request.headers.update(additional_headers)
        if user_agent_header is not None:
            self.request.headers.setdefault("User-Agent", user_agent_header)
        deadline = Deadline(timeout)
        with self._io:
            self.protocol.send_request(self.request)
            self._send_pending()
            while self.response is None and self.protocol.handshake_exc is None:
                remaining = deadline.timeout(raise_if_elapsed=False)
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("timed out while waiting for handshake response")
                if self._readable(remaining):
                    self._receive()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    def start_keepalive(self) -> None:
        """Start the thread that looks after the connection while it is idle."""
        threading.Thread(target=self._look_after_idle, name="rooms-ws-keepalive", daemon=True).start()

    def close_socket(self) -> None:
        """Close the socket without a closing handshake."""
        self._stopped.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the keepalive thread if it waits on the socket
        except OSError:
            pass
        self._selector.close()
        self.socket.close()

    # --- use -----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The protocol state: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self.protocol.state

    def is_open(self) -> bool:
        """Whether the connection is open, once what the server already sent (a close, say) is read."""
        with self._io:
            if self.protocol.state is State.OPEN and self._readable(0):
                self._receive()
            return self.protocol.state is State.OPEN

    def send_text(self, text: str) -> None:
        """Send one text message; `ConnectionClosed` if the connection is closing or broken."""
        with self._io:
            self._last_used = time.monotonic()
            if self.protocol.state is not State.OPEN:
                raise self._closed_exception()
            self.protocol.send_text(text.encode())
            try:
                self._send_pending()
            except OSError as exc:
                # Whatever the server sent before it went away can still be read.
                self._connection_exc = exc
                raise self._closed_exception() from exc

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next message, as bytes.

        Raises `TimeoutError` when none arrives within `timeout` seconds, and
        `ConnectionClosed` once the connection is closed and no message is left.
        """
        deadline = Deadline(timeout)
        with self._io:
            try:
                while not self._messages:
                    if self.protocol.state is State.CLOSED:
                        raise self._closed_exception()
                    if self._readable(self._wait_time(deadline)):
                        self._receive()
                    self._keep_alive()
                return self._messages.popleft()
            finally:
                self._last_used = time.monotonic()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: send a close frame and wait up to `close_timeout` for the server."""
        with self._io:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._close_deadline = _deadline(self.close_timeout)
                try:
                    self._send_pending()
                except OSError as exc:
                    self._abort(exc)
            while self.protocol.state is not State.CLOSED:
                wait = _remaining(self._close_deadline)
                if wait is not None and wait <= 0:
                    self._abort(TimeoutError("timed out while closing connection"))
                elif self._readable(wait):
                    self._receive()
        self._stopped.set()

    # --- I/O ----------------------------------------------------------------------------------

    def _readable(self, timeout: Optional[float]) -> bool:
        return bool(self._tls_pending() or self._selector.select(timeout))

    def _receive(self) -> None:
        """Read what the socket has into the protocol, send what it answers, take in its events."""
        try:
            data = self.socket.recv(RECV_BUFSIZE)
        except ssl.SSLWantReadError:
            return  # a partial TLS record; the rest is on its way
        except OSError as exc:
            self._connection_exc = exc
            data = b""
        if data:
            self._last_received = time.monotonic()
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        try:
            self._send_pending()
        except OSError as exc:
            self._abort(exc)
        for event in self.protocol.events_received():
            self._take(event)
        if self.protocol.close_expected() and self._close_deadline is None:
            self._close_deadline = _deadline(self.close_timeout)
        if self.protocol.state is State.CLOSED:
            self.close_socket()

    def _take(self, event: Any) -> None:
        if isinstance(event, Response):
            self.response = event
        elif event.opcode in DATA_OPCODES:
            if event.fin and not self._fragments:
                self._messages.append(bytes(event.data))  # websockets' parser gives a bytearray
            else:
                self._fragments.append(event.data)
                if event.fin:
                    self._messages.append(b"".join(self._fragments))
                    self._fragments.clear()
        elif event.opcode is Opcode.PONG and event.data == self._ping_payload:
            self._ping_sent_at = None
        # Pings and closes are answered by the protocol itself.

    def _send_pending(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.socket.sendall(data)
            else:
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _abort(self, exc: BaseException) -> None:
        """Give the connection up without waiting for the server any longer."""
        if self._connection_exc is None:
            self._connection_exc = exc
        self.protocol.receive_eof()
        self.protocol.data_to_send()  # the end of stream it asks for: the socket closes right away
        self.close_socket()

    def _closed_exception(self) -> ConnectionClosed:
        if self.protocol.state is State.CLOSED:
            exc = self.protocol.close_exc
        else:
            exc = ConnectionClosedError(
                self.protocol.close_rcvd, self.protocol.close_sent, self.protocol.close_rcvd_then_sent
            )
        if self._connection_exc is not None:
            exc.__cause__ = self._connection_exc
        return exc

    # --- keepalive ----------------------------------------------------------------------------

    def _next_keepalive(self) -> Optional[float]:
        """When `_keep_alive` has something to do next (monotonic time), if ever."""
        if self.protocol.state is State.CLOSING:
            return self._close_deadline
        if self.protocol.state is not State.OPEN or self.ping_interval is None:
            return None
        if self._ping_sent_at is None:
            return self._last_received + self.ping_interval
        return None if self.ping_timeout is None else self._ping_sent_at + self.ping_timeout

    def _wait_time(self, deadline: Deadline) -> Optional[float]:
        """How long the next wait may last: to the caller's deadline or the next keepalive action."""
        wait = deadline.timeout()  # raises TimeoutError once the deadline has passed
        next_keepalive = self._next_keepalive()
        if next_keepalive is None:
            return wait
        until_keepalive = max(0.0, next_keepalive - time.monotonic())
        return until_keepalive if wait is None else min(wait, until_keepalive)

    def _keep_alive(self) -> None:
        """Send a ping when the server has been silent `ping_interval`; fail when its pong is late."""
        due = self._next_keepalive()
        if due is None or time.monotonic() < due:
            return
        if self.protocol.state is State.CLOSING:
            self._abort(TimeoutError("timed out while closing connection"))
        elif self._ping_sent_at is None:
            self._ping_payload = os.urandom(4)
            self._ping_sent_at = time.monotonic()
            self.protocol.send_ping(self._ping_payload)
            try:
                self._send_pending()
            except OSError as exc:
                self._abort(exc)
        else:
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._abort(TimeoutError("keepalive ping timeout"))

    def _look_after_idle(self) -> None:
        """Keepalive thread: serve the socket while no call is using the connection."""
        while not self._stopped.is_set():
            idle_in = self._last_used + IDLE_AFTER_S - time.monotonic()
            if idle_in > 0 or self._io.locked():
                self._stopped.wait(idle_in if idle_in > 0 else IDLE_AFTER_S)
                continue
            next_keepalive = self._next_keepalive()
            try:
                # The socket only: its TLS buffer is the calling thread's until the lock is taken.
                self._selector.select(None if next_keepalive is None else max(0.0, next_keepalive - time.monotonic()))
            except (OSError, ValueError):
                return  # closed meanwhile
            if not self._io.acquire(blocking=False):
                continue  # a call started; it reads what came
            try:
                if self.protocol.state is State.CLOSED or self._stopped.is_set():
                    return
                if time.monotonic() - self._last_used >= IDLE_AFTER_S:
                    if self._readable(0):
                        self._receive()
                    self._keep_alive()
            except Exception as exc:  # noqa: BLE001 - a broken socket ends the connection, not the thread silently
                logger.debug("keepalive gave the connection up", exc_info=True)
                self._abort(exc)
                return
            finally:
                self._io.release()


def _nothing() -> int:
    return 0


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


__all__ = ["CallingThreadConnection"]
