"""Who may use the server: the access token, and which web pages may open WebSocket sessions.

With a token set (`<PREFIX>API_TOKEN`, see `settings.py`), every route but `/health`
wants `Authorization: Bearer <token>`, or HTTP Basic credentials whose password is
the token: a browser cannot add a header to a page load, but it asks for Basic
credentials when a 401 offers them and sends them with every request to the page's
server afterwards, so `/web` works for whoever types the token. A WebSocket without
the token is refused at the handshake with HTTP 401, before the app sees it: it
takes no session slot.

The token is a static bearer token, not OAuth: an MCP client that meets a 401 looks for
OAuth metadata (RFC 9728's `/.well-known/oauth-protected-resource`, then RFC 8414's
`/.well-known/oauth-authorization-server` and OpenID's configuration) and may try dynamic
client registration at `/register`. Those paths answer 404 without asking for the token,
so discovery finds no authorization server and the client reports the plain 401 (whose
`WWW-Authenticate: Bearer` challenge says what to send) instead of starting an OAuth flow
it could not finish.

Browsers let any page open a WebSocket to any address (the same-origin policy does
not cover the handshake), so a handshake carrying an `Origin` other than the
server's own is refused with 403 unless `<PREFIX>ALLOWED_ORIGINS` lists it. Python
clients send no `Origin` and are not concerned.
"""

from __future__ import annotations

import binascii
import hmac
import json
from base64 import b64decode
from collections.abc import Collection
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import PREFIX
from .workers import forwarded

if TYPE_CHECKING:
    from .metrics import Metrics

OPEN_PATHS = frozenset({"/health"})  # for load balancers and orchestrators' health checks
#: OAuth discovery and registration (any suffix: RFC 9728 inserts the resource's path after the well-known name).
OAUTH_PATHS = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)
REGISTRATION_PATH = "/register"
NO_OAUTH = "This server does not use OAuth: send its access token as 'Authorization: Bearer <token>'"
REALM = __name__.split(".")[0]
CHALLENGES = [
    (b"www-authenticate", f'Bearer realm="{REALM}"'.encode()),
    (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
]
DENIAL_EXTENSION = "websocket.http.response"  # ASGI's WebSocket Denial Response
POLICY_VIOLATION = 1008  # a WebSocket close code; a close before accept is answered with HTTP 403


class AccessControl:
    """ASGI middleware: the token check (when `token` is set) and the WebSocket origin check."""

    def __init__(
        self, app: ASGIApp, token: str | None, allowed_origins: Collection[str] = (), metrics: Metrics | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.token = token.encode() if token is not None else None
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or route_path(scope) in OPEN_PATHS or forwarded(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and self.token is not None and is_oauth_path(route_path(scope)):
            await refuse(scope, receive, send, 404, NO_OAUTH)
            return
        headers = dict(scope["headers"])
        if scope["type"] == "websocket" and not self.origin_allowed(headers):
            origin = headers[b"origin"].decode("latin-1")
            if self.metrics is not None:
                self.metrics.refused_request(scope, "origin")
            await refuse(
                scope,
                receive,
                send,
                403,
                f"Origin {origin} may not open sessions here: the server "
                f"accepts it only if {PREFIX}ALLOWED_ORIGINS lists it",
            )
            return
        problem = self.credentials_problem(headers.get(b"authorization"))
        if problem is not None:
            if self.metrics is not None:
                self.metrics.refused_request(scope, "token")
            await refuse(scope, receive, send, 401, problem)
            return
        await self.app(scope, receive, send)

    def origin_allowed(self, headers: dict[bytes, bytes]) -> bool:
        """Whether a handshake with these headers comes from no browser, the server's own pages, or a listed origin."""
        origin = headers.get(b"origin")
        if origin is None:
            return True
        origin_text = origin.decode("latin-1").lower()
        host = headers.get(b"host", b"").decode("latin-1").lower()
        own = origin_text.partition("://")[2] == host and host != ""
        return own or origin_text in self.allowed_origins or "*" in self.allowed_origins

    def credentials_problem(self, authorization: bytes | None) -> str | None:
        """Why these credentials do not give access, or None when they do (or no token is set)."""
        if self.token is None:
            return None
        if authorization is None:
            return "This server wants an access token: send the header 'Authorization: Bearer <token>'"
        sent = presented_token(authorization)
        # compare_digest takes as long whatever the bytes, so timing tells nothing about the token.
        if sent is None or not hmac.compare_digest(sent, self.token):
            return "The access token sent is not this server's: send 'Authorization: Bearer <token>'"
        return None


def presented_token(authorization: bytes) -> bytes | None:
    """The token in a Bearer header, or the password of Basic credentials; None if neither is there."""
    scheme, _, value = authorization.strip().partition(b" ")
    value = value.strip()
    if scheme.lower() == b"bearer":
        return value
    if scheme.lower() == b"basic":
        try:
            return b64decode(value, validate=True).partition(b":")[2]
        except binascii.Error:
            return None
    return None


def is_oauth_path(path: str) -> bool:
    """Whether `path` is one an MCP client asks for OAuth discovery or client registration."""
    return path == REGISTRATION_PATH or any(path == p or path.startswith(p + "/") for p in OAUTH_PATHS)


def route_path(scope: Scope) -> str:
    """The request's path below any prefix the server is mounted at (`root_path`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
    """Answer with `status` and `reason`: an HTTP response, or a WebSocket handshake refused before any upgrade."""
    body = json.dumps({"detail": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(CHALLENGES if status == 401 else []),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # the server's `websocket.connect`, which comes first
    if DENIAL_EXTENSION in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": reason[:120]})


__all__ = ["AccessControl", "presented_token"]
