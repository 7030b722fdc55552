"""Rooms on a real single-node Docker Swarm: the shipped stack file, sessions spread and failed over.

The swarm is initialised for these tests if the engine is not in one (and left afterwards); an
engine already in a swarm is left as found. Replicas are reached on their host-mode ports: the
routing mesh needs IPVS, which some kernels (this project's CI runners among them) lack.

Every `docker` these tests run, their own and those of the README's commands, rooms-bench and
OpenEnv's provider, is the conftest's DOCKER: /usr/bin/docker where it is installed (Debian's
docker.io, 20.10 on bookworm, reads compose files differently from newer CLIs), even if another
comes first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
from openenv.core.containers.runtime import DockerSwarmProvider

from rooms import RoomsAction, RoomsEnv
from rooms.kit.client import AccessDenied
from rooms_bench.failover import healthy, swarm_replicas
from tests.conftest import DOCKER, ROOT, SYSTEM_DOCKER, BuiltImage, console_script, docker, require, wait_for
from tests.readme_blocks import Block, assert_prints_what_it_promises, readme_blocks, run_python

pytestmark = pytest.mark.swarm

REPLICAS = 2
STACK_SESSIONS_PER_REPLICA = 64  # the stack's MAX_CONCURRENT_ENVS: 64 rollouts fit on one replica
SESSIONS_PER_REPLICA = 4  # the provider's
ROLLOUTS = 64  # the failover bench's
STACK = f"rooms-test-{os.getpid()}"
SERVICE = f"{STACK}_rooms"
PROMETHEUS = f"{STACK}_prometheus"
TOKEN = secrets.token_urlsafe(32)  # the stack's access token, given to it as a Docker secret
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", autouse=True)
def docker_cli_on_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`docker` in the commands these tests start is DOCKER: a link to it comes first on PATH."""
    if not Path(DOCKER).is_absolute():  # no docker CLI at all: the tests needing one skip
        yield
        return
    links = tmp_path_factory.mktemp("docker-cli")
    (links / "docker").symlink_to(DOCKER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{links}{os.pathsep}{os.environ['PATH']}")
        yield


def test_docker_commands_run_the_system_cli_where_installed(docker_available: None) -> None:
    """Where /usr/bin/docker is installed (Debian's docker.io), the stack is deployed with it, not a newer CLI."""
    expected = SYSTEM_DOCKER if SYSTEM_DOCKER.exists() else Path(DOCKER)
    found = shutil.which("docker")
    assert found is not None and Path(found).resolve() == expected.resolve(), f"`docker` is {found}, not {expected}"
    version = subprocess.run(
        ["bash", "-c", "docker version --format '{{.Client.Version}}'"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"docker CLI of these tests: {found} -> {expected}, version {version}")


def swarm_state() -> str:
    return str(docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout).strip()


def settled_swarm_state(timeout: float = 120.0) -> str:
    """The engine's swarm state once it reads the same twice a second apart (not `pending` or `locked`)."""
    deadline = time.monotonic() + timeout
    while True:
        first = swarm_state()
        time.sleep(1)
        second = swarm_state()
        if (first == second and second in ("active", "inactive")) or time.monotonic() > deadline:
            return second


def swarm_block(text: str, lang: str = "bash") -> Block:
    [block] = [b for b in readme_blocks("swarm") if b.lang == lang and text in b.code]
    return block


# One swarm and one stack for the run (session scope): with pytest-xdist the Docker tests of several
# modules share one worker, and a module fixture would leave and re-init the swarm between them.
@pytest.fixture(scope="session")
def swarm(docker_available: None) -> Iterator[None]:
    """A single-node swarm; left afterwards if these tests created it."""
    state = settled_swarm_state()
    if state == "active":
        yield
        return
    require(state == "inactive", f"needs a Docker engine that can start a swarm (its swarm state: {state})")
    had_gateway_bridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    init = docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
    if init.returncode != 0:
        # The engine was still settling a swarm of its own: use it once it is active, and leave it as found.
        assert "already part of a swarm" in init.stderr, init.stderr
        wait_for(lambda: swarm_state() == "active", 120, "the engine's swarm", every_s=0.5)
        yield
        return
    try:
        yield
    finally:
        docker("swarm", "leave", "--force", check=False)
        wait_for(lambda: swarm_state() == "inactive", 60, "the swarm's departure", every_s=0.5)
        if not had_gateway_bridge:  # the bridge Docker adds for a swarm's containers
            docker("network", "rm", "docker_gwbridge", check=False)


class Stack(NamedTuple):
    service: str
    urls: list[str]
    token_file: Path


def replica_urls() -> list[str]:
    return sorted(url for url in swarm_replicas(SERVICE).values() if healthy(url))


@pytest.fixture(scope="session")
def prometheus_image(base_image: str) -> str:
    """The stack's Prometheus, built from Debian's package by the document's own command."""
    build = swarm_block("rooms-prometheus")
    result = subprocess.run(["bash", "-euc", build.code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return "rooms-prometheus:latest"


@pytest.fixture(scope="session")
def stack(
    swarm: None, built_image: BuiltImage, prometheus_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The document's host-mode `docker stack deploy` of deploy/compose.yaml: 2 replicas of 64 sessions, a token,
    Prometheus."""
    deploy = swarm_block("docker stack deploy")
    command = deploy.code.replace(" rooms\n", f" {STACK}\n").replace("rooms_rooms", SERVICE)
    token_file = tmp_path_factory.mktemp("secret") / "rooms-token.txt"
    token_file.write_text(TOKEN + "\n")
    env = {
        **os.environ,
        "ROOMS_IMAGE": built_image.name,
        "ROOMS_REPLICAS": str(REPLICAS),
        "ROOMS_API_TOKEN_FILE": str(token_file),
    }
    try:
        result = subprocess.run(
            ["bash", "-euc", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: len(replica_urls()) == REPLICAS, 180, f"{REPLICAS} healthy replicas", every_s=0.5)
        yield Stack(SERVICE, replica_urls(), token_file)
    finally:
        docker("stack", "rm", STACK, check=False)
        wait_for(
            lambda: not docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}").stdout.strip(),
            60,
            "the stack's removal",
            every_s=0.5,
        )
        wait_for(
            lambda: docker("network", "inspect", f"{STACK}_rooms", check=False).returncode != 0,
            60,
            "the stack's network",
            every_s=0.5,
        )
        wait_for(
            lambda: docker("secret", "inspect", f"{STACK}_rooms_api_token", check=False).returncode != 0,
            60,
            "the stack's secret",
            every_s=0.5,
        )


def test_stack_file_deploys_what_it_promises(stack: Stack) -> None:
    spec = json.loads(docker("service", "inspect", stack.service, "--format", "{{json .Spec}}").stdout)
    task = spec["TaskTemplate"]
    assert spec["Mode"] == {"Replicated": {"Replicas": REPLICAS}}
    assert f"MAX_CONCURRENT_ENVS={STACK_SESSIONS_PER_REPLICA}" in task["ContainerSpec"]["Env"]
    assert "ROOMS_API_TOKEN_FILE=/run/secrets/rooms_api_token" in task["ContainerSpec"]["Env"]
    assert [(s["SecretName"], s["File"]["Name"]) for s in task["ContainerSpec"]["Secrets"]] == [
        (f"{STACK}_rooms_api_token", "rooms_api_token")
    ]
    assert task["ContainerSpec"]["Healthcheck"]["Test"] == ["CMD", "curl", "-fsS", "http://localhost:8000/health"]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 1_000_000_000, "MemoryBytes": 512 * 2**20}
    assert task["RestartPolicy"]["Condition"] == "any"
    assert {k: spec["UpdateConfig"][k] for k in ("Parallelism", "Order", "FailureAction")} == {
        "Parallelism": 1,
        "Order": "start-first",
        "FailureAction": "rollback",
    }
    assert [(p["TargetPort"], p["PublishMode"]) for p in spec["EndpointSpec"]["Ports"]] == [(8000, "host")]
    assert len(set(stack.urls)) == REPLICAS


def test_every_replica_wants_the_token(stack: Stack) -> None:
    for url in stack.urls:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        assert requests.get(f"{url}/capacity", timeout=10).status_code == 401
        assert requests.get(f"{url}/capacity", headers=HEADERS, timeout=10).json()["active_sessions"] == 0
        env = RoomsEnv(base_url=url).sync()
        try:
            with pytest.raises(AccessDenied, match="wants an access token"):
                env.reset()
        finally:
            env.close()


def running_tasks(service: str) -> list[dict[str, Any]]:
    """`docker inspect` of each running task of `service`."""
    task_ids = docker("service", "ps", "--quiet", "--filter", "desired-state=running", service).stdout.split()
    tasks = json.loads(docker("inspect", *task_ids).stdout) if task_ids else []
    return [task for task in tasks if task["Status"]["State"] == "running"]


def prometheus_url() -> str | None:
    """The stack's Prometheus at its host-mode port, once its task runs."""
    for task in running_tasks(PROMETHEUS):
        for port in task["Status"].get("PortStatus", {}).get("Ports") or []:
            if port["TargetPort"] == 9090:
                return f"http://127.0.0.1:{port['PublishedPort']}"
    return None


def replica_addresses() -> set[str]:
    """Each running replica's address on the stack's network, with the port Prometheus scrapes."""
    return {
        address.split("/")[0] + ":8000"
        for task in running_tasks(SERVICE)
        for attachment in task.get("NetworksAttachments") or []
        if attachment["Network"]["Spec"]["Name"] == f"{STACK}_rooms"
        for address in attachment["Addresses"]
    }


def prometheus_api(path: str, **params: str) -> Any:
    url = prometheus_url()
    if url is None:
        return None
    try:
        answer = requests.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    except requests.RequestException:
        return None
    return answer.json()["data"] if answer.ok else None


def test_prometheus_scrapes_every_replica(stack: Stack) -> None:
    """The stack's Prometheus finds each replica by DNS (tasks.rooms) and scrapes its /metrics with the token."""
    wait_for(lambda: len(replica_urls()) == REPLICAS, 120, f"{REPLICAS} healthy replicas", every_s=0.5)

    def targets() -> dict[str, str]:
        data = prometheus_api("targets", state="active")
        return {t["labels"]["instance"]: t["health"] for t in (data or {}).get("activeTargets", [])}

    wait_for(
        lambda: targets() == dict.fromkeys(replica_addresses(), "up") and len(replica_addresses()) == REPLICAS,
        120,
        "Prometheus scraping every replica",
        every_s=0.5,
    )
    up = prometheus_api("query", query='up{job="rooms"}')
    assert sorted((r["metric"]["instance"], r["value"][1]) for r in up["result"]) == sorted(
        (address, "1") for address in replica_addresses()
    )
    # What it scraped is the replicas' own figures: the sum of their session limits.
    wait_for(
        lambda: (
            [r["value"][1] for r in prometheus_api("query", query="sum(rooms_sessions_limit)")["result"]]
            == [str(REPLICAS * STACK_SESSIONS_PER_REPLICA)]
        ),
        60,
        "the replicas' session limits in Prometheus",
        every_s=0.5,
    )


def test_both_replicas_serve_and_one_session_past_their_limit_is_refused(stack: Stack) -> None:
    sessions = [
        RoomsEnv(base_url=stack.urls[i % REPLICAS], headers=HEADERS).sync()
        for i in range(REPLICAS * STACK_SESSIONS_PER_REPLICA)
    ]
    try:
        rewards = [env.reset() and env.step(RoomsAction(message="Hi")).reward for env in sessions]
        assert rewards == [0.2] * len(sessions)
        for url in stack.urls:
            extra = RoomsEnv(base_url=url, headers=HEADERS).sync()
            try:
                with pytest.raises(RuntimeError, match=r"code: CAPACITY_REACHED"):
                    extra.reset()
            finally:
                extra.close()
    finally:
        for env in sessions:
            env.close()


def test_readme_round_robin_pattern_spreads_sessions(stack: Stack) -> None:
    block = swarm_block("class RoundRobinRooms", lang="python")
    code, replaced = re.subn(
        r"^BASE_URLS = .*$", f"BASE_URLS = {stack.urls!r}", block.code, count=1, flags=re.MULTILINE
    )
    assert replaced == 1
    # Run where the stack's token file is, as rooms-token.txt: the block reads it from there.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=stack.token_file.parent, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert_prints_what_it_promises(block, result.stdout)


MCP_HEADERS = {**HEADERS, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def mcp_post(url: str, message: dict[str, Any], session_id: str | None = None) -> requests.Response:
    """One standard MCP request to `url`/mcp, on a connection of its own."""
    headers = {**MCP_HEADERS, **({"Mcp-Session-Id": session_id} if session_id else {})}
    return requests.post(f"{url}/mcp", json=message, headers=headers, timeout=30)


def echo_call(number: int, message: str) -> dict[str, Any]:
    arguments = {"name": "echo", "arguments": {"message": message}}
    return {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": arguments}


def test_a_standard_mcp_session_works_whichever_replica_each_request_reaches(stack: Stack) -> None:
    """As behind the routing mesh or a load balancer without affinity: a session opened on one replica,
    its calls sent to the other, which hands them to the first (ROOMS_PEERS in the stack file)."""
    first, second = stack.urls
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    }
    opened = mcp_post(first, initialize)
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    assert mcp_post(second, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session_id).status_code == 202
    steps = []
    for number, url in enumerate([second, first, second], start=1):
        answer = mcp_post(url, echo_call(number, "hello"), session_id).json()
        steps.append(answer["result"]["structuredContent"]["metadata"]["step"])
    assert steps == [1, 2, 3]  # one environment, on the replica that opened the session
    deleted = requests.delete(f"{second}/mcp", headers={**MCP_HEADERS, "Mcp-Session-Id": session_id}, timeout=30)
    assert deleted.status_code == 200
    assert mcp_post(first, echo_call(9, "gone"), session_id).status_code == 404


async def test_the_mcp_sdk_runs_a_session_on_each_replica(stack: Stack) -> None:
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    for url in stack.urls:
        async with (
            httpx.AsyncClient(headers=HEADERS, timeout=httpx.Timeout(30, read=300)) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            results = [await session.call_tool("echo", {"message": "hi"}) for _ in range(2)]
            assert [r.structuredContent["metadata"]["step"] for r in results if r.structuredContent] == [1, 2]


def with_token_file(args: list[str], token_file: Path) -> list[str]:
    """`rooms-bench failover` arguments with `--token-file` naming the stack's token file."""
    if "--token-file" in args:
        at = args.index("--token-file") + 1
        return [*args[:at], str(token_file), *args[at + 1 :]]
    return [*args, "--token-file", str(token_file)]


def run_failover_bench(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[int, dict[str, Any], str]:
    report_path = tmp_path / "failover.json"
    result = subprocess.run(
        [console_script("rooms-bench"), "failover", *args, "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return result.returncode, report, result.stdout + result.stderr


def test_bench_over_both_replicas_runs_clean(stack: Stack, tmp_path: Path) -> None:
    urls = [arg for url in stack.urls for arg in ("--url", url)]
    args = with_token_file([*urls, "--sessions", "8", "--duration", "3"], stack.token_file)
    status, report, output = run_failover_bench(tmp_path, *args)
    print(output)
    assert status == 0, output
    assert report["errors"] == [] and report["refused_opens"] == 0, report
    assert sorted(report["steps_by_url"]) == stack.urls
    assert all(steps > 0 for steps in report["steps_by_url"].values()), report


def test_killing_a_replica_under_load_loses_only_its_sessions(stack: Stack, tmp_path: Path) -> None:
    command = shlex.split(swarm_block("--kill-at").code.replace("rooms_rooms", stack.service))
    args = with_token_file(command[command.index("failover") + 1 :], stack.token_file)
    status, report, output = run_failover_bench(tmp_path, *args, timeout=240)
    print(output)
    assert report["killed_url"] in stack.urls, report
    assert report["sessions"] == ROLLOUTS, report
    # Rollouts round-robin over two replicas: half on the one killed, each of which lost its session once.
    assert report["errors_on_killed_replica"] == ROLLOUTS // 2 == report["sessions_lost"], report
    assert {e["kind"] for e in report["errors"]} == {"SessionLost"}, report
    assert report["errors_elsewhere"] == 0, report
    # No episode went on in another session, and every rollout that lost its session stepped again after reset().
    assert report["switched_episodes"] == 0 and report["episodes"] > ROLLOUTS, report
    assert (report["sessions_recovered"], report["sessions_unrecovered"]) == (ROLLOUTS // 2, 0), report
    assert report["replica_back_s"] is not None, report
    assert status == 0, output
    wait_for(lambda: len(replica_urls()) == REPLICAS, 60, f"{REPLICAS} healthy replicas again", every_s=0.5)
    assert report["killed_url"] not in replica_urls()


# --- OpenEnv's DockerSwarmProvider ----------------------------------------------------------------


class ProviderService(NamedTuple):
    provider: DockerSwarmProvider
    url: str
    name: str
    mesh_answers: bool


def service_names() -> set[str]:
    return set(docker("service", "ls", "--format", "{{.Name}}").stdout.split())


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def provider_service(swarm: None, built_image: BuiltImage) -> Iterator[ProviderService]:
    """A service started by DockerSwarmProvider, and whether the routing mesh answers for it."""
    before = service_names()
    provider = DockerSwarmProvider(auto_init_swarm=False)
    url = provider.start_container(built_image.name, env_vars={"MAX_CONCURRENT_ENVS": "4"}, replicas=REPLICAS)
    try:
        [name] = service_names() - before
        # A task is Running only once its container is healthy; then the mesh has had its chance.
        wait_for(
            lambda: (
                len(docker("service", "ps", "-q", "--filter", "desired-state=running", name).stdout.split()) == REPLICAS
                and all(
                    state.startswith("Running")
                    for state in docker(
                        "service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", name
                    ).stdout.splitlines()
                )
            ),
            180,
            "the provider's replicas",
            every_s=0.5,
        )
        deadline = time.monotonic() + 15
        mesh = answers(url)
        while not mesh and time.monotonic() < deadline:
            time.sleep(0.5)
            mesh = answers(url)
        yield ProviderService(provider, url, name, mesh)
    finally:
        provider.stop_container()


def test_provider_creates_the_service_it_is_asked_for(
    provider_service: ProviderService, built_image: BuiltImage
) -> None:
    spec = json.loads(docker("service", "inspect", provider_service.name, "--format", "{{json .Spec}}").stdout)
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"].startswith(built_image.name)
    assert spec["Mode"] == {"Replicated": {"Replicas": REPLICAS}}
    assert "MAX_CONCURRENT_ENVS=4" in spec["TaskTemplate"]["ContainerSpec"]["Env"]
    port = int(provider_service.url.rsplit(":", 1)[1])
    assert [(p["TargetPort"], p["PublishedPort"], p["PublishMode"]) for p in spec["EndpointSpec"]["Ports"]] == [
        (8000, port, "ingress")
    ]
    containers = docker(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={provider_service.name}"
    ).stdout.split()
    health = docker("inspect", "--format", "{{.State.Health.Status}}", *containers).stdout.split()
    assert health == ["healthy"] * REPLICAS


def test_provider_serves_sessions_through_the_routing_mesh(provider_service: ProviderService) -> None:
    if not provider_service.mesh_answers:
        pytest.skip("the routing mesh does not answer on this host (no IPVS in its kernel); needs a normal Docker host")
    sessions = [RoomsEnv(base_url=provider_service.url).sync() for _ in range(REPLICAS * SESSIONS_PER_REPLICA)]
    try:
        assert [env.step(RoomsAction(message="Hi")).reward for env in sessions] == [0.2] * len(sessions)
    finally:
        for env in sessions:
            env.close()
    [block] = [b for b in readme_blocks("swarm-host") if "DockerSwarmProvider" in b.code]
    assert_prints_what_it_promises(block, run_python(block.code))


def test_closing_the_client_removes_the_service(provider_service: ProviderService) -> None:
    RoomsEnv(base_url=provider_service.url, provider=provider_service.provider).close()
    assert provider_service.name not in service_names()
