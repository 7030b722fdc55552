"""`GET /metrics` against a live `server --workers 2`, and a real Prometheus scraping it (issue 29).

A known workload (a session on each door, steps, tool calls, one refusal of each reason) moves every
family by exactly its amount in one scrape, whichever worker each request reached and answers the
scrape. Prometheus (Debian's `prometheus` package, which `.ci/run` installs) is started here on
loopback with a configuration of its own: its HTTP API says the server is up and how many steps it
served; without the token its scrape is refused, with `authorization: {credentials_file: ...}` it works.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rooms.kit.package import package_version
from rooms.kit.testing import LiveServer, ServerFactory, free_port, server_command
from tests.conftest import ROOT, require, wait_for
from tests.readme_blocks import readme_blocks

# On one pytest-xdist worker: its tests share one server of 2 workers and one Prometheus, made once.
pytestmark = pytest.mark.xdist_group("metrics")

WORKERS = 2
LIMIT = 3  # MAX_CONCURRENT_ENVS, per worker
TIMEOUT_S = 4.0  # SESSION_TIMEOUT_S: the expired session's idle time
TOKEN = "metrics-token-123"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}
PROTOCOL_VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMETHEUS_HINT = "install Debian's prometheus package (apt-get install prometheus), as .ci/run does"
WITHIN_S = 60.0  # the most a wait below takes (a scrape every second; a reaper a few times per timeout)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    answer = httpx.get(f"{url}/metrics", headers=headers if headers is not None else AUTHORIZATION, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# --- the server and the workload ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("metrics"))
    port = free_port()
    env = {
        "MAX_CONCURRENT_ENVS": str(LIMIT),
        "SESSION_TIMEOUT_S": str(TIMEOUT_S),
        "ROOMS_API_TOKEN": TOKEN,
        "ROOMS_MAX_JSON_DEPTH": "16",
    }
    started = factory([*server_command(port), "--workers", str(WORKERS)], env=env, port=port)
    wait_for(lambda: started.log().count("Application startup complete.") >= WORKERS, WITHIN_S, "started")
    yield started
    factory.stop_all()


def ws(url: str, path: str = "/ws", **options: Any) -> ClientConnection:
    headers = options.pop("headers", AUTHORIZATION)
    connection: ClientConnection = connect(
        f"ws://{url.removeprefix('http://')}{path}", additional_headers=headers, **options
    )
    return connection


def frame(connection: ClientConnection, message: dict[str, Any], sent: list[int]) -> dict[str, Any]:
    text = json.dumps(message)
    sent.append(len(text))
    connection.send(text)
    answer: dict[str, Any] = json.loads(connection.recv(timeout=30))
    return answer


class StandardSession:
    """A standard MCP session over plain HTTP, each request on a new connection (any worker may take it)."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/mcp"
        self.session_id = ""
        self.next_id = 0
        self.posts = 0

    def post(self, message: dict[str, Any]) -> httpx.Response:
        headers = {**AUTHORIZATION, "Accept": ACCEPT, "Content-Type": "application/json"}
        headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        self.posts += 1
        return httpx.post(self.url, content=json.dumps(message), headers=headers, timeout=30)

    def request(self, method: str, params: dict[str, Any]) -> httpx.Response:
        self.next_id += 1
        return self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})

    def open(self) -> None:
        hello = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        answer = self.request("initialize", hello)
        assert answer.status_code == 200, answer.text
        self.session_id = answer.headers["mcp-session-id"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202

    def call(self, arguments: dict[str, Any]) -> httpx.Response:
        return self.request("tools/call", {"name": "echo", "arguments": arguments})

    def delete(self) -> None:
        headers = {**AUTHORIZATION, "Accept": ACCEPT, "Mcp-Session-Id": self.session_id}
        assert httpx.delete(self.url, headers=headers, timeout=30).status_code == 200


def sessions_open(samples: Samples) -> float:
    return sum(value for (name, _), value in samples.items() if name == "rooms_sessions_open")


def test_a_known_workload_moves_every_family_by_exactly_its_amount(server: LiveServer) -> None:
    url = server.url
    before = scrape(url)
    ws_frames: list[int] = []

    # /ws: a reset, three steps, a step that is no action (VALIDATION_ERROR), a frame past the depth bound.
    with ws(url) as session:
        frame(session, {"type": "reset", "data": {}}, ws_frames)
        for message in ("Hi", "abc", "hello"):
            assert frame(session, {"type": "step", "data": {"message": message}}, ws_frames)["type"] == "observation"
        invalid = frame(session, {"type": "step", "data": {"bogus": 1}}, ws_frames)
        assert invalid["data"]["code"] == "VALIDATION_ERROR"
        deep: Any = {"type": "step", "data": {"message": "x"}}
        for _ in range(20):
            deep = {"nested": deep}
        session.send(json.dumps(deep))
        assert json.loads(session.recv(timeout=30))["type"] == "error"  # refused by the bounds, not served

    # OpenEnv's MCP WebSocket: one tool call.
    mcp_frames: list[int] = []
    with ws(url, "/mcp") as session:
        params = {"name": "echo", "arguments": {"message": "abcd"}}
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
        assert "result" in frame(session, call, mcp_frames)

    # The standard MCP: two calls and one with wrong arguments (INVALID_ARGS), then DELETE.
    standard = StandardSession(url)
    standard.open()
    assert standard.call({"message": "Hi"}).status_code == 200
    assert standard.call({"message": "abc"}).status_code == 200
    assert standard.call({"wrong": 1}).json()["result"]["isError"] is True
    standard.delete()

    # OpenEnv's stateless HTTP step.
    step = httpx.post(
        f"{url}/step",
        content=json.dumps({"action": {"message": "x"}}),
        headers={**AUTHORIZATION, "Content-Type": "application/json"},
        timeout=30,
    )
    assert step.status_code == 200, step.text

    # Refusals: capacity (WebSockets held until one is refused), token, origin.
    held = 0
    with ExitStack() as sessions:
        for _ in range(LIMIT * WORKERS + 1):
            connection = sessions.enter_context(ws(url))
            reset = json.dumps({"type": "reset", "data": {}})
            with suppress(ConnectionClosed):  # a refused socket may be closed already
                connection.send(reset)
            answer = json.loads(connection.recv(timeout=30))
            if answer["type"] == "error":  # refused: its app never read the reset
                assert answer["data"]["code"] == "CAPACITY_REACHED"
                break
            ws_frames.append(len(reset))
            held += 1
        else:
            pytest.fail(f"{held} sessions were all admitted (limit {LIMIT} per worker)")
    with pytest.raises(Exception, match="401"):
        ws(url, headers={})
    with pytest.raises(Exception, match="403"):
        ws(url, origin="http://elsewhere.example")

    # expired: a standard MCP session left idle past SESSION_TIMEOUT_S, then used.
    idle = StandardSession(url)
    idle.open()
    wait_for(
        lambda: moved(before, scrape(url), "rooms_sessions_reaped_total", door="mcp-standard") == 1, WITHIN_S, "reaped"
    )
    assert idle.call({"message": "late"}).status_code == 404

    wait_for(lambda: sessions_open(scrape(url)) == 0, WITHIN_S, "every session closed")
    after = scrape(url)

    def check(name: str, expected: float, **labels: str) -> None:
        assert moved(before, after, name, **labels) == pytest.approx(expected), (name, labels)

    ws_sessions = 1 + held
    for door, opened in {"ws": ws_sessions, "mcp-openenv": 1, "mcp-standard": 2}.items():
        check("rooms_sessions_opened_total", opened, door=door)
        check("rooms_sessions_closed_total", opened, door=door)
        check("rooms_sessions_open", 0, door=door)
    check("rooms_sessions_reaped_total", 0, door="ws")
    check("rooms_sessions_reaped_total", 1, door="mcp-standard")
    check("rooms_sessions_refused_total", 1, door="ws", reason="capacity")
    check("rooms_sessions_refused_total", 1, door="ws", reason="token")
    check("rooms_sessions_refused_total", 1, door="ws", reason="origin")
    check("rooms_sessions_refused_total", 1, door="ws", reason="payload")
    check("rooms_sessions_refused_total", 1, door="mcp-standard", reason="expired")
    assert value(after, "rooms_sessions_limit") == LIMIT * WORKERS

    steps = {"ws": 3, "mcp-openenv": 1, "mcp-standard": 3, "http": 1}  # not the refused: VALIDATION_ERROR, 404
    for door, count in steps.items():
        check("rooms_steps_total", count, door=door)
        check("rooms_step_seconds_count", count, door=door)
        check("rooms_step_seconds_bucket", count, door=door, le="+Inf")
        assert moved(before, after, "rooms_step_seconds_sum", door=door) > 0
    check("rooms_request_size_bytes_count", len(ws_frames), door="ws")
    check("rooms_request_size_bytes_sum", sum(ws_frames), door="ws")
    check("rooms_request_size_bytes_count", len(mcp_frames), door="mcp-openenv")
    check("rooms_request_size_bytes_sum", sum(mcp_frames), door="mcp-openenv")
    check("rooms_request_size_bytes_count", standard.posts + idle.posts, door="mcp-standard")
    check("rooms_request_size_bytes_count", 1, door="http")

    check("rooms_errors_total", 1, code="VALIDATION_ERROR")
    check("rooms_errors_total", 1, code="CAPACITY_REACHED")
    check("rooms_errors_total", 1, code="INVALID_ARGS")
    check("rooms_errors_total", 1, code="HTTP_404")

    rewards = [0.2, 0.3, 0.5, 0.4, 0.2, 0.3, 0.1]  # Hi abc hello on /ws, abcd, Hi abc, x
    check("rooms_reward_count", len(rewards))
    check("rooms_reward_sum", sum(rewards))
    check("rooms_reward_bucket", 3, le="0.25")

    [build] = [labels for (name, labels) in after if name == "rooms_build_info"]
    assert dict(build)["version"] == package_version()
    pids = {dict(labels)["pid"] for (name, labels) in after if name == "rooms_process_resident_memory_bytes"}
    assert len(pids) == WORKERS, pids
    for pid in pids:
        assert value(after, "rooms_process_resident_memory_bytes", pid=pid) > 10_000_000
        assert value(after, "rooms_process_open_fds", pid=pid) > 0
        assert value(after, "rooms_process_cpu_seconds_total", pid=pid) > 0


def test_metrics_want_the_token_and_health_does_not(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert "rooms_steps_total" in httpx.get(f"{server.url}/metrics", headers=AUTHORIZATION, timeout=30).text


# --- a real Prometheus ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on loopback scraping the server every second: job `rooms` with the token, `no-token` without."""
    require(PROMETHEUS.exists() and shutil.which("prometheus") is not None, PROMETHEUS_HINT)
    tmp_path = tmp_path_factory.mktemp("prometheus")
    (tmp_path / "token").write_text(TOKEN)
    target = f"127.0.0.1:{server.port}"
    config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: rooms
    authorization:
      credentials_file: {tmp_path / "token"}
    static_configs:
      - targets: ["{target}"]
  - job_name: no-token
    static_configs:
      - targets: ["{target}"]
"""
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/-/ready"), WITHIN_S, "ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, expression: str) -> dict[str, float]:
    """An instant query's result: each series's job (or '') and its value."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=30).json()
    assert answer["status"] == "success", answer
    return {series["metric"].get("job", ""): float(series["value"][1]) for series in answer["data"]["result"]}


def test_prometheus_scrapes_the_server_with_the_token_and_counts_its_steps(server: LiveServer, prometheus: str) -> None:
    steps = 5
    before = sum(value for (name, _), value in scrape(server.url).items() if name == "rooms_steps_total")
    with ws(server.url) as session:
        frame(session, {"type": "reset", "data": {}}, [])
        for _ in range(steps):
            frame(session, {"type": "step", "data": {"message": "Hi"}}, [])
    wait_for(lambda: query(prometheus, "up").keys() >= {"rooms", "no-token"}, WITHIN_S, "scraped by both jobs")
    assert query(prometheus, "up") == {"rooms": 1.0, "no-token": 0.0}
    expression = 'sum by (job) (rooms_steps_total{job="rooms"})'
    wait_for(lambda: query(prometheus, expression).get("rooms") == before + steps, WITHIN_S, "counting the steps")
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    [refused] = [target for target in targets if target["labels"]["job"] == "no-token"]
    assert "401" in refused["lastError"], refused


def test_the_documented_queries_are_answered(server: LiveServer, prometheus: str) -> None:
    [block] = readme_blocks("promql")
    wait_for(lambda: query(prometheus, 'up{job="rooms"}').get("rooms") == 1.0, WITHIN_S, "scraped")
    for expression in block.code.splitlines():
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=30).json()
        assert answer["status"] == "success", (expression, answer)
    assert query(prometheus, "sum(rooms_sessions_limit)") == {"": LIMIT * WORKERS}


DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\brooms_[a-z_]+")


def test_the_grafana_dashboard_names_only_metrics_the_server_exposes(server: LiveServer, prometheus: str) -> None:
    """deploy/grafana-dashboard.json parses, each panel's queries name families of `/metrics`, and Prometheus
    accepts every one."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    assert expressions, "the dashboard has no query"
    scraped = httpx.get(f"{server.url}/metrics", headers=AUTHORIZATION, timeout=30).text
    families = {family.name for family in text_string_to_metric_families(scraped)}  # a counter's without `_total`
    for expression in expressions:
        for name in METRIC_NAME.findall(expression):
            family = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert family in families, f"{expression}: no family {family} in /metrics"
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=30).json()
        assert answer["status"] == "success", (expression, answer)
