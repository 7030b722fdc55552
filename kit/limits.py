"""Bounds on what a client may send, checked before OpenEnv's handlers see it.

- HTTP request bodies larger than `max_body_bytes` get 413 before they are read.
- On `/ws`, a frame OpenEnv's handler would end the session over (a binary
  frame, JSON that is not an object, nesting too deep to decode) gets a typed
  error frame instead, and the session goes on.
- A `VALIDATION_ERROR` frame says what was invalid in its `message`, so that any
  client, OpenEnv's included, raises an error that says it.

WebSocket frames larger than the bound are refused by the server itself
(uvicorn's `ws_max_size`, set by the `server` script).
"""

from __future__ import annotations

import json

from openenv.core.env_server.types import WSErrorCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import PREFIX

_DEEP = 512  # brackets in a frame before it is worth checking how deep they nest


class ClientLimits:
    """ASGI middleware enforcing the bounds above."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, ws_path: str = "/ws"):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.ws_path = ws_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] == self.ws_path:
            await self.app(scope, _checked_frames(receive, send), _explained_errors(send))
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_body_bytes:
                await self._too_large(send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # No declared length: read up to the bound, then replay what was read.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await self._too_large(send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"Request body is larger than {self.max_body_bytes} bytes, the server's limit "
                f"({PREFIX}MAX_PAYLOAD_BYTES)"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _checked_frames(receive: Receive, send: Send) -> Receive:
    """`receive` that answers unusable frames itself and passes the rest on."""

    async def receive_checked() -> Message:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return message
            problem = frame_problem(message.get("text"))
            if problem is None:
                return message
            code, text = problem
            await send(
                {
                    "type": "websocket.send",
                    "text": json.dumps({"type": "error", "data": {"message": text, "code": code}}),
                }
            )

    return receive_checked


def _explained_errors(send: Send) -> Send:
    """`send` that adds the reasons of a `VALIDATION_ERROR` frame to its message."""

    async def send_explained(message: Message) -> None:
        text = message.get("text")
        if message["type"] == "websocket.send" and text is not None and text.startswith('{"type":"error"'):
            message = {**message, "text": explained(text)}
        await send(message)

    return send_explained


def explained(error_frame: str) -> str:
    """The error frame with each listed validation problem appended to its message."""
    frame = json.loads(error_frame)
    data = frame["data"]
    problems = [
        f"{'.'.join(str(part) for part in problem.get('loc', ())) or 'frame'}: {problem.get('msg', problem)}"
        for problem in data.get("errors", ())
        if isinstance(problem, dict)
    ]
    if not problems:
        return error_frame
    data["message"] = "; ".join([f"{data.get('message', 'Invalid message')}: {problems[0]}", *problems[1:]])
    return json.dumps(frame)


def frame_problem(text: str | None) -> tuple[str, str] | None:
    """Why OpenEnv's handler could not take this frame, or None if it can."""
    if text is None:
        return WSErrorCode.INVALID_JSON, "Binary frames are not accepted: send each message as a JSON text frame"
    starts_as_object = text.lstrip()[:1] == "{"
    if starts_as_object and text.count("[") + text.count("{") < _DEEP:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        return WSErrorCode.INVALID_JSON, "Invalid JSON: nested too deeply"
    except ValueError:
        return None  # OpenEnv answers INVALID_JSON with the decoder's message
    if not isinstance(value, dict):
        return (
            WSErrorCode.VALIDATION_ERROR,
            'A message must be a JSON object such as {"type": "step", "data": {...}}, '
            f"not a JSON {type(value).__name__}",
        )
    return None
