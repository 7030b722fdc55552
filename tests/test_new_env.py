"""`rooms-new NAME DIR` and `rooms-new --update DIR`: a new environment from the template and the kit,
where a person changes only the models, `__init__`/`reset`/`step`, the reward range and their game's tests.

The example is docs/make-your-own.md's Tally: an action of `numbers`, a running total, reward = this
step's sum, done once the total passes 100. The tests apply that edit to what the command writes
and check that nothing else had to change; that the new project's own tests catch the mistake the
document warns of (the state set in `reset` only: a plain HTTP `POST /step` steps an environment
never reset); that `--update` brings a later kit and refuses a kit edited in the project; and, the
whole way as a person goes (`uv sync`), its server, typed client, `openenv validate` and image.

The new project's tests run with this checkout's interpreter and packages (its package linked into
a directory on PYTHONPATH beside its installed metadata), which is what keeps them within seconds;
the `derive`-marked whole-way test installs it with uv as a person would.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rooms_new import MANIFEST, derive, generic_files, kit_files, update
from rooms_new.cli import main
from rooms_new.derive import EditedKitError, digest, template_files
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

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

NAME = "tally"
IMAGE = "tally-env:latest"
ENVIRONMENT = f"server/{NAME}_environment.py"
GAME_TESTS = f"tests/test_{NAME}.py"
GAME_MARK = "# Your game's own tests"
PLAIN_HTTP_TEST = "test_a_step_over_plain_http_without_a_reset"
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
EDITED = {"models.py", ENVIRONMENT, "openenv.yaml", GAME_TESTS}


@dataclass(frozen=True)
class Edit:
    """The person's edit, as docs/make-your-own.md shows it."""

    models: str
    methods: str  # __init__, reset and step, indented as in the class
    reward_range: str  # the `range:` line
    game_test: str

    @property
    def reset_only(self) -> str:
        """The methods as a person first writes them: the template's `__init__` kept, the state set in `reset` only."""
        return without_methods(f"class X:\n{self.methods}", "X", ("__init__",)).removeprefix("class X:\n")


def person_edit() -> Edit:
    models, methods, manifest, game_test = (block.code for block in readme_blocks("new-env"))
    [reward_range] = [line.strip() for line in manifest.splitlines() if line.strip().startswith("range:")]
    return Edit(models, textwrap.indent(methods, "    "), reward_range, game_test)


EDIT = person_edit()
# Stepped from the new project's own virtual environment, with its typed client: sync, then async.
CLIENT_SCRIPT = """
import asyncio, sys
from tally import TallyAction, TallyEnv

url = sys.argv[1]
with TallyEnv(base_url=url).sync() as env:
    env.reset()
    result = env.step(TallyAction(numbers=[60, 40]))
    assert (result.observation.total, result.reward, result.done) == (100, 100.0, False), result
    result = env.step(TallyAction(numbers=[1]))
    assert (result.observation.total, result.reward, result.done, env.state().step_count) == (101, 1.0, True, 2)


async def main() -> None:
    async with TallyEnv(base_url=url) as env:
        await env.reset()
        result = await env.step(TallyAction(numbers=[1, 2, 3]))
        assert (result.observation.total, result.reward) == (6, 6.0), result


asyncio.run(main())
print("stepped: sync and async")
"""


def project_files(project: Path) -> dict[str, bytes]:
    """Every file of a new project that the command or the person writes (not its .venv or build output)."""
    skipped = {".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}
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


def make_it_tally(project: Path, methods: str = EDIT.methods) -> None:
    """The person's edit: the models, the environment's methods, the reward range, their game's test."""
    (project / "models.py").write_text(EDIT.models)
    environment = project / ENVIRONMENT
    replaced = ("__init__", "reset", "step") if "def __init__" in methods else ("reset", "step")
    environment.write_text(without_methods(environment.read_text(), "TallyEnvironment", replaced, methods))
    manifest = project / "openenv.yaml"
    text, count = re.subn(r"range: \[.*\]", EDIT.reward_range, manifest.read_text())
    assert count == 1
    manifest.write_text(text)
    tests = project / GAME_TESTS
    contract, mark, _ = tests.read_text().partition(f"\n{GAME_MARK}")
    assert mark, f"{GAME_TESTS} has no line {GAME_MARK!r}"
    tests.write_text(f"{contract}{mark}: the exact rewards and when an episode ends.\n\n\n{EDIT.game_test}")


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


@pytest.fixture(scope="module")
def installed_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `.dist-info` of a new project's distribution (`importlib.metadata` gives its version), installed once."""
    source = tmp_path_factory.mktemp("metadata") / NAME
    derive(NAME, source, lock=False)
    target = source.parent / "site"
    run(
        [uv(), "pip", "install", "-q", "--offline", "--no-deps", "--target", str(target), str(source)],
        source.parent,
        source.parent / "install.log",
    )
    [found] = target.glob("*.dist-info")
    return found


@dataclass
class OwnTests:
    """The outcome of a new project's own tests."""

    returncode: int
    output: str
    seconds: float

    @property
    def failed(self) -> list[str]:
        return re.findall(r"^FAILED \S+::(\w+)", self.output, re.M)


def run_own_tests(project: Path, metadata: Path, log: Path) -> OwnTests:
    """The new project's tests, run by this interpreter with the project's package linked on PYTHONPATH."""
    site = project.parent / f"{project.name}-site"
    if not site.exists():
        site.mkdir()
        (site / NAME).symlink_to(project, target_is_directory=True)
        shutil.copytree(metadata, site / metadata.name)
    # The plugins a new project's dev group installs, and no other of this environment's.
    environ = {**outside_this_project(), "PYTHONPATH": str(site), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_asyncio.plugin", "-q"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=environ, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    return OwnTests(result.returncode, result.stdout + result.stderr, seconds)


# --- what the command refuses -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Tally", "word-count", "1words", "class", "json", "pydantic", "rooms", "kit", ""])
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
    target = ROOT / "tally-inside"
    assert main([NAME, str(target), "--no-lock"]) == 2
    assert "inside Rooms' checkout" in capsys.readouterr().err
    assert not target.exists()


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    assert main([NAME, str(tmp_path), "--no-lock"]) == 0
    assert (tmp_path / "pyproject.toml").is_file() and (tmp_path / ENVIRONMENT).is_file()


# --- what it writes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    project = tmp_path_factory.mktemp("written") / NAME
    assert main([NAME, str(project), "--no-lock"]) == 0
    return project_files(project)


def test_the_kit_is_copied_byte_for_byte_and_its_manifest_records_it(written: dict[str, bytes]) -> None:
    kit = generic_files()
    assert {"kit/client.py", "kit/application.py", "kit/settings.py", "kit/README.md"} <= set(kit)
    for path in kit:
        assert written[path] == (ROOT / path).read_bytes(), path
    manifest = json.loads(written[f"kit/{MANIFEST}"])
    assert manifest["files"] == {path: digest((ROOT / "kit" / path).read_bytes()) for path in kit_files()}
    assert re.fullmatch(r"\d+\.\d+\.\d+\+[0-9a-f]{12}", manifest["version"])


def test_the_environments_own_files_are_the_templates_with_the_names_substituted(written: dict[str, bytes]) -> None:
    own = {path.replace("__ENV_NAME__", NAME) for path in template_files()}
    assert own == written.keys() - set(generic_files()) - {f"kit/{MANIFEST}"}
    assert {"models.py", "client.py", "server/app.py", ENVIRONMENT, "server/Dockerfile", "openenv.yaml"} <= own
    assert not [path for path, data in written.items() if re.search(rb"__(ENV|KIT|DEV)_", data)]
    ours, rooms = (tomllib.loads(text)["project"] for text in (written["pyproject.toml"].decode(), PYPROJECT))
    assert (ours["requires-python"], ours["dependencies"]) == (rooms["requires-python"], rooms["dependencies"])
    assert b"class TallyEnvironment(" in written[ENVIRONMENT]
    assert b'"openenv-tally"' in written["pyproject.toml"]
    assert b'server = "tally.kit.command:main"' in written["pyproject.toml"]


def test_the_new_project_names_nothing_of_rooms(written: dict[str, bytes]) -> None:
    found = [
        f"{path}:{n}: {line.strip()}"
        for path, data in written.items()
        for n, line in enumerate(data.decode().splitlines(), 1)
        if re.search("rooms(?!-new)", line, re.IGNORECASE)  # rooms-new: the command that updates its kit
    ]
    assert found == []


# A relative path in a text: a word with a slash or a file suffix, not a URL, a route, a module path, a
# method call or a placeholder's tail (`server/<name>_environment.py`).
PATH = re.compile(r"(?<![\w/.:<>\\-])(?:[\w.-]+/)*[\w-]+(?:\.(?:py|md|yaml|toml|json|lock|html|sh|txt)|/)(?![\w/(])")
MADE = {"uv.lock", ".venv/", ".git/"}  # made by `uv lock` (rooms-new runs it), `uv sync` and `git init`
ROUTES = {"web/"}  # the playground's, relative to /web (kit/playground.py)


def test_every_path_the_new_project_mentions_is_in_it(written: dict[str, bytes]) -> None:
    """No comment, docstring or document of the copy cites a file it lacks (Rooms' docs, scripts, settings)."""
    folders = {parent.as_posix() + "/" for path in written for parent in Path(path).parents if parent != Path(".")}
    names = {Path(path).name for path in written}
    missing = []
    for path, data in written.items():
        if path in (".gitignore", ".dockerignore"):  # patterns: the test below
            continue
        for found in PATH.findall(data.decode()):
            relative = (Path(path).parent / found).as_posix()
            known = found in written or found in folders or relative in written or found in MADE | ROUTES
            if not known and not ("/" not in found and found in names):  # a file named as itself: `a conftest.py`
                missing.append(f"{path}: {found}")
    assert missing == []
    assert "kit/settings.py" in written["server/app.py"].decode()  # what the pattern finds


def test_the_ignore_files_list_only_what_the_project_has_or_makes(written: dict[str, bytes]) -> None:
    made = {".git", ".venv", "__pycache__", "*.py[cod]", "*.egg-info", "build", ".pytest_cache", ".ruff_cache"}
    for name in (".dockerignore", ".gitignore"):
        entries = [line for line in written[name].decode().splitlines() if line and not line.startswith("#")]
        others = [entry for entry in entries if entry.removeprefix("**/").rstrip("/") not in made]
        assert [entry for entry in others if not any(path.startswith(entry) for path in written)] == [], name


def test_the_new_project_passes_ruff(tmp_path: Path) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    ruff = console_script("ruff")
    for command in ([ruff, "check", "--no-cache", "."], [ruff, "format", "--check", "--no-cache", "."]):
        result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


# --- its own tests: as written, and after the person's edit --------------------------------------


@pytest.mark.derive
def test_the_new_project_passes_its_own_tests_as_written(
    installed_metadata: Path, tmp_path: Path, artifacts: Path
) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    outcome = run_own_tests(project, installed_metadata, artifacts / "tally-tests-as-written.txt")
    print(f"\nthe new project's own tests, as written: {outcome.seconds:.1f} s")
    assert outcome.returncode == 0, outcome.output[-6000:]
    summary = outcome.output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


@pytest.mark.derive
def test_its_tests_catch_state_set_in_reset_only_and_pass_with_the_documented_pattern(
    installed_metadata: Path, tmp_path: Path, artifacts: Path
) -> None:
    """docs/make-your-own.md's Tally, first with `self._total` set in `reset` only, then as the document has it."""
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    before = project_files(project)

    make_it_tally(project, EDIT.reset_only)
    assert "_total = 0" not in project.joinpath(ENVIRONMENT).read_text().split("def reset")[0]
    mistaken = run_own_tests(project, installed_metadata, artifacts / "tally-tests-reset-only.txt")
    print(f"\nstate set in reset only: exit {mistaken.returncode}, failed {mistaken.failed}, {mistaken.seconds:.1f} s")
    assert mistaken.returncode != 0
    assert PLAIN_HTTP_TEST in mistaken.failed, mistaken.output[-6000:]
    assert "has no attribute '_total'" in mistaken.output

    make_it_tally(project)
    after = project_files(project)
    diff = unified_diff(before, after)
    (artifacts / "tally-person.diff").write_text(diff)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed == EDITED
    assert [path for path, data in after.items() if re.search(b"echo", data, re.IGNORECASE)] == []
    fixed = run_own_tests(project, installed_metadata, artifacts / "tally-tests.txt")
    print(f"the documented pattern: exit {fixed.returncode}, {fixed.seconds:.1f} s; the person's diff:\n{diff}")
    assert fixed.returncode == 0, fixed.output[-6000:]
    summary = fixed.output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


# --- --update: a later kit ---------------------------------------------------------------------


def later_kit(tmp_path: Path, change: str = "later") -> Path:
    """A copy of this checkout's kit (and the pyproject.toml that versions it), with a later change."""
    root = tmp_path / f"source-{change}"
    shutil.copytree(ROOT / "kit", root / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "pyproject.toml", root / "pyproject.toml")
    tools = root / "kit" / "tools.py"
    tools.write_text(
        tools.read_text().replace(
            "def declared_tools(",
            "def tool_names(env: type[Any]) -> list[str]:\n"
            f'    """The names of the tools `env` declares ({change})."""\n'
            "    return sorted(declared_tools(env))\n\n\ndef declared_tools(",
        )
    )
    (root / "kit" / "later.py").write_text(f'"""A module the {change} kit adds."""\n\nADDED = "{change}"\n')
    return root


@pytest.mark.derive
def test_update_brings_a_later_kit_and_leaves_the_environments_files_alone(
    installed_metadata: Path, tmp_path: Path, artifacts: Path
) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    make_it_tally(project)
    before = project_files(project)
    source = later_kit(tmp_path)

    done = update(project, root=source)

    after = project_files(project)
    assert (done.changed, done.added, done.removed) == (["tools.py"], ["later.py"], [])
    assert done.old_version != done.new_version and done.missing_dependencies == []
    assert {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)} == {
        "kit/tools.py",
        "kit/later.py",
        f"kit/{MANIFEST}",
    }
    for path in kit_files(source):
        assert after[f"kit/{path}"] == (source / "kit" / path).read_bytes(), path
    assert json.loads(after[f"kit/{MANIFEST}"])["version"] == done.new_version
    outcome = run_own_tests(project, installed_metadata, artifacts / "tally-tests-updated.txt")
    assert outcome.returncode == 0, outcome.output[-6000:]
    check = "from tally.kit.tools import tool_names; from tally.kit.later import ADDED; print(ADDED)"
    site = {**outside_this_project(), "PYTHONPATH": str(project.parent / f"{NAME}-site")}
    result = subprocess.run([sys.executable, "-c", check], env=site, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "later", result.stderr


def test_update_refuses_a_kit_edited_in_the_project_lists_the_files_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    (project / "kit" / "limits.py").write_text((project / "kit" / "limits.py").read_text() + "# mine\n")
    (project / "kit" / "package.py").unlink()
    before = project_files(project)

    with pytest.raises(EditedKitError) as refused:
        update(project, root=later_kit(tmp_path))
    assert refused.value.edited == ["limits.py", "package.py"]
    assert project_files(project) == before

    assert main(["--update", str(project)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("rooms-new: ") and "\n  limits.py\n  package.py\n" in error
    assert project_files(project) == before


def test_update_from_the_same_kit_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    before = project_files(project)
    assert main(["--update", str(project)]) == 0
    assert "this version already" in capsys.readouterr().out
    assert project_files(project) == before


def test_update_of_a_directory_without_a_manifest_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--update", str(tmp_path)]) == 2
    assert f"kit/{MANIFEST} is missing" in capsys.readouterr().err


def test_update_lists_a_dependency_the_later_kit_needs(tmp_path: Path) -> None:
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    source = later_kit(tmp_path)
    pyproject = source / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("dependencies = [\n", 'dependencies = [\n    "tenacity>=9",\n', 1)
    )
    assert update(project, root=source).missing_dependencies == ["tenacity>=9"]


@pytest.mark.parametrize("block", readme_blocks("new-update"), ids=block_id)
def test_docs_update_block(block: Block, tmp_path: Path) -> None:
    """The document's `--update`, run as written from the checkout, on a project it made."""
    project = tmp_path / NAME
    derive(NAME, project, lock=False)
    code = block.code.replace(f"../{NAME}", str(project))
    assert code != block.code, f"the block names no ../{NAME}"
    result = subprocess.run(
        ["bash", "-euc", code], cwd=ROOT, env=outside_this_project(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this version already" in result.stdout


# --- the whole way, as a person goes: uv sync, tests, server, client, validate, image -------------


@pytest.mark.derive
@pytest.mark.timeout(1200)  # locks, syncs and tests a new project: minutes on a busy machine
def test_a_person_makes_tally_and_nothing_else_fails(tmp_path: Path, artifacts: Path) -> None:
    project = tmp_path / NAME
    logs = artifacts / "tally"
    logs.mkdir(exist_ok=True)
    run([console_script("rooms-new"), NAME, str(project)], tmp_path, logs / "rooms-new.log")
    assert (project / "uv.lock").is_file()
    make_it_tally(project)
    # docs/make-your-own.md's last step, as run here: the project's tests, then its server (below).
    [then] = readme_blocks("new-project")
    assert then.code == f"cd ../{NAME} && uv run pytest\nuv run server\n"
    run([uv(), "run", "pytest", "-p", "no:cacheprovider"], project, logs / "pytest-tally.log")
    openenv = str(project / ".venv" / "bin" / "openenv")
    # OpenEnv's CLI spends most of its run importing itself, so the validations run beside the server's steps.
    with ThreadPoolExecutor(max_workers=2) as beside:
        static = beside.submit(run, [openenv, "validate", "--level", "static"], project, logs / "validate-static.log")
        port = free_port()
        server_command = [str(project / ".venv" / "bin" / "server"), "--host", "127.0.0.1", "--port", str(port)]
        server = start_server(logs, server_command, port=port, cwd=project, timeout=120)
        try:
            live = beside.submit(run, [openenv, "validate", "--url", server.url], project, logs / "validate-url.log")
            stepped = run(
                [str(project / ".venv" / "bin" / "python"), "-c", CLIENT_SCRIPT, server.url],
                project,
                logs / "client.log",
            )
            assert "stepped: sync and async" in stepped
            assert live.result().rstrip().endswith("Verdict: PASS")
        finally:
            server.stop()
    assert "PASS  static.manifest" in static.result() and "FAIL" not in static.result()


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
def test_the_tally_image_builds_and_serves_a_step(base_image: str, tmp_path: Path, artifacts: Path) -> None:
    project = tmp_path / NAME
    derive(NAME, project)
    make_it_tally(project)
    build = docker("build", "-t", IMAGE, "-f", str(project / "server" / "Dockerfile"), str(project), timeout=1800)
    (artifacts / "tally-docker-build.log").write_text(build.stdout + build.stderr)
    try:
        with running_container(IMAGE) as container:
            reset = requests.post(f"{container.url}/reset", json={}, timeout=30).json()
            assert reset["observation"]["total"] == 0
            # Without a reset: a new environment for the request, its state from __init__.
            step = requests.post(f"{container.url}/step", json={"action": {"numbers": [7, 8]}}, timeout=30).json()
            assert (step["observation"]["total"], step["reward"], step["done"]) == (15, 15.0, False)
    finally:
        docker("rmi", IMAGE, check=False)
