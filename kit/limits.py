"""Bounds on what a client may send, checked before anything is parsed into Python objects.

- HTTP request bodies larger than `max_body_bytes` get 413 before they are read; a JSON
  route's body that is not `application/json` gets 415 (so that a page on another site
  cannot send one as a simple request); a JSON body nested deeper than `max_depth`, or with
  more than `max_items` elements, gets 400.
- On `/ws` (and OpenEnv's MCP WebSocket), a frame the handler would end the session over
  (a binary frame, JSON that is not an object) or one past the JSON bounds gets a typed
  error frame instead, and the session goes on.
- Error replies never quote the input back: OpenEnv's validation errors carry each invalid
  value (`input`), which is dropped, and every message is cut to `QUOTED_CHARACTERS`. A
  `VALIDATION_ERROR` frame says what was invalid in its `message`, so that any client,
  OpenEnv's included, raises an error that says it.

The JSON bounds cost a few string scans in C (`str.count`, one regular expression), so a
refused request costs about what reading its bytes does. WebSocket frames larger than the
bound are refused by the server itself (uvicorn's `ws_max_size`, set by the `server` command).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from openenv.core.env_server.types import WSErrorCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import PREFIX

if TYPE_CHECKING:
    from .metrics import Metrics

QUOTED_CHARACTERS = 200  # of any client-supplied text an error reply or log line repeats
JSON_ROUTES = frozenset({"/reset", "/step", "/mcp"})
# A JSON string (escapes included), matched in one pass: what is inside a string is no structure.
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
BRACKETS = re.compile(r"[^\[\]{}]+")
DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
WS_ERROR_PREFIX = '{"type":"error"'


class JsonBounds:
    """How deep and how large a JSON text may be, checked without parsing it."""

    def __init__(self, max_depth: int, max_items: int) -> None:
        self.max_depth = max_depth
        self.max_items = max_items
        self.always_within = min(max_depth, max_items)  # a text this short has no more brackets or commas
        self.settings = f"{PREFIX}MAX_JSON_DEPTH={max_depth}, {PREFIX}MAX_JSON_ITEMS={max_items}"

    def problem(self, text: str) -> str | None:
        """Why `text` is past the bounds, or None. Counts every bracket and comma, strings' too,
        first: an ordinary message is within the bounds however they are counted."""
        if len(text) <= self.always_within:
            return None
        opened = text.count("[") + text.count("{")
        if opened <= self.max_depth and opened + text.count(",") <= self.max_items:
            return None
        structure = JSON_STRING.sub('""', text)
        opened = structure.count("[") + structure.count("{")
        if opened + structure.count(",") > self.max_items:
            return f"JSON with more than {self.max_items} elements is not accepted ({self.settings})"
        if opened > self.max_depth and nesting(BRACKETS.sub("", structure)) > self.max_depth:
            return f"Invalid JSON: nested too deeply, more than {self.max_depth} levels ({self.settings})"
        return None


def nesting(brackets: str) -> int:
    """The deepest nesting of a string of brackets."""
    return max(accumulate(DEPTH_STEP[c] for c in brackets), default=0)


class ClientLimits:
    """ASGI middleware enforcing the bounds above."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        bounds: JsonBounds,
        ws_paths: Iterable[str] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.bounds = bounds
        self.ws_paths = frozenset(ws_paths)
        self.too_large = (
            f"Request body is larger than {max_body_bytes} bytes, the server's limit ({PREFIX}MAX_PAYLOAD_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] in self.ws_paths:
            await self.app(scope, self.checked_frames(receive, send, scope), explained_errors(send))
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            self.refused(scope)
            await refuse(send, 413, self.too_large)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        body = await read_bounded(receive, self.max_body_bytes)
        if body is None:
            self.refused(scope)
            await refuse(send, 413, self.too_large)
            return
        problem = self.body_problem(scope["path"], headers.get(b"content-type", b""), body)
        if problem is not None:
            self.refused(scope)
            await refuse(send, *problem)
            return
        await self.app(scope, replay(body, receive), quoting_little(send))

    def refused(self, scope: Scope) -> None:
        if self.metrics is not None:
            self.metrics.refused_request(scope, "payload")

    def body_problem(self, path: str, content_type: bytes, body: bytes) -> tuple[int, str] | None:
        """The status and reason a body is refused with, or None."""
        is_json = content_type.split(b";")[0].strip().lower() == b"application/json"
        if path in JSON_ROUTES and body and not is_json:
            return 415, "This route takes a JSON body: send it with 'Content-Type: application/json'"
        if is_json:
            problem = self.bounds.problem(body.decode("utf-8", "replace"))
            if problem is not None:
                return 400, problem
        return None

    def checked_frames(self, receive: Receive, send: Send, scope: Scope | None = None) -> Receive:
        """`receive` that answers unusable frames itself and passes the rest on."""

        async def receive_checked() -> Message:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                problem = self.frame_problem(message.get("text"))
                if problem is None:
                    return message
                code, text = problem
                if self.metrics is not None and scope is not None:
                    self.metrics.refused_request(scope, "payload")
                frame = {"type": "error", "data": {"message": text, "code": code}}
                await send({"type": "websocket.send", "text": json.dumps(frame)})

        return receive_checked

    def frame_problem(self, text: str | None) -> tuple[str, str] | None:
        """Why the handler could not take this frame, or None if it can."""
        if text is None:
            return WSErrorCode.INVALID_JSON, "Binary frames are not accepted: send each message as a JSON text frame"
        problem = self.bounds.problem(text)
        if problem is not None:
            return (WSErrorCode.INVALID_JSON if "nested" in problem else WSErrorCode.VALIDATION_ERROR), problem
        if text[:1] == "{" or text.lstrip()[:1] == "{":
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None  # OpenEnv answers INVALID_JSON with the decoder's message
        return (
            WSErrorCode.VALIDATION_ERROR,
            'A message must be a JSON object such as {"type": "step", "data": {...}}, '
            f"not a JSON {type(value).__name__}",
        )


async def read_bounded(receive: Receive, limit: int) -> bytes | None:
    """The request's body, or None once it passes `limit` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands `body` on once, then waits on the connection (for its disconnect)."""
    replayed = False

    async def replayed_receive() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed_receive


def quoting_little(send: Send) -> Send:
    """`send` whose JSON error responses (4xx) lose the input values they quote."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def send_quoting_little(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = without_quoted_input(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return send_quoting_little


def without_quoted_input(body: bytes) -> bytes:
    """An error body with the input values it repeats dropped and its messages cut short."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(short(data)).encode()


def short(value: Any) -> Any:
    """`value` (an error's JSON) without `input` entries, with every string cut to `QUOTED_CHARACTERS`."""
    if isinstance(value, dict):
        return {key: short(item) for key, item in value.items() if key not in ("input", "ctx", "url")}
    if isinstance(value, list):
        return [short(item) for item in value]
    if isinstance(value, str) and len(value) > QUOTED_CHARACTERS:
        return value[:QUOTED_CHARACTERS] + f"... ({len(value)} characters)"
    return value


def explained_errors(send: Send) -> Send:
    """`send` that adds the reasons of a `VALIDATION_ERROR` frame to its message and drops the input it quotes."""

    async def send_explained(message: Message) -> None:
        text = message.get("text")
        if message["type"] == "websocket.send" and text is not None and text.startswith(WS_ERROR_PREFIX):
            message = {**message, "text": explained(text)}
        await send(message)

    return send_explained


def explained(error_frame: str) -> str:
    """The error frame with each listed validation problem appended to its message, and no input quoted."""
    frame = json.loads(error_frame)
    data = frame["data"]
    problems = [
        f"{'.'.join(str(part) for part in problem.get('loc', ())) or 'frame'}: {problem.get('msg', problem)}"
        for problem in data.get("errors", ())
        if isinstance(problem, dict)
    ]
    if problems:
        data["message"] = "; ".join([f"{data.get('message', 'Invalid message')}: {problems[0]}", *problems[1:]])
    return json.dumps(short(frame))


async def refuse(send: Send, status: int, reason: str) -> None:
    """Answer an HTTP request with `status` and a JSON `detail`."""
    body = json.dumps({"detail": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ClientLimits", "JsonBounds", "short"]
