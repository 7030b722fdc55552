"""Every code block of README.md and docs/*.md runs, as its marker says (see tests/readme_blocks.py);
the README keeps the seed's sections, in its order, and stays short."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from tests.conftest import ROOT, InProcessServer, Served, free_port, start_server
from tests.readme_blocks import (
    KINDS,
    SMALL_SIZES,
    SWEEP_COMMANDS,
    Block,
    assert_output_has_the_shape_shown,
    assert_prints_what_it_promises,
    block_id,
    documents,
    fence_count,
    layout_paths,
    next_block,
    output_shape,
    readme_blocks,
    readme_text,
    run_in_process,
    with_small_sizes,
)

# The sections of the README Rooms lives up to, in its order (### under the ## before them).
SEED_SECTIONS = [
    "## Quick Start",
    "## Building the Docker Image",
    "## Deploying to Hugging Face Spaces",
    "## Environment Details",
    "### Action",
    "### Observation",
    "### Reward",
    "## Advanced Usage",
    "### Connecting to an Existing Server",
    "### Using the Context Manager",
    "### Concurrent WebSocket Sessions",
    "## Development & Testing",
    "### Direct Environment Testing",
    "### Running Locally",
    "## Project Structure",
]
# Sections kept short in the README, each with the page of docs/ that holds the rest.
SHORT_SECTIONS = {
    "## Make your own environment": "docs/make-your-own.md",
    "## Configuration and Limits": "docs/configuration.md",
    "## Performance": "docs/performance.md",
    "## Scaling out and training": "docs/scaling-out.md",
}
MAX_SHORT_SECTION_LINES = 15
MAX_README_LINES = 300
MAX_TABLE_WIDTH = 120


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fenced_block_is_marked_with_a_known_kind(path: Path) -> None:
    source = path.relative_to(ROOT).as_posix()
    blocks = [b for b in readme_blocks() if b.source == source]
    assert len(blocks) == fence_count(path), f"a fenced block in {source} has no <!-- readme-test: KIND --> marker"
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


def speaks_mcp(block: Block) -> bool:
    return "/mcp" in block.code or "MCPToolClient" in block.code


# The blocks of MCP run on one pytest-xdist worker, which starts `server --workers 2` for them once.
LIVE_SERVER_BLOCKS = [
    pytest.param(block, marks=[pytest.mark.xdist_group("two-worker-server")] if speaks_mcp(block) else [])
    for block in readme_blocks("live-server")
]


@pytest.mark.parametrize("block", LIVE_SERVER_BLOCKS, ids=block_id)
def test_live_server_block(block: Block, live_server: InProcessServer, request: pytest.FixtureRequest) -> None:
    """Each block against the default server; those of MCP against `server --workers 2`, whose workers
    hand each other their sessions' requests."""
    assert "http://localhost:8000" in block.code
    server: Served = request.getfixturevalue("two_worker_server") if speaks_mcp(block) else live_server
    stdout = run_in_process(block.code.replace("http://localhost:8000", server.url))
    assert_prints_what_it_promises(block, stdout)


@pytest.mark.parametrize("block", readme_blocks("server-command"), ids=block_id)
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
        with connect(server.ws_url) as ws:
            ws.send(json.dumps({"type": "step", "data": {"message": "Hi"}}))
            assert json.loads(ws.recv(timeout=10))["data"]["reward"] == 0.2
        if assignments.get("ENABLE_WEB_INTERFACE") == "true":
            assert requests.get(f"{server.url}/web/").status_code == 200
    finally:
        server.stop()


def test_test_command_block_is_what_ci_runs() -> None:
    [block] = readme_blocks("test-command")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^\s*{re.escape(block.code.strip())}\b", ci, re.M), ".ci/run must run the README's test command"
    assert os.environ.get("PYTEST_CURRENT_TEST")  # and this suite is that command running


@pytest.mark.parametrize("block", readme_blocks("shell"), ids=block_id)
def test_shell_block(block: Block) -> None:
    result = subprocess.run(["bash", "-euc", block.code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    following = next_block(block)
    if following and following.kind == "output":
        assert_output_has_the_shape_shown(following, result.stdout)


def test_small_sizes_replace_only_the_sizes() -> None:
    command = "uv run rooms-bench capacity --wait 1 --sizes 256,1024 --reps 3 --max-sessions 8192 --floor"
    assert with_small_sizes(command) == (
        "uv run rooms-bench capacity --wait 0.1 --sizes 4 --reps 1 --max-sessions 8192 --floor"
    )


@pytest.mark.parametrize("block", readme_blocks("sweep-command"), ids=block_id)
def test_sweep_command_block_is_run_by_a_bench_test(block: Block) -> None:
    assert any(option in block.code for option in SMALL_SIZES), "a sweep command gives the sizes the suite makes small"
    command = " ".join(block.code.split()[2:])  # what follows `uv run`
    [says] = [says for says in SWEEP_COMMANDS if says in command]
    assert f'run_sweep_command("{says}"' in (ROOT / SWEEP_COMMANDS[says]).read_text(encoding="utf-8")


def test_output_shape_sets_numbers_aside() -> None:
    shown = "┃ run ┃ p50 µs ┃\n│ sweep 1000 sessions │ 36,623 │\ncold start, rooms: 3.15 s\n└──┘"
    printed = "┃ run ┃ p50 µs ┃\n│ sweep 2 sessions │ 156 │\ncold start, rooms: 2.9 s"
    assert output_shape(shown) == output_shape(printed)
    assert output_shape("│ floor │ 1 │") - output_shape(printed) == {"row: floor"}


def test_every_output_block_follows_a_block_that_prints_it() -> None:
    blocks = readme_blocks()
    for block in blocks:
        if block.kind == "output":
            before = blocks[block.index - 1]
            assert before.source == block.source and before.kind in ("shell", "sweep-command"), block.id


@pytest.mark.parametrize("block", readme_blocks("app-excerpt"), ids=block_id)
def test_app_excerpt_block_is_what_the_app_does(block: Block) -> None:
    assert block.code in (ROOT / "server" / "app.py").read_text()


def test_layout_block_lists_real_paths() -> None:
    [block] = readme_blocks("layout")
    paths = layout_paths(block)
    for path in paths:
        assert (ROOT / path).exists(), f"README lists {path}, which does not exist"
    assert len(paths) >= 12


def readme_sections() -> dict[str, list[str]]:
    """The README's headings (## and ###), each with its lines up to the next heading."""
    sections: dict[str, list[str]] = {}
    heading = ""
    in_fence = False
    for line in readme_text().splitlines():
        in_fence = in_fence != line.startswith("```")
        if not in_fence and re.match(r"#{2,3} ", line):
            heading = line
            sections[heading] = []
        elif heading:
            sections[heading].append(line)
    return sections


def test_readme_has_the_seeds_sections_in_its_order() -> None:
    headings = list(readme_sections())
    found = [h for h in headings if h in SEED_SECTIONS]
    assert found == SEED_SECTIONS, f"README sections: {headings}"


def test_make_your_own_environment_comes_right_after_quick_start() -> None:
    top_level = [h for h in readme_sections() if h.startswith("## ")]
    assert top_level[top_level.index("## Quick Start") + 1] == "## Make your own environment"


@pytest.mark.parametrize("heading", SHORT_SECTIONS)
def test_short_section_links_to_the_page_with_the_rest(heading: str) -> None:
    lines = readme_sections()[heading]
    while lines and not lines[-1].strip():
        lines.pop()
    assert len(lines) <= MAX_SHORT_SECTION_LINES, f"{heading} has {len(lines)} lines"
    assert f"]({SHORT_SECTIONS[heading]}" in "\n".join(lines), f"{heading} must link to {SHORT_SECTIONS[heading]}"


def test_readme_is_at_most_300_lines() -> None:
    lines = readme_text().splitlines()
    assert len(lines) <= MAX_README_LINES


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_tables_are_at_most_120_characters_wide(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith(("|", "┃", "│", "┏", "┡", "└")):
            assert len(line) <= MAX_TABLE_WIDTH, f"{path.name}:{number} is a table row {len(line)} characters wide"


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub and the Hub give the headings of a Markdown file."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_reach_a_file_and_heading(path: Path) -> None:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in heading_anchors(linked), f"{path.name} links to {target}: no such heading"
