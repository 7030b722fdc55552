"""Access control: with ROOMS_API_TOKEN set only token holders get in; no cross-site WebSocket sessions.

In process throughout: Starlette's TestClient where the routes are the point; a server on a real
socket in this process (`shared_server`) where the handshake, the session slots and the clients are.
`server` processes only where the command is the point: what its log says (and never shows), and its
refusal of a bad token setting.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from rooms import RoomsAction, RoomsEnv, RoomsObservation
from rooms.kit.access import AccessControl
from rooms.kit.application import create_app
from rooms.kit.client import AccessDenied
from rooms.kit.command import main
from rooms.kit.settings import Settings, SettingsError
from rooms.server.rooms_environment import RoomsEnvironment
from tests.conftest import (
    ROOT,
    InProcessServer,
    LiveServer,
    Served,
    ServerFactory,
    SharedServers,
    docker,
    free_port,
    settings_with,
    wait_for,
    wait_until_healthy,
)
from tests.openenv_reference import LocalServerProvider
from tests.readme_blocks import Block, assert_prints_what_it_promises, block_id, readme_blocks

TOKEN = "s3cret-Token_for.tests~1"
WRONG = "not-the-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- settings -------------------------------------------------------------------------------------


def test_token_from_the_variable_or_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")  # as `echo` writes it
    assert Settings.from_env({}).api_token is None
    assert Settings.from_env({"ROOMS_API_TOKEN": TOKEN}).token() == TOKEN
    assert Settings.from_env({"ROOMS_API_TOKEN_FILE": str(secret)}).token() == TOKEN
    assert TOKEN not in repr(Settings.from_env({"ROOMS_API_TOKEN": TOKEN}))


@pytest.mark.parametrize(
    "environ, says",
    [
        ({"ROOMS_API_TOKEN": ""}, "ROOMS_API_TOKEN is empty"),
        ({"ROOMS_API_TOKEN": "two words"}, "ROOMS_API_TOKEN must be one word"),
        ({"ROOMS_API_TOKEN_FILE": "/nonexistent/token"}, "ROOMS_API_TOKEN_FILE: cannot read the token from"),
        ({"ROOMS_API_TOKEN": TOKEN, "ROOMS_API_TOKEN_FILE": "/x"}, "ROOMS_API_TOKEN and ROOMS_API_TOKEN_FILE are both"),
        ({"ROOMS_ALLOWED_ORIGINS": "https://ok.example, example.org"}, "ROOMS_ALLOWED_ORIGINS lists 'example.org'"),
        ({"ROOMS_ALLOWED_ORIGINS": "https://example.org/path"}, "ROOMS_ALLOWED_ORIGINS lists 'https://example.org/pa"),
    ],
)
def test_a_bad_access_setting_is_an_error_naming_the_variable(environ: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=f"^{says}"):
        Settings.from_env(environ)


def test_an_empty_token_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(SettingsError, match=r"^ROOMS_API_TOKEN_FILE is empty"):
        Settings.from_env({"ROOMS_API_TOKEN_FILE": str(tmp_path / "token")})


def test_allowed_origins_are_read_as_a_list() -> None:
    environ = {"ROOMS_ALLOWED_ORIGINS": "https://Trainer.example:8443, http://localhost:3000"}
    assert Settings.from_env(environ).allowed_origins == ("https://trainer.example:8443", "http://localhost:3000")


# --- every HTTP route, in process -----------------------------------------------------------------

ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/capacity", None),
    ("GET", "/schema", None),
    ("GET", "/metadata", None),
    ("GET", "/docs", None),
    ("GET", "/redoc", None),
    ("GET", "/docs-assets/swagger-ui.css", None),
    ("GET", "/openapi.json", None),
    ("POST", "/reset", {}),
    ("POST", "/step", {"action": {"message": "Hi"}}),
    ("GET", "/state", None),
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    ("GET", "/list_environments", None),
    ("GET", "/no-such-route", None),
]


WS_URL = "ws://127.0.0.1:8000/ws"  # TestClient's WebSocket handshakes otherwise go to host `testserver`


def app_client(**settings: Any) -> TestClient:
    app = create_app(RoomsEnvironment, RoomsAction, RoomsObservation, Settings(**settings))
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def protected() -> Iterator[TestClient]:
    with app_client(api_token=TOKEN, max_concurrent_envs=1) as client:
        yield client


@pytest.fixture(scope="module")
def open_app() -> Iterator[TestClient]:
    with app_client(max_concurrent_envs=1) as client:
        yield client


def request(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize(
    "headers, says",
    [
        ({}, "This server wants an access token"),
        ({"Authorization": f"Bearer {WRONG}"}, "The access token sent is not this server's"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "The access token sent is not this server's"),
        ({"Authorization": TOKEN}, "The access token sent is not this server's"),
        (basic(WRONG), "The access token sent is not this server's"),
        ({"Authorization": "Basic not-base64!"}, "The access token sent is not this server's"),
    ],
    ids=["no token", "wrong token", "token with more", "no scheme", "wrong basic password", "broken basic"],
)
def test_a_route_without_the_token_is_refused_with_401(
    protected: TestClient, method: str, path: str, body: Any, headers: dict[str, str], says: str
) -> None:
    response = request(protected, method, path, body, headers)
    assert response.status_code == 401
    assert response.json()["detail"].startswith(says)
    assert TOKEN not in response.text
    challenges = response.headers.get_list("www-authenticate")
    assert challenges == ['Bearer realm="rooms"', 'Basic realm="rooms", charset="UTF-8"']


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize("headers", [BEARER, basic(TOKEN), basic(TOKEN, user="")], ids=["bearer", "basic", "no-user"])
def test_a_route_with_the_token_answers_as_an_open_server_does(
    protected: TestClient, open_app: TestClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    with_token = request(protected, method, path, body, headers)
    unprotected = request(open_app, method, path, body, {})
    assert with_token.status_code == unprotected.status_code != 401
    if path not in ("/capacity", "/reset", "/step", "/state"):  # these carry a pid or an episode id
        assert with_token.content == unprotected.content


OAUTH_DISCOVERY = [
    ("GET", "/.well-known/oauth-protected-resource"),
    ("GET", "/.well-known/oauth-protected-resource/mcp"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/oauth-authorization-server/mcp"),
    ("GET", "/.well-known/openid-configuration"),
    ("POST", "/register"),
]


@pytest.mark.parametrize("method, path", OAUTH_DISCOVERY, ids=[p for _, p in OAUTH_DISCOVERY])
def test_oauth_discovery_finds_no_authorization_server(protected: TestClient, method: str, path: str) -> None:
    """An MCP client's discovery after a 401 ends at a 404 (no OAuth here): it reports the 401, starts no flow."""
    response = protected.request(
        method, path, json={"redirect_uris": ["http://localhost/cb"]} if method == "POST" else None
    )
    assert response.status_code == 404
    assert response.json()["detail"].startswith("This server does not use OAuth: send its access token")
    assert "www-authenticate" not in response.headers
    mcp = protected.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert mcp.status_code == 401 and mcp.headers.get_list("www-authenticate")[0] == 'Bearer realm="rooms"'


def test_health_is_open_to_all(protected: TestClient) -> None:
    assert protected.get("/health").status_code == 200
    assert protected.get("/health", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 200


def test_an_open_server_needs_no_token(open_app: TestClient) -> None:
    assert open_app.get("/capacity").status_code == 200
    assert open_app.get("/capacity", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 200


# --- the WebSocket handshake, in process ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/mcp"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {WRONG}"}], ids=["no token", "wrong token"])
def test_a_websocket_without_the_token_is_refused_with_401_before_the_upgrade(
    protected: TestClient, path: str, headers: dict[str, str]
) -> None:
    # TestClient adds its own headers to the dict it is given: each call gets a copy.
    with pytest.raises(WebSocketDenialResponse) as refused, protected.websocket_connect(path, headers=dict(headers)):
        pass
    assert refused.value.status_code == 401
    assert protected.get("/capacity", headers=BEARER).json()["active_sessions"] == 0


def test_a_websocket_with_the_token_gets_a_session(protected: TestClient) -> None:
    with protected.websocket_connect("/ws", headers=dict(BEARER)) as ws:
        ws.send_text(json.dumps({"type": "step", "data": {"message": "Hi"}}))
        assert ws.receive_json()["data"]["reward"] == pytest.approx(0.2)
        assert protected.get("/capacity", headers=BEARER).json()["active_sessions"] == 1


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://127.0.0.1:8000", True),  # the server's own pages (/web, /docs)
        ("https://evil.example", False),
        ("http://127.0.0.1:9999", False),
        ("null", False),  # a sandboxed frame or a file:// page
        ("https://trainer.example", True),
    ],
)
def test_a_browser_handshake_from_another_origin_is_refused_unless_listed(
    origin: str, allowed: bool, tmp_path: Path
) -> None:
    with app_client(allowed_origins=("https://trainer.example",)) as client:
        if allowed:
            with client.websocket_connect(WS_URL, headers={"Origin": origin}) as ws:
                ws.send_text(json.dumps({"type": "state"}))
                assert ws.receive_json()["type"] == "state"
            return
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(WS_URL, headers={"Origin": origin}),
        ):
            pass
        assert refused.value.status_code == 403
        assert "ROOMS_ALLOWED_ORIGINS" in refused.value.json()["detail"]
        assert client.get("/capacity").json()["active_sessions"] == 0


def test_an_origin_check_comes_before_the_token_and_star_allows_any() -> None:
    with app_client(api_token=TOKEN) as client:
        evil = {**BEARER, "Origin": "https://evil.example"}
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/ws", headers=evil):
            pass
        assert refused.value.status_code == 403
    with (
        app_client(api_token=TOKEN, allowed_origins=("*",)) as client,
        client.websocket_connect("/ws", headers={**BEARER, "Origin": "https://any.example"}) as ws,
    ):
        ws.send_text(json.dumps({"type": "state"}))
        assert ws.receive_json()["type"] == "state"


async def test_without_the_denial_extension_a_handshake_is_closed_before_it_is_accepted() -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    sent: list[Message] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"h")], "extensions": {}}
    await AccessControl(app, token=TOKEN)(scope, receive, send)
    assert reached == [] and incoming == []
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008


# --- live servers: the real handshake, session slots, every client form ---------------------------


def capacity(server: Served) -> dict[str, int]:
    answer: dict[str, int] = requests.get(f"{server.url}/capacity", headers=BEARER, timeout=10).json()
    return answer


@pytest.fixture
def token_server(shared_server: SharedServers) -> InProcessServer:
    """A server that wants TOKEN and holds two sessions at most: a slot taken by a refusal would show. Served
    in this process; a test gets it holding no session."""
    return shared_server({"ROOMS_API_TOKEN": TOKEN, "MAX_CONCURRENT_ENVS": "2"})


REFUSED_HANDSHAKES = [
    ({}, 401),
    ({"Authorization": f"Bearer {WRONG}"}, 401),
    ({**BEARER, "Origin": "https://evil.example"}, 403),  # the token itself, from another site
]


@pytest.mark.parametrize("headers, status", REFUSED_HANDSHAKES, ids=["no token", "wrong token", "other origin"])
def test_a_live_handshake_is_refused_with_its_status_and_takes_no_slot(
    token_server: InProcessServer, headers: dict[str, str], status: int
) -> None:
    for _ in range(3):
        with pytest.raises(InvalidStatus) as refused:
            connect(token_server.ws_url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == status
    reported = capacity(token_server)
    assert (reported["active_sessions"], reported["max_sessions"], reported["free_slots"]) == (0, 2, 2)
    with RoomsEnv(base_url=token_server.url, headers=BEARER).sync() as env:  # both slots are still free
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)
        assert env.new_session().step(RoomsAction(message="Hello")).reward == pytest.approx(0.5)
        assert capacity(token_server)["active_sessions"] == 2


def test_http_on_a_live_server(token_server: InProcessServer) -> None:
    assert requests.get(f"{token_server.url}/health", timeout=10).status_code == 200
    assert requests.get(f"{token_server.url}/capacity", timeout=10).status_code == 401
    assert requests.post(f"{token_server.url}/step", json={"action": {"message": "Hi"}}, timeout=10).status_code == 401
    step = requests.post(f"{token_server.url}/step", json={"action": {"message": "Hi"}}, headers=BEARER, timeout=10)
    assert step.status_code == 200 and step.json()["reward"] == pytest.approx(0.2)
    assert requests.get(f"{token_server.url}/schema", auth=("anyone", TOKEN), timeout=10).status_code == 200


def test_the_server_command_says_whether_access_is_open(server_factory: ServerFactory) -> None:
    """The `server` command's log says whether access is open; a protected server's log never shows its token:
    not for the handshakes it refused (one carrying the token), nor for the requests and session it took."""
    protected = server_factory(env={"ROOMS_API_TOKEN": TOKEN, "MAX_CONCURRENT_ENVS": "2"}, wait=False)
    open_to_all = server_factory(wait=False)  # both start at once
    for server in (protected, open_to_all):
        try:
            wait_until_healthy(server.url, server.process)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"the server did not start:\n{server.log()}") from exc
    assert "Access is token-protected" in protected.log()
    assert "Access is open" in open_to_all.log()
    for headers, status in REFUSED_HANDSHAKES:
        with pytest.raises(InvalidStatus) as refused:
            connect(protected.ws_url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == status
    assert requests.get(f"{protected.url}/schema", auth=("anyone", TOKEN), timeout=10).status_code == 200
    with RoomsEnv(base_url=protected.url, headers=BEARER).sync() as env:
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)

    def all_logged() -> str | None:  # the log is written as the server goes
        log = protected.log()
        handshakes = [log.count(f'"WebSocket /ws" {status}') for status in ("401", "403", "[accepted]")]
        return log if handshakes == [2, 1, 1] else None

    assert TOKEN not in wait_for(all_logged, 30, lambda: f"the handshakes logged:\n{protected.log()}")


def test_the_server_command_refuses_a_bad_token_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMS_API_TOKEN_FILE", "/nonexistent/token")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert "server: ROOMS_API_TOKEN_FILE: cannot read the token from '/nonexistent/token'" in str(exited.value.code)


def test_sync_client_with_the_token_and_its_new_session(token_server: InProcessServer) -> None:
    with RoomsEnv(base_url=token_server.url, headers=BEARER).sync() as env:
        assert env.reset().done is False
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)
        other = env.new_session()
        assert other.step(RoomsAction(message="Hello")).reward == pytest.approx(0.5)
        assert env.state().step_count == 1 and other.state().step_count == 1


@pytest.mark.parametrize(
    "headers, says",
    [(None, "wants an access token"), ({"Authorization": f"Bearer {WRONG}"}, "refused the access token sent")],
    ids=["no token", "wrong token"],
)
def test_sync_client_refused_says_the_server_wants_a_token(
    token_server: InProcessServer, headers: dict[str, str] | None, says: str
) -> None:
    env = RoomsEnv(base_url=token_server.url, headers=headers).sync()
    try:
        with pytest.raises(
            AccessDenied, match=f"The server at ws://127.0.0.1:{token_server.port}/ws {says} \\(HTTP 401\\)"
        ):
            env.reset()
    finally:
        env.close()
    assert isinstance(AccessDenied("u", 401, False), PermissionError)


async def test_async_client_with_the_token_and_its_new_session(token_server: InProcessServer) -> None:
    async with RoomsEnv(base_url=token_server.url, headers=BEARER) as env:
        assert (await env.step(RoomsAction(message="Hi"))).reward == pytest.approx(0.2)
        other = await env.new_session()
        assert (await other.step(RoomsAction(message="Hello"))).reward == pytest.approx(0.5)
        assert (await other.state()).step_count == 1
    # A closed socket's slot is freed once the server has closed its environment, a moment after the client is told.
    wait_for(lambda: capacity(token_server)["active_sessions"] == 0, 30, "both sessions' slots freed")
    fresh = RoomsEnv(base_url=token_server.url, headers=BEARER)
    try:
        assert (await fresh.reset()).done is False  # connects on first use
    finally:
        await fresh.close()


@pytest.mark.parametrize("how", ["connect", "async with", "reset first", "new_session of a refused"])
async def test_async_client_refused_says_the_server_wants_a_token(token_server: InProcessServer, how: str) -> None:
    env = RoomsEnv(base_url=token_server.url)
    try:
        with pytest.raises(AccessDenied, match="wants an access token"):
            if how == "connect":
                await env.connect()
            elif how == "async with":
                async with env:
                    pass
            elif how == "reset first":
                await env.reset()
            else:
                await env.new_session()
    finally:
        await env.close()


@pytest.mark.parametrize("headers", [None, {"Authorization": f"Bearer {WRONG}"}], ids=["no token", "wrong token"])
def test_context_manager_refused_raises_access_denied(
    token_server: InProcessServer, headers: dict[str, str] | None
) -> None:
    """The README's own form, `with RoomsEnv(base_url=...) as env:`."""
    refused = pytest.raises(AccessDenied, match=r"(wants an access token|refused the access token sent) \(HTTP 401\)")
    with refused, RoomsEnv(base_url=token_server.url, headers=headers) as env:
        env.reset()
    with RoomsEnv(base_url=token_server.url, headers=BEARER) as env:
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)


def test_openenv_sync_wrapper_refused_says_the_server_wants_a_token(token_server: InProcessServer) -> None:
    env = RoomsEnv(base_url=token_server.url)  # used synchronously without .sync(): OpenEnv's own wrapper
    try:
        with pytest.raises(AccessDenied, match="wants an access token"):
            env.reset()
    finally:
        env.close()
    env = RoomsEnv(base_url=token_server.url, headers=BEARER)
    try:
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)
    finally:
        env.close()


@pytest.mark.parametrize("factory", ["from_docker_image", "from_env with docker", "from_env with uv"])
def test_launches_give_their_server_the_token_and_send_it(factory: str) -> None:
    provider = LocalServerProvider()
    if factory == "from_docker_image":
        launch = RoomsEnv.from_docker_image("rooms-env:latest", provider, api_token=TOKEN, env_vars={"X": "1"})
    else:
        launch = RoomsEnv.from_env(
            "owner/rooms", use_docker=factory.endswith("docker"), provider=provider, api_token=TOKEN
        )
    with launch as env:
        assert env.step(RoomsAction(message="Hi")).reward == pytest.approx(0.2)
        assert provider.env_vars is not None and provider.env_vars["ROOMS_API_TOKEN"] == TOKEN
        [server] = provider.started
        assert requests.get(f"{server.url}/capacity", timeout=10).status_code == 401
    assert not provider.is_running()


async def test_an_awaited_launch_sends_the_token() -> None:
    provider = LocalServerProvider()
    env = await RoomsEnv.from_docker_image("rooms-env:latest", provider, api_token=TOKEN)
    try:
        assert (await env.step(RoomsAction(message="Hi"))).reward == pytest.approx(0.2)
    finally:
        await env.close()
    assert not provider.is_running()


def test_the_failover_bench_sends_the_token_from_its_file(
    token_server: InProcessServer, tmp_path: Path, rooms_bench_main: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    bench = ["failover", "--url", token_server.url, "--sessions", "2", "--duration", "1"]
    with_token = rooms_bench_main(*bench, "--token-file", str(token_file))
    assert with_token.returncode == 0, with_token.stdout + with_token.stderr
    without = rooms_bench_main(*bench, "--json", str(tmp_path / "report.json"))
    assert without.returncode == 1, without.stdout + without.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert {error["kind"] for error in report["errors"]} == {"AccessDenied"} and report["steps"] == 0


# --- in a browser ---------------------------------------------------------------------------------


@pytest.fixture
def web_token_server(shared_server: SharedServers) -> InProcessServer:
    return shared_server({"ENABLE_WEB_INTERFACE": "true", "ROOMS_API_TOKEN": TOKEN})


@pytest.mark.browser
def test_web_works_for_the_token_holder_and_no_one_else(browser: Browser, web_token_server: InProcessServer) -> None:
    server = web_token_server
    # The browser asks for credentials: none given, it shows no page; a wrong password gets the 401's reason.
    page = browser.new_page()
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        page.goto(f"{server.url}/web/", wait_until="domcontentloaded")
    page = browser.new_context(http_credentials={"username": "me", "password": WRONG}).new_page()
    response = page.goto(f"{server.url}/web/", wait_until="domcontentloaded")
    assert response is not None and response.status == 401
    assert "The access token sent is not this server's" in page.locator("body").inner_text()
    assert page.get_by_role("button", name="Reset").count() == 0
    # A browser sends Basic credentials once a 401 asks for them: any user name, the token as password.
    page = browser.new_context(http_credentials={"username": "me", "password": TOKEN}).new_page()
    response = page.goto(f"{server.url}/web/", wait_until="domcontentloaded")
    assert response is not None and response.status == 200
    page.get_by_role("button", name="Reset").click()
    page.get_by_text("new episode").wait_for(timeout=30_000)
    page.get_by_role("textbox").fill("Hello")
    page.get_by_role("button", name="Run step").click()
    page.get_by_text("reward 0.5").wait_for(timeout=30_000)


OPEN_A_SESSION = """url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({type: "state"}));
    ws.onmessage = event => { resolve(JSON.parse(event.data).type); ws.close(); };
    ws.onerror = () => resolve("refused");
})"""


@contextmanager
def a_site() -> Iterator[int]:
    """Another web site on this machine (a browser lets a site's page reach a local server only from another
    local one): a blank page on a port of its own, for two origins, `http://127.0.0.1:PORT` and
    `http://localhost:PORT`. Yields the port."""

    class BlankPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), BlankPage)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield site.server_address[1]
    finally:
        site.shutdown()
        thread.join(10)


class HandshakeRefusals:
    """An ASGI app, and the WebSocket handshakes it refused with an HTTP response: (path, status) → count."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.refused: Counter[tuple[str, int]] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "websocket.http.response.start":
                self.refused[(scope["path"], message["status"])] += 1
            await send(message)

        await self.app(scope, receive, sending)


@pytest.mark.browser
def test_a_page_from_another_origin_cannot_open_a_session(browser: Browser) -> None:
    with a_site() as port:
        listed, other = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
        settings = settings_with({"ROOMS_ALLOWED_ORIGINS": listed})
        app = HandshakeRefusals(create_app(RoomsEnvironment, RoomsAction, RoomsObservation, settings))
        server = InProcessServer(app, settings)
        try:
            page = browser.new_page()
            seen = {}
            for name, page_url in [("other", f"{other}/"), ("listed", f"{listed}/"), ("own", f"{server.url}/health")]:
                page.goto(page_url)
                seen[name] = page.evaluate(OPEN_A_SESSION, server.ws_url)
        finally:
            server.stop()
    assert seen == {"other": "refused", "listed": "state", "own": "state"}
    assert app.refused == {("/ws", 403): 1}  # the server refused it, not the browser


# --- the README's access-control blocks -----------------------------------------------------------


def start_token_server_block(block: Block, directory: Path, server_factory: ServerFactory) -> tuple[LiveServer, str]:
    """Run the README's token-server block in `directory` (its server on a free port): the server and its token."""
    *setup, command = [line for line in block.code.splitlines() if line and not line.startswith("#")]
    result = subprocess.run(["bash", "-euc", "\n".join(setup)], cwd=directory, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    words = shlex.split(command)
    assignments = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        assignments[name] = str(directory / value)
    port = free_port()
    server = server_factory(command=[*words, "--port", str(port)], env={**assignments, "PORT": str(port)}, port=port)
    [token_file] = assignments.values()
    return server, Path(token_file).read_text().strip()


@pytest.mark.parametrize("block", readme_blocks("token-server"), ids=block_id)
def test_readme_token_server_block(block: Block, tmp_path: Path, server_factory: ServerFactory) -> None:
    server, token = start_token_server_block(block, tmp_path, server_factory)
    assert requests.get(f"{server.url}/capacity", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/capacity", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert "Access is token-protected" in server.log() and token not in server.log()


@pytest.mark.parametrize("block", readme_blocks("token-live-server"), ids=block_id)
def test_readme_token_live_server_block(block: Block, tmp_path: Path, server_factory: ServerFactory) -> None:
    """The client block, as written, after the server block, in the same directory: one token file for both."""
    [server_block] = readme_blocks("token-server")
    server, _ = start_token_server_block(server_block, tmp_path, server_factory)
    assert "http://localhost:8000" in block.code
    code = block.code.replace("http://localhost:8000", server.url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOMS_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert_prints_what_it_promises(block, result.stdout)


# --- token files stay out of git, images and Spaces ------------------------------------------------

TOKEN_FILES = ["rooms-token.txt", "deploy/api-token.txt"]  # the README's name, and one elsewhere in the project


@pytest.mark.parametrize("name", TOKEN_FILES)
def test_git_ignores_token_files(name: str) -> None:
    ignored = subprocess.run(["git", "check-ignore", name], cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 0 and ignored.stdout.strip() == name, ignored


@pytest.mark.docker
def test_the_docker_build_context_leaves_token_files_out(docker_available: None, tmp_path: Path) -> None:
    """A context of the project's `.dockerignore`, token files and a file to keep, built for real."""
    shutil.copy(ROOT / ".dockerignore", tmp_path)
    for name in [*TOKEN_FILES, "kept.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("s3cret\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /context/\n")
    image = docker("build", "--quiet", str(tmp_path)).stdout.strip()
    container = docker("create", image, "/none").stdout.strip()
    try:
        listing = subprocess.run(["docker", "export", container], capture_output=True, check=True, timeout=300).stdout
        with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
            built = {name.removeprefix("context/") for name in tar.getnames() if name.startswith("context/")}
    finally:
        docker("rm", container, check=False)
        docker("rmi", image, check=False)
    assert "kept.txt" in built and not built & set(TOKEN_FILES), built


def readme_push_commands() -> list[str]:
    [block] = [b for b in readme_blocks("hub") if b.lang == "bash"]
    return [line for line in block.code.splitlines() if line.startswith("openenv push")]


@pytest.mark.parametrize("command", readme_push_commands())
def test_the_readme_push_commands_leave_token_files_out(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`openenv push` for real, up to the Hub, from a copy of the project holding token files: the folder it
    would upload (and the patterns it would give the upload) leave them out."""
    from huggingface_hub import HfApi
    from openenv.cli.__main__ import app
    from openenv.cli.commands import push as push_command
    from typer.testing import CliRunner

    project = tmp_path / "rooms"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    for name in TOKEN_FILES:
        (project / name).write_text("s3cret\n")
    uploads: list[dict[str, Any]] = []
    monkeypatch.setattr(push_command, "whoami", lambda *a, **k: {"name": "tester"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: None)
    monkeypatch.setattr(
        HfApi, "upload_folder", lambda self, **kw: uploads.append({**kw, "files": files_under(Path(kw["folder_path"]))})
    )
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, shlex.split(command)[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [upload] = uploads
    assert "openenv.yaml" in upload["files"] and "server/app.py" in upload["files"]
    assert not upload["files"] & set(TOKEN_FILES), sorted(upload["files"])


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
