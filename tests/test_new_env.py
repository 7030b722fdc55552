"""`rooms-new NAME DIR`: a new environment from Rooms, where a person changes only the models,
`reset`/`step` and the reward range.

The example is Wordcount: an action with a `text`, an observation with its `word_count`,
reward = the number of words, `done` after 5 steps. The tests apply exactly that edit to what
the command writes and check that nothing else had to change: the new project's own tests pass,
its `server` command serves it, its typed client steps it, `openenv validate` passes, and its
image builds and serves. Each failure seen when Rooms was copied by hand is checked: the server
starts from the project's own environment (`No module named 'uvicorn'`), uv installs the project
alone (`... is not a workspace member`), the package ships its README and manifest, read with
importlib.resources (`MultiplexedPath only supports directories`, `/metadata` 500), and
`openenv validate` recognises the package.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rooms_new import OWN_FILES, derive, generic_files
from rooms_new.cli import main
from tests.conftest import (
    ROOT,
    console_script,
    docker,
    free_port,
    require,
    running_container,
    start_server,
)
from tests.readme_blocks import Block, block_id, readme_blocks

NAME = "wordcount"
IMAGE = "wordcount-env:latest"


def person_edit() -> tuple[str, str, str]:
    """The person's edit, as docs/make-your-own.md shows it: models.py, `reset`/`step`, the reward range."""
    models, reset_step, manifest = (block.code for block in readme_blocks("new-env") if block.lang != "bash")
    [reward_range] = [line.strip() for line in manifest.splitlines() if line.strip().startswith("range:")]
    return models, textwrap.indent(reset_step, "    "), reward_range


WORDCOUNT_MODELS, WORDCOUNT_RESET_STEP, WORDCOUNT_REWARD_RANGE = person_edit()
ENVIRONMENT = f"server/{NAME}_environment.py"
EDITED = {"models.py", ENVIRONMENT, "openenv.yaml"}
# Stepped from the new project's own virtual environment, with its typed client: sync, then async.
CLIENT_SCRIPT = """
import asyncio, sys
from wordcount import WordcountAction, WordcountEnv

url = sys.argv[1]
with WordcountEnv(base_url=url).sync() as env:
    env.reset()
    result = env.step(WordcountAction(text="the quick brown fox"))
    assert (result.observation.word_count, result.reward, result.done) == (4, 4.0, False), result
    for _ in range(4):
        result = env.step(WordcountAction(text="one two"))
    assert (result.reward, result.done, env.state().step_count) == (2.0, True, 5), result


async def main() -> None:
    async with WordcountEnv(base_url=url) as env:
        await env.reset()
        result = await env.step(WordcountAction(text="  spaced   out  words "))
        assert (result.observation.word_count, result.reward) == (3, 3.0), result


asyncio.run(main())
print("stepped: sync and async")
"""


def project_files(project: Path) -> dict[str, bytes]:
    """Every file of a new project that the command or the person writes (not its .venv or build output)."""
    skipped = {".venv", "build", "__pycache__", ".pytest_cache"}
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and not skipped & set(path.relative_to(project).parts) and ".egg-info" not in str(path)
    }


def without_methods(source: str, class_name: str, methods: tuple[str, ...], replacement: str = "") -> str:
    """`source` with the adjacent methods `methods` of `class_name` replaced by `replacement`."""
    [cls] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == class_name]
    found = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in methods]
    assert [n.name for n in found] == list(methods) and cls.body.index(found[-1]) - cls.body.index(found[0]) == len(
        methods
    ) - 1, f"{methods} are not adjacent methods of {class_name}"
    lines = source.splitlines(keepends=True)
    end = found[-1].end_lineno
    assert end is not None
    return "".join(lines[: found[0].lineno - 1]) + replacement + "".join(lines[end:])


def make_it_wordcount(project: Path) -> None:
    """The person's edit: the models, `reset` and `step`, and the manifest's reward range. Nothing else."""
    (project / "models.py").write_text(WORDCOUNT_MODELS)
    environment = project / ENVIRONMENT
    edited = without_methods(environment.read_text(), "WordcountEnvironment", ("reset", "step"), WORDCOUNT_RESET_STEP)
    environment.write_text(edited)
    manifest = project / "openenv.yaml"
    text, replaced = re.subn(r"range: \[.*\]", WORDCOUNT_REWARD_RANGE, manifest.read_text())
    assert replaced == 1
    manifest.write_text(text)


def unified_diff(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> str:
    return "".join(
        "".join(
            difflib.unified_diff(
                before.get(path, b"").decode().splitlines(keepends=True),
                after.get(path, b"").decode().splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        )
        for path in sorted(before.keys() | after.keys())
    )


@dataclass
class Derived:
    project: Path
    before: dict[str, bytes]  # as the command wrote it
    after: dict[str, bytes]  # after the person's edit
    diff: str


@pytest.fixture(scope="module")
def wordcount(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Derived:
    """`rooms-new wordcount DIR --no-lock`, then the person's Wordcount edit; the edit's diff is kept."""
    project = tmp_path_factory.mktemp("new") / NAME
    assert main([NAME, str(project), "--no-lock"]) == 0
    before = project_files(project)
    make_it_wordcount(project)
    after = project_files(project)
    diff = unified_diff(before, after)
    (artifacts / "wordcount-person.diff").write_text(diff)
    return Derived(project, before, after, diff)


def uv() -> str:
    found = shutil.which("uv")
    require(found is not None, "needs uv on PATH: https://docs.astral.sh/uv/")
    assert found is not None
    return found


def outside_this_project() -> dict[str, str]:
    """This process's environment without what points uv at this project's virtual environment."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


def run(command: list[str], cwd: Path, log: Path, timeout: float = 600) -> str:
    """Run `command`, keep its output in `log`, and return it; fail with it if the command fails."""
    result = subprocess.run(
        command, cwd=cwd, env=outside_this_project(), capture_output=True, text=True, timeout=timeout
    )
    output = f"$ {' '.join(command)}\n{result.stdout}{result.stderr}"
    log.write_text(output)
    assert result.returncode == 0, output[-6000:]
    return output


# --- what the command refuses -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["WordCount", "word-count", "1words", "class", "json", "pydantic", "rooms", ""])
def test_a_bad_name_is_refused_in_one_line_and_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "env"
    assert main([name, str(target), "--no-lock"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("rooms-new: ") and error.count("\n") == 1 and repr(name) in error
    assert not target.exists()


def test_a_directory_that_is_not_empty_is_refused_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main([NAME, str(tmp_path), "--no-lock"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("rooms-new: ") and error.count("\n") == 1 and str(tmp_path) in error
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_directory_inside_the_rooms_checkout_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    target = ROOT / "wordcount-inside"
    assert main([NAME, str(target), "--no-lock"]) == 2
    assert "inside Rooms' checkout" in capsys.readouterr().err
    assert not target.exists()


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    assert main([NAME, str(tmp_path), "--no-lock"]) == 0
    assert (tmp_path / "pyproject.toml").is_file() and (tmp_path / ENVIRONMENT).is_file()


# --- what it writes -----------------------------------------------------------------------------


def test_every_generic_module_is_copied_byte_for_byte(wordcount: Derived) -> None:
    generic = generic_files()
    assert {"kit/client.py", "kit/application.py", "kit/settings.py", "server/Dockerfile"} <= set(generic)
    for path in generic:
        assert wordcount.before[path] == (ROOT / path).read_bytes(), path


def test_rooms_own_files_are_renamed(wordcount: Derived) -> None:
    renamed = {path.replace("rooms", NAME) for path in OWN_FILES}
    assert renamed <= wordcount.before.keys()
    assert {"pyproject.toml", "openenv.yaml", "README.md", "uv.lock"} - wordcount.before.keys() == {
        "uv.lock"
    }  # --no-lock
    assert {f"tests/test_{NAME}.py", "tests/conftest.py"} <= wordcount.before.keys()
    for path in renamed:
        ast.parse(wordcount.before[path])
    assert b"class WordcountEnvironment(" in wordcount.before[ENVIRONMENT]
    assert b'"openenv-wordcount"' in wordcount.before["pyproject.toml"]
    assert b'server = "wordcount.kit.command:main"' in wordcount.before["pyproject.toml"]


def test_the_new_project_names_nothing_of_rooms(wordcount: Derived) -> None:
    found = [
        f"{path}:{n}: {line.strip()}"
        for path, data in wordcount.before.items()
        for n, line in enumerate(data.decode().splitlines(), 1)
        if re.search("rooms(?!-new)", line, re.IGNORECASE)  # rooms-new: the command that updates its kit
    ]
    assert found == []


def test_the_person_edits_only_the_models_reset_and_step_and_the_reward_range(wordcount: Derived) -> None:
    print(f"\nthe person's diff for Wordcount: {len(wordcount.diff.splitlines())} lines\n{wordcount.diff}")
    changed = {
        path
        for path in wordcount.before.keys() | wordcount.after.keys()
        if wordcount.before.get(path) != wordcount.after.get(path)
    }
    assert changed == EDITED
    environment = [wordcount.before[ENVIRONMENT].decode(), wordcount.after[ENVIRONMENT].decode()]
    assert len({without_methods(text, "WordcountEnvironment", ("reset", "step")) for text in environment}) == 1
    manifest_lines = [
        set(wordcount.before["openenv.yaml"].decode().splitlines()),
        set(wordcount.after["openenv.yaml"].decode().splitlines()),
    ]
    assert manifest_lines[1] - manifest_lines[0] == {f"    {WORDCOUNT_REWARD_RANGE}"}


def test_nothing_of_the_echo_is_left_after_the_edit(wordcount: Derived) -> None:
    found = [path for path, data in wordcount.after.items() if re.search(b"echo", data, re.IGNORECASE)]
    assert found == []


@pytest.mark.derive
def test_the_edited_project_passes_its_own_tests(wordcount: Derived, tmp_path: Path, artifacts: Path) -> None:
    """Its package installed as a wheel next to this environment's dependencies, its tests run with them."""
    installed = tmp_path / "site"
    source = tmp_path / "source"  # setuptools builds beside the sources: build a copy
    shutil.copytree(wordcount.project, source)
    run(
        [uv(), "pip", "install", "-q", "--no-deps", "--target", str(installed), str(source)],
        tmp_path,
        tmp_path / "install.log",
    )
    environ = {**outside_this_project(), "PYTHONPATH": str(installed)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=wordcount.project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (artifacts / "wordcount-tests.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


# --- the whole way, as a person goes: uv sync, tests, server, client, validate, image -------------


@pytest.mark.derive
@pytest.mark.timeout(1200)  # locks, syncs and tests a new project twice: minutes on a busy machine
def test_a_person_makes_wordcount_and_nothing_else_fails(tmp_path: Path, artifacts: Path) -> None:
    project = tmp_path / NAME
    logs = artifacts / "wordcount"
    logs.mkdir(exist_ok=True)
    run([console_script("rooms-new"), NAME, str(project)], tmp_path, logs / "rooms-new.log")
    assert (project / "uv.lock").is_file()
    run([uv(), "run", "pytest", "-p", "no:cacheprovider"], project, logs / "pytest-as-written.log")

    make_it_wordcount(project)
    # docs/make-your-own.md's last step, as run here: the project's tests, then its server (below).
    [then] = readme_blocks("new-project")
    assert then.code == f"cd ../{NAME} && uv run pytest\nuv run server\n"
    run([uv(), "run", "pytest", "-p", "no:cacheprovider"], project, logs / "pytest-wordcount.log")
    openenv = str(project / ".venv" / "bin" / "openenv")
    static = run([openenv, "validate", "--level", "static"], project, logs / "validate-static.log")
    assert "PASS  static.manifest" in static and "FAIL" not in static
    port = free_port()
    server_command = [str(project / ".venv" / "bin" / "server"), "--host", "127.0.0.1", "--port", str(port)]
    server = start_server(logs, server_command, port=port, cwd=project, timeout=120)
    try:
        stepped = run(
            [str(project / ".venv" / "bin" / "python"), "-c", CLIENT_SCRIPT, server.url], project, logs / "client.log"
        )
        assert "stepped: sync and async" in stepped
        live = run([openenv, "validate", "--url", server.url], project, logs / "validate-url.log")
        assert live.rstrip().endswith("Verdict: PASS")
    finally:
        server.stop()


@pytest.mark.derive
@pytest.mark.parametrize("block", readme_blocks("new-command"), ids=block_id)
def test_readme_new_command_block(block: Block, tmp_path: Path) -> None:
    """The README's `rooms-new` command, run as written from the checkout, into a temporary directory."""
    project = tmp_path / NAME
    code = block.code.replace(f"../{NAME}", str(project))
    assert code != block.code, f"the block writes no ../{NAME}"
    result = subprocess.run(
        ["bash", "-euc", code], cwd=ROOT, env=outside_this_project(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "uv.lock").is_file() and (project / ENVIRONMENT).is_file()


@pytest.mark.docker
@pytest.mark.timeout(1200)  # builds an image
def test_the_wordcount_image_builds_and_serves_a_step(base_image: str, tmp_path: Path, artifacts: Path) -> None:
    project = tmp_path / NAME
    derive(NAME, project)
    make_it_wordcount(project)
    build = docker("build", "-t", IMAGE, "-f", str(project / "server" / "Dockerfile"), str(project), timeout=1800)
    (artifacts / "wordcount-docker-build.log").write_text(build.stdout + build.stderr)
    try:
        with running_container(IMAGE) as container:
            reset = requests.post(f"{container.url}/reset", json={}, timeout=30).json()
            assert reset["observation"]["word_count"] == 0
            step = requests.post(f"{container.url}/step", json={"action": {"text": "one two three"}}, timeout=30)
            assert (step.json()["observation"]["word_count"], step.json()["reward"], step.json()["done"]) == (
                3,
                3.0,
                False,
            )
    finally:
        docker("rmi", IMAGE, check=False)
