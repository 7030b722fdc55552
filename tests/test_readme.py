"""Every README code block runs, as its marker says (see tests/readme_blocks.py)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, LiveServer, free_port, start_server
from tests.readme_blocks import (
    KINDS,
    Block,
    assert_prints_what_it_promises,
    fence_count,
    layout_paths,
    readme_blocks,
    readme_text,
    run_python,
)


def test_every_fenced_block_is_marked_with_a_known_kind() -> None:
    blocks = readme_blocks()
    assert len(blocks) == fence_count(), "a fenced block in README.md has no <!-- readme-test: KIND --> marker"
    assert {b.kind for b in blocks} <= set(KINDS)


def test_readme_starts_with_the_space_card_then_the_two_commands() -> None:
    text = readme_text()
    assert text.startswith(
        "---\ntitle: Rooms Environment Server\nemoji: 🏉\ncolorFrom: yellow\ncolorTo: yellow\nsdk: docker\n"
        "pinned: false\napp_port: 8000\nbase_path: /web\ntags:\n  - openenv\n---\n"
    )
    first_two = readme_blocks()[:2]
    assert [(b.kind, b.code) for b in first_two] == [
        ("server-command", "uv run server\n"),
        ("test-command", "uv run pytest\n"),
    ]


@pytest.mark.parametrize("block", readme_blocks("python"), ids=lambda b: b.id)
def test_python_block(block: Block) -> None:
    assert_prints_what_it_promises(block, run_python(block.code))


@pytest.mark.parametrize("block", readme_blocks("live-server"), ids=lambda b: b.id)
def test_live_server_block(block: Block, live_server: LiveServer) -> None:
    assert "http://localhost:8000" in block.code
    stdout = run_python(block.code.replace("http://localhost:8000", live_server.url))
    assert_prints_what_it_promises(block, stdout)


@pytest.mark.parametrize("block", readme_blocks("server-command"), ids=lambda b: b.id)
def test_server_command_block(block: Block, tmp_path: Path) -> None:
    [command] = [line for line in block.code.splitlines() if line and not line.startswith("#")]
    port = free_port()
    command = re.sub(r"--port \d+", f"--port {port}", command)
    assignments = {}
    words = shlex.split(command)
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    env = {**assignments, "PORT": str(port), "UVICORN_PORT": str(port)}
    server = start_server(tmp_path, command=words, env=env, port=port)
    try:
        assert requests.get(f"{server.url}/metadata").json()["name"] == "Rooms"
        if assignments.get("ENABLE_WEB_INTERFACE") == "true":
            assert requests.get(f"{server.url}/web/").status_code == 200
    finally:
        server.stop()


def test_test_command_block_is_what_ci_runs() -> None:
    [block] = readme_blocks("test-command")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^\s*{re.escape(block.code.strip())}\b", ci, re.M), ".ci/run must run the README's test command"
    assert os.environ.get("PYTEST_CURRENT_TEST")  # and this suite is that command running


@pytest.mark.parametrize("block", readme_blocks("shell"), ids=lambda b: b.id)
def test_shell_block(block: Block) -> None:
    result = subprocess.run(["bash", "-euc", block.code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    if "openenv validate" in block.code:
        assert result.stdout.rstrip().endswith("Verdict: PASS")
    following = [b for b in readme_blocks() if b.index == block.index + 1]
    if following and following[0].kind == "output":
        for label in _row_labels(following[0].code):
            assert label in _row_labels(result.stdout), f"README shows a row {label!r} the command no longer prints"


@pytest.mark.parametrize("block", readme_blocks("sweep-command"), ids=lambda b: b.id)
def test_sweep_command_block(block: Block) -> None:
    small = re.sub(r"--reps \S+", "--reps 1", re.sub(r"--sizes \S+", "--sizes 4,8", block.code))
    assert small != block.code, "a sweep command must give --sizes and --reps, which the suite makes small"
    result = subprocess.run(["bash", "-euc", small], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    [following] = [b for b in readme_blocks() if b.index == block.index + 1]
    assert following.kind == "output"
    for label in _row_labels(following.code):
        assert label in _row_labels(result.stdout), f"README shows a row {label!r} the command no longer prints"


@pytest.mark.parametrize("block", readme_blocks("live-shell"), ids=lambda b: b.id)
def test_live_shell_block(block: Block, live_server: LiveServer) -> None:
    assert "http://localhost:8000" in block.code
    command = block.code.replace("http://localhost:8000", live_server.url)
    result = subprocess.run(["bash", "-euc", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("Verdict: PASS")


def _row_labels(table: str) -> list[str]:
    """First cells of a rich table's rows, and the lines outside tables."""
    labels = []
    for line in table.splitlines():
        if line.startswith("│"):
            labels.append(line.split("│")[1].strip())
        elif line.startswith("cold start"):
            labels.append(line.split(":")[0])
    return labels


def test_every_output_block_follows_a_block_that_prints_it() -> None:
    blocks = readme_blocks()
    for block in blocks:
        if block.kind == "output":
            assert blocks[block.index - 1].kind in ("shell", "sweep-command")


@pytest.mark.parametrize("block", readme_blocks("app-excerpt"), ids=lambda b: b.id)
def test_app_excerpt_block_is_what_the_app_does(block: Block) -> None:
    assert block.code in (ROOT / "server" / "app.py").read_text()


def test_layout_block_lists_real_paths() -> None:
    [block] = readme_blocks("layout")
    paths = layout_paths(block)
    for path in paths:
        assert (ROOT / path).exists(), f"README lists {path}, which does not exist"
    assert len(paths) >= 12
