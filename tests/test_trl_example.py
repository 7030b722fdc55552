"""examples/trl_grpo.py trains against a live Rooms server with TRL, in both of its variants.

These tests need the `trl` dependency group (`uv sync --group trl`): they skip without
it on a laptop and fail without it under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rooms import RoomsEnv
from tests.conftest import ROOT, LiveServer, ServerFactory, require
from tests.readme_blocks import Block, block_id, readme_blocks

# On one pytest-xdist worker: its tests share one server, made once.
pytestmark = pytest.mark.xdist_group("trl")

EXAMPLE = ROOT / "examples" / "trl_grpo.py"
MAX_CONCURRENT_ENVS = 8
ROLLOUTS_PER_STEP = 4  # the smoke run: 2 prompts per step x 2 generations
SMOKE_STEPS = 2
TRAINED = "training over, the trainer is gone"

# Runs the example's main() in a process that stays alive afterwards, until told to exit on stdin:
# a session the example forgot to close would still hold its slot on the server meanwhile. Its
# directory comes first on sys.path, as for `python examples/trl_grpo.py` (--smoke imports trl_smoke).
DRIVER = f"""
import os, runpy, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
runpy.run_path(sys.argv[1])["main"](sys.argv[2:])
print({TRAINED!r}, flush=True)
sys.stdin.readline()
"""


def trl_group_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("trl", "transformers", "torch"))


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A Rooms server that serves MAX_CONCURRENT_ENVS sessions at once, and refuses more; for this module."""
    require(trl_group_installed(), "needs the trl dependency group: `uv sync --group trl`")
    factory = ServerFactory(tmp_path_factory.mktemp("trl-server"))
    yield factory(env={"MAX_CONCURRENT_ENVS": str(MAX_CONCURRENT_ENVS)})
    factory.stop_all()


def readme_command(kind: str, server: LiveServer) -> list[str]:
    """The README's `uv run --group trl python examples/trl_grpo.py ...` command of this kind, as words."""
    [block] = readme_blocks(kind)
    assert "http://localhost:8000" in block.code
    words = shlex.split(block.code.replace("http://localhost:8000", server.url))
    assert words[:6] == ["uv", "run", "--group", "trl", "python", "examples/trl_grpo.py"], block.code
    return words


def open_sessions(url: str, count: int) -> tuple[list[Any], list[str]]:
    """Try to open `count` sessions at once; return the open clients and the refusals."""
    opened, refused = [], []
    for _ in range(count):
        client = RoomsEnv(base_url=url).sync()
        try:
            client.reset()
            opened.append(client)
        except RuntimeError as error:
            refused.append(str(error))
            client.close()
    return opened, refused


def assert_server_accepts_every_session(url: str) -> None:
    """MAX_CONCURRENT_ENVS new sessions open; one more is refused, so none is held by anybody else."""
    opened, refused = open_sessions(url, MAX_CONCURRENT_ENVS + 1)
    try:
        assert len(opened) == MAX_CONCURRENT_ENVS, f"only {len(opened)} sessions free after training: {refused}"
        assert len(refused) == 1 and "CAPACITY_REACHED" in refused[0], refused
    finally:
        for client in opened:
            client.close()


def train_then_check_sessions(tmp_path: Path, server: LiveServer, arguments: list[str]) -> dict[str, Any]:
    """Run the example; once it has trained, and while its process lives, check every session is free."""
    log_path = tmp_path / "run.json"
    command = [sys.executable, "-c", DRIVER, str(EXAMPLE), *arguments, "--log-json", str(log_path)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.strip() == TRAINED:
                break
        else:
            pytest.fail(f"the example exited with code {process.wait()} before training was over:\n{''.join(output)}")
        assert_server_accepts_every_session(server.url)
    finally:
        process.stdin.close()
        output.extend(process.stdout)
        process.wait(timeout=60)
    printed = "".join(output)
    assert process.returncode == 0, printed
    assert f"step {SMOKE_STEPS}: reward " in printed, printed
    assert f"sessions opened: {ROLLOUTS_PER_STEP} (closed now)" in printed, printed
    log: dict[str, Any] = json.loads(log_path.read_text())
    return log


def assert_rewards_are_the_environments(log: dict[str, Any]) -> None:
    """Each step's logged reward is the mean of what Rooms returned: len(message) x 0.1 per echo."""
    assert [step["step"] for step in log["steps"]] == list(range(1, SMOKE_STEPS + 1))
    for echo in log["echoes"]:
        assert echo["reward"] == pytest.approx(len(echo["message"]) * 0.1)
    for step in log["steps"]:
        returned = step["environment_rewards"]
        assert len(returned) == ROLLOUTS_PER_STEP
        for rollout in returned:
            expected = len(rollout["message"]) * 0.1 if rollout["message"] is not None else 0.0
            assert rollout["reward"] == pytest.approx(expected)
        mean = sum(r["reward"] for r in returned) / len(returned)
        assert step["logged_reward"] == pytest.approx(mean, abs=1e-5)
    assert any(step["logged_reward"] > 0 for step in log["steps"]), "no rollout of the smoke model echoed anything"


@pytest.mark.trl
@pytest.mark.timeout(600)
@pytest.mark.parametrize("variant", [[], ["--variant", "rollout_func"]], ids=["environment_factory", "rollout_func"])
def test_readme_smoke_run_trains_on_the_environments_rewards_and_frees_its_sessions(
    variant: list[str], small_server: LiveServer, tmp_path: Path
) -> None:
    """The README's smoke command (and its rollout_func variant), run with this suite's Python."""
    arguments = readme_command("trl-smoke", small_server)[6:] + variant
    log = train_then_check_sessions(tmp_path, small_server, arguments)
    assert log["variant"] == (variant[1] if variant else "environment_factory")
    rollouts = ROLLOUTS_PER_STEP * SMOKE_STEPS
    assert log["calls"]["reset"] == rollouts
    assert log["calls"]["get_reward"] == rollouts
    assert log["calls"]["echo"] >= 1
    assert len(log["echoes"]) == log["calls"]["echo"]
    assert_rewards_are_the_environments(log)
    assert log["sessions_opened"] == ROLLOUTS_PER_STEP, "one session per rollout of a step, reused across steps"


@pytest.mark.trl
def test_readme_gpu_command_runs_up_to_the_gpu(small_server: LiveServer) -> None:
    """As written, against a live server: it parses its options, reaches the server, then stops for want of a GPU."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the command would train for real, longer than the suite allows")
    command = readme_command("trl-gpu", small_server)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "needs a CUDA GPU and none is available here" in result.stderr, result.stderr


@pytest.mark.parametrize("block", readme_blocks("trl-excerpt"), ids=block_id)
def test_readme_excerpt_is_what_the_example_does(block: Block) -> None:
    example_lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    excerpt = [line.strip() for line in block.code.strip().splitlines()]
    starts = [i for i, line in enumerate(example_lines) if line == excerpt[0]]
    assert any(example_lines[i : i + len(excerpt)] == excerpt for i in starts), "the README's excerpt left the example"
