"""server/Dockerfile for real: build, run, health, the README's Docker blocks, from_hub."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from rooms.kit.client import LocalDocker
from tests.conftest import (
    BASE_IMAGE,
    DOCKER_ENGINE,
    ROOT,
    BuiltImage,
    Container,
    console_script,
    docker,
    free_port,
    running_container,
    wait_for,
    wait_until_healthy,
)
from tests.readme_blocks import Block, assert_prints_what_it_promises, readme_blocks, run_python

pytestmark = pytest.mark.docker


def test_the_docker_tests_share_one_worker(request: pytest.FixtureRequest) -> None:
    """Under `--dist loadgroup`, pytest-xdist names the group in each test's id and runs the group on one
    worker: one image build, one swarm (pytest 9.2 ignores the id it sets: pytest-xdist#1386)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("runs under pytest-xdist's --dist loadgroup (the suite's default)")
    assert request.node.nodeid.endswith(f"@{DOCKER_ENGINE}"), f"pytest-xdist did not group {request.node.nodeid}"


def containers_of(image: str) -> set[str]:
    """The containers created from `image` by that name, but a swarm service's tasks (the swarm tests may run the
    same image alongside). Docker's `ancestor` filter alone would also list the containers of every image built on
    it, or built from the same cached layers (the other Docker group's `openenv build` and push bundle images)."""
    listed = docker(
        "ps", "-a", "--filter", f"ancestor={image}",
        "--format", '{{.ID}} {{.Image}} {{.Label "com.docker.swarm.service.id"}}',
    )  # fmt: skip
    rows = [row.split() for row in listed.stdout.splitlines()]
    return {row[0] for row in rows if len(row) == 2 and row[1] == image}


def docker_block(text: str) -> Block:
    [block] = [b for b in readme_blocks("docker") if text in b.code]
    return block


@pytest.fixture
def container(built_image: BuiltImage) -> Iterator[Container]:
    """A detached container of the image on a free port."""
    with running_container(built_image.name) as container:
        yield container


def test_image_is_built_by_the_readme_command(built_image: BuiltImage, artifacts: Path) -> None:
    figures = {
        "image": built_image.name,
        "size_mb": round(built_image.size_bytes / 1e6),
        "build_seconds": round(built_image.build_seconds),
    }
    (artifacts / "docker-image.json").write_text(json.dumps(figures, indent=2))
    print(f"\n{figures}")
    assert built_image.size_bytes < 800e6, figures


def test_virtual_environment_is_shipped_once(built_image: BuiltImage) -> None:
    listing = docker("run", "--rm", built_image.name, "sh", "-c", "ls -d /app/.venv /app/env/.venv 2>&1 || true").stdout
    assert "/app/.venv" in listing and "cannot access '/app/env/.venv'" in listing
    layers = [
        int(size)
        for size in docker(
            "history", "--no-trunc", "--format", "{{.Size}}", "--human=false", built_image.name
        ).stdout.split()
    ]
    base_layers = [
        int(s) for s in docker("history", "--format", "{{.Size}}", "--human=false", BASE_IMAGE).stdout.split()
    ]
    big_layers_added = [size for size in layers[: len(layers) - len(base_layers)] if size > 50e6]
    assert len(big_layers_added) == 1, layers


def test_container_answers_and_reports_healthy(container: Container) -> None:
    name, url = container.name, container.url
    assert requests.get(f"{url}/health").json() == {"status": "healthy"}
    assert requests.post(f"{url}/step", json={"action": {"message": "Hi"}}).json()["reward"] == 0.2

    def health() -> str:
        return str(docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout).strip()

    wait_for(lambda: health() == "healthy", 90, f"{name} reported healthy (its HEALTHCHECK)", every_s=1)


@pytest.mark.parametrize("text", ["roomsenv = RoomsEnv.from_docker_image", "asyncio.run(main())"])
def test_readme_from_docker_image_blocks_run_as_written(built_image: BuiltImage, text: str) -> None:
    block = docker_block(text)
    before = containers_of(built_image.name)
    stdout = run_python(block.code, timeout=600)
    assert_prints_what_it_promises(block, stdout)
    if "roomsenv" in block.code:
        assert "  → Reward: 1.3" in stdout and "Reset: Rooms environment ready!" in stdout
    assert containers_of(built_image.name) == before, "close() must remove the container it started"


def test_local_docker_stops_the_container_it_started_and_no_other(built_image: BuiltImage) -> None:
    before = containers_of(built_image.name)
    first, second = LocalDocker(), LocalDocker()
    try:
        first.start_container(built_image.name)
        second.start_container(built_image.name)
        assert first.container_id and second.container_id and first.container_id != second.container_id
        started = {first.container_id[:12], second.container_id[:12]}
        assert containers_of(built_image.name) == before | started
        first.stop_container()
        assert containers_of(built_image.name) == before | {second.container_id[:12]}
    finally:
        first.stop_container()
        second.stop_container()
    assert containers_of(built_image.name) == before


def test_readme_docker_run_block_honours_settings(built_image: BuiltImage) -> None:
    block = docker_block("docker run")
    port = free_port()
    name = f"rooms-run-{port}"
    command = block.code.strip().replace("-p 8000:8000", f"--name {name} -p 127.0.0.1:{port}:8000")
    process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, timeout=120)
        assert requests.get(f"{url}/web/").status_code == 200  # ENABLE_WEB_INTERFACE=true
        ws_url = url.replace("http", "ws") + "/ws"
        with ExitStack() as sessions:
            for _ in range(4):
                ws = sessions.enter_context(connect(ws_url))
                ws.send(json.dumps({"type": "step", "data": {"message": "x"}}))
                assert json.loads(ws.recv(timeout=10))["type"] == "observation"
            with connect(ws_url) as fifth:
                refusal = json.loads(fifth.recv(timeout=10))
        assert refusal["data"]["code"] == "CAPACITY_REACHED"
        assert refusal["data"]["max_sessions"] == 4  # MAX_CONCURRENT_ENVS=4
    finally:
        docker("rm", "-f", name, check=False)
        process.wait(timeout=30)


def test_readme_hub_block_up_to_the_network(built_image: BuiltImage) -> None:
    """`from_hub` as written: the Space's registry image is stood in for by a local tag,
    and the uv form runs this checkout instead of cloning the Space's repository."""
    [block] = [b for b in readme_blocks("hub") if b.lang == "python"]
    hub_image = "registry.hf.space/my-org-rooms:latest"
    docker("tag", built_image.name, hub_image)
    try:
        before = containers_of(hub_image)
        code = block.code.replace("use_docker=False)", f'use_docker=False, project_path="{ROOT}")')
        assert code != block.code
        assert_prints_what_it_promises(block, run_python(code, timeout=600))
        assert containers_of(hub_image) == before
    finally:
        docker("rmi", hub_image, check=False)


def test_openenv_validate_against_the_running_container_passes(container: Container, artifacts: Path) -> None:
    url = container.url
    result = subprocess.run(
        [console_script("openenv"), "validate", "--url", url], capture_output=True, text=True, timeout=120
    )
    (artifacts / "openenv-validate-url-container.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("Verdict: PASS")
    assert "FAIL" not in result.stdout
