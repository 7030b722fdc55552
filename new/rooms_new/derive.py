"""Make a new environment project from Rooms: copy its package, rename what names Rooms, add the rest.

The generic modules are copied byte for byte. Rooms' own files are renamed (`rooms` to the
new package name, `Rooms` to its class prefix, `ROOMS` to its setting prefix), and their text
that describes Rooms' echo (docstrings, the metadata description, the self-check) is replaced
by text that stays true whatever the new environment's models and `reset`/`step` do. The
project gets its own pyproject.toml, openenv.yaml, README.md and tests, and a uv.lock.
"""

from __future__ import annotations

import ast
import keyword
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from itertools import accumulate
from pathlib import Path

from .layout import OWN_FILES, PACKAGE, ROOT, generic_files

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SUPPORT_FILES = (".dockerignore", ".gitignore")  # copied as they are
TEMPLATE_FILES = ("README.md", "tests/conftest.py", "tests/test_rooms.py")  # written for Rooms, renamed
RESERVED_NAMES = {PACKAGE, "server", "tests"}
DEV_REQUIREMENTS = ("pytest", "pytest-asyncio", "requests")  # versions as in Rooms' dev group
YAML_REQUIREMENT = "pyyaml>=6.0"  # the generated tests read openenv.yaml


class DeriveError(Exception):
    """The command cannot make the project; the message says why."""


class LockError(DeriveError):
    """The project is written but `uv lock` failed in it."""


@dataclass(frozen=True)
class Names:
    """The names of the new environment, from its package name (`wordcount`, `word_count`)."""

    package: str

    @property
    def classes(self) -> str:
        """The prefix of its classes: `Wordcount`, `WordCount`."""
        return "".join(part.capitalize() for part in self.package.split("_"))

    @property
    def settings(self) -> str:
        """The prefix of its settings, without the underscore: `WORDCOUNT`."""
        return self.package.upper()

    @property
    def dashed(self) -> str:
        """Its name in distribution and image names: `word-count`."""
        return self.package.replace("_", "-")

    def rename(self, text: str) -> str:
        """`text` with every name of Rooms replaced by the new environment's."""
        for old, new in (
            (f"openenv-{PACKAGE}", f"openenv-{self.dashed}"),
            (f"{PACKAGE}-env", f"{self.dashed}-env"),
            (PACKAGE.upper(), self.settings),
            (PACKAGE.capitalize(), self.classes),
            (PACKAGE, self.package),
        ):
            text = text.replace(old, new)
        return text


def checked_name(name: str) -> Names:
    """The names for package `name`, or `DeriveError` if `name` cannot be the package of a new environment."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise DeriveError(
            f"{name!r} is not a valid name: use a lowercase Python identifier (letters, digits, _), e.g. wordcount"
        )
    if name in RESERVED_NAMES or name in sys.stdlib_module_names or find_spec(name) is not None:
        raise DeriveError(f"{name!r} is the name of an existing module: the package would shadow it, pick another")
    return Names(name)


def checked_target(target: Path, root: Path = ROOT) -> Path:
    """`target`, or `DeriveError` if it exists and is not an empty directory, or if it is inside Rooms' checkout
    (whose image, linters and type checks would take the new project in)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DeriveError(f"{target} exists and is not an empty directory: give a new or empty one")
    if target.resolve().is_relative_to(root.resolve()):
        raise DeriveError(
            f"{target} is inside Rooms' checkout ({root}): give a directory outside it, e.g. ../{target.name}"
        )
    return target


# --- Rooms' own files: what describes Rooms' echo is replaced, before the names are -------------


@dataclass(frozen=True)
class Rewrite:
    """Text of one of Rooms' own files to replace, written with Rooms' names (they are renamed after)."""

    docstrings: dict[str, str] = field(default_factory=dict)  # "" (the module), "Class" or "Class.method"
    values: dict[tuple[str, str], str] = field(default_factory=dict)  # (function, keyword argument): source
    comments: dict[str, str] = field(default_factory=dict)  # "Class.ATTRIBUTE": the comment lines above it
    dropped: tuple[str, ...] = ()  # functions, "Class.method"s, and "__main__" for `if __name__ == "__main__":`


REWRITES = {
    "__init__.py": Rewrite(
        docstrings={
            "": """Rooms: an OpenEnv environment.

`RoomsAction` goes in, a `RoomsObservation` comes out (models.py);
`RoomsEnv` is the typed client.
""",
        }
    ),
    "client.py": Rewrite(
        docstrings={
            "RoomsEnv": """Client for a Rooms server; one instance is one session on the server.

It keeps one WebSocket open to the server, so every call is one round trip.
In async code, `await` its methods; in sync code, use `.sync()`:

>>> with RoomsEnv(base_url="http://localhost:8000").sync() as env:  # doctest: +SKIP
...     result = env.reset()
...     result = env.step(action)  # a RoomsAction

`RoomsEnv.from_docker_image("rooms-env:latest")` starts a container first and
stops it on `close()`.
""",
        }
    ),
    "server/rooms_environment.py": Rewrite(
        docstrings={
            "": "The Rooms environment: `reset` starts an episode, `step` plays one action.",
            "RoomsEnvironment": """The Rooms environment.

`reset()` starts an episode; `step(action)` plays one `RoomsAction` and returns
a `RoomsObservation` (models.py) with its `reward` and `done`. The server creates
one instance per WebSocket session (`SUPPORTS_CONCURRENT_SESSIONS = True`) and
one per stateless HTTP request.
""",
            "RoomsEnvironment.step_async": "Play one action (async form of `step`).",
        },
        values={("RoomsEnvironment.get_metadata", "description"): '"The Rooms environment."'},
        comments={
            "RoomsEnvironment.REQUIRES_SINGLE_THREAD_EXECUTOR": """\
All sessions share one executor thread, and reset and step run on the server's event loop
(reset_async and step_async call them). If step waits (on I/O, on a model), set this to False
and delete reset_async and step_async: steps then run in executor threads, off the loop.
""",
        },
        # Rooms' MCP tool steps with a RoomsAction(message): a new environment declares its own tools.
        dropped=("_self_check", "__main__", "RoomsEnvironment.echo"),
    ),
}

Definition = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


class Source:
    """A module's text with replacements of the spans of its syntax nodes (AST offsets are in bytes)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.data = text.encode()
        self.tree = ast.parse(self.data)
        self.line_starts = [0, *accumulate(len(line) for line in self.data.splitlines(keepends=True))]
        self.edits: list[tuple[int, int, str]] = []

    def find(self, qualname: str) -> Definition:
        node: Definition = self.tree
        for name in filter(None, qualname.split(".")):
            definitions = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            found = [c for c in node.body if isinstance(c, definitions) and c.name == name]
            if not found:
                raise DeriveError(f"Rooms' {self.path} has no {qualname}: rooms_new does not know this version")
            node = found[0]
        return node

    def span(self, node: ast.expr | ast.stmt, whole_lines: bool = False) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None
        if whole_lines:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            return self.line_starts[first - 1], self.line_starts[node.end_lineno]
        start = self.line_starts[node.lineno - 1] + node.col_offset
        return start, self.line_starts[node.end_lineno - 1] + node.end_col_offset

    def replace_docstring(self, qualname: str, text: str) -> None:
        body = self.find(qualname).body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)):
            raise DeriveError(f"{qualname or 'the module'} in Rooms' {self.path} has no docstring")
        self.edits.append((*self.span(body[0]), docstring(text, " " * body[0].col_offset)))

    def replace_value(self, function: str, argument: str, source: str) -> None:
        values = [k.value for k in ast.walk(self.find(function)) if isinstance(k, ast.keyword) and k.arg == argument]
        if len(values) != 1:
            raise DeriveError(f"Rooms' {self.path}: {function} passes {argument}= {len(values)} times, not once")
        self.edits.append((*self.span(values[0]), source))

    def replace_comment(self, attribute: str, text: str) -> None:
        """Replace the comment lines right above a class attribute's assignment."""
        owner, _, name = attribute.rpartition(".")
        found = [
            node
            for node in self.find(owner).body
            if isinstance(node, ast.Assign) and [ast.unparse(target) for target in node.targets] == [name]
        ]
        if not found:
            raise DeriveError(f"Rooms' {self.path} does not set {attribute}: rooms_new does not know this version")
        end = self.line_starts[found[0].lineno - 1]
        start = end
        while start > 0:
            previous = self.line_starts.index(start) - 1
            line = self.data[self.line_starts[previous] : start]
            if not line.lstrip().startswith(b"#"):
                break
            start = self.line_starts[previous]
        indent = " " * found[0].col_offset
        self.edits.append((start, end, "".join(f"{indent}# {line}\n" for line in text.strip("\n").split("\n"))))

    def drop(self, name: str) -> None:
        """Remove a top-level function, a "Class.method" (with its decorators), or with "__main__" the
        `if __name__ == "__main__":` block, if present."""
        if "." in name:
            self.edits.append((*self.span(self.find(name), whole_lines=True), ""))  # type: ignore[arg-type]
            return
        for node in self.tree.body:
            if (isinstance(node, ast.FunctionDef) and node.name == name) or (name == "__main__" and is_main(node)):
                self.edits.append((*self.span(node, whole_lines=True), ""))

    def text(self) -> str:
        data = self.data
        for start, end, new in sorted(self.edits, reverse=True):
            data = data[:start] + new.encode() + data[end:]
        text = without_unused_imports(data.decode())
        return re.sub(r"\n{4,}", "\n\n\n", text).rstrip("\n") + "\n"


def is_main(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'")


def docstring(text: str, indent: str) -> str:
    """`text` as a docstring literal indented by `indent`."""
    first, *rest = text.strip("\n").split("\n")
    if not rest:
        return f'"""{first}"""'
    body = "\n".join(f"{indent}{line}" if line else "" for line in rest)
    return f'"""{first}\n{body}\n{indent}"""'


def without_unused_imports(text: str) -> str:
    """`text` without the top-level imported names it no longer uses (`import name`, `from x import a, b`)."""
    lines = text.splitlines(keepends=True)
    for node in reversed(ast.parse(text).body):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.end_lineno is None:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        rest = "".join(lines[: node.lineno - 1] + lines[node.end_lineno :])
        kept = [alias for alias in node.names if re.search(rf"\b{re.escape(alias.asname or alias.name)}\b", rest)]
        if len(kept) == len(node.names):
            continue
        statement = ""
        if kept and isinstance(node, ast.ImportFrom):
            statement = ast.unparse(ast.ImportFrom(module=node.module, names=kept, level=node.level)) + "\n"
        lines[node.lineno - 1 : node.end_lineno] = [statement] if statement else []
    return "".join(lines)


def rewritten(path: str, text: str) -> str:
    """Rooms' own file `path` with its echo-specific text replaced (still with Rooms' names)."""
    rewrite = REWRITES.get(path)
    if rewrite is None:
        return text
    source = Source(path, text)
    for qualname, doc in rewrite.docstrings.items():
        source.replace_docstring(qualname, doc)
    for (function, argument), value in rewrite.values.items():
        source.replace_value(function, argument, value)
    for attribute, comment in rewrite.comments.items():
        source.replace_comment(attribute, comment)
    for name in rewrite.dropped:
        source.drop(name)
    return source.text()


# --- the files the new project has that Rooms' package does not --------------------------------


def pyproject(names: Names, root: Path = ROOT) -> str:
    """The new project's pyproject.toml: Rooms' runtime dependencies, the `server` command, a small dev group."""
    rooms = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = rooms["project"]
    dev = [r for r in rooms["dependency-groups"]["dev"] if re.split(r"[\s<>=!~;\[]", r)[0] in DEV_REQUIREMENTS]
    package = names.package

    def toml_list(items: list[str]) -> str:
        return "[\n" + "".join(f'    "{item}",\n' for item in items) + "]"

    return f"""[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "openenv-{names.dashed}"
version = "0.1.0"
description = "{names.classes}: an OpenEnv environment, served over HTTP and WebSocket."
readme = "README.md"
requires-python = "{project["requires-python"]}"
dependencies = {toml_list(project["dependencies"])}

[project.scripts]
server = "{package}.kit.command:main"

[dependency-groups]
dev = {toml_list([*dev, YAML_REQUIREMENT])}

[tool.setuptools]
packages = ["{package}", "{package}.server", "{package}.kit"]
package-dir = {{ "{package}" = ".", "{package}.server" = "server", "{package}.kit" = "kit" }}

[tool.setuptools.package-data]
{package} = ["README.md", "openenv.yaml"]
"{package}.kit" = ["README.md"]

[tool.pytest.ini_options]
addopts = "--import-mode=importlib -ra"
testpaths = ["tests"]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""


def manifest(names: Names, root: Path = ROOT) -> str:
    """The new project's openenv.yaml: Rooms' reward range, for the person to change with the reward."""
    found = re.search(r"^\s*range:\s*(\[.*\])\s*$", (root / "openenv.yaml").read_text(encoding="utf-8"), re.M)
    if found is None:
        raise DeriveError("Rooms' openenv.yaml declares no reward range")
    return f"""spec_version: 1
name: {names.package}
version: 0.1.0
type: space
runtime: fastapi
app: server.app:app
port: 8000
validation:
  reward:
    # The lowest and the highest reward `step` gives: change them with the reward.
    range: {found[1]}
    oracle_tolerance: 0.0
    floor_margin: 0.1
  resources:
    cpu: 1.0
    memory_mb: 1024
    disk_mb: 512
    episode_timeout_s: 60.0
  capabilities:
    verifier:
      kind: reward_channel
  types:
    tags: [{names.package}]
"""


def template(path: str) -> str:
    return (resources.files("rooms_new") / "template" / path).read_text(encoding="utf-8")


# --- the command -------------------------------------------------------------------------------


def derive(name: str, target: Path, lock: bool = True, root: Path = ROOT) -> Names:
    """Write the project of a new environment `name` in `target` (new or empty), then `uv lock` it."""
    names = checked_name(name)
    checked_target(target, root)
    written: dict[str, str] = {
        **{names.rename(path): names.rename(rewritten(path, read(root / path))) for path in OWN_FILES},
        **{names.rename(path): names.rename(template(path)) for path in TEMPLATE_FILES},
        "pyproject.toml": pyproject(names, root),
        "openenv.yaml": manifest(names, root),
    }
    target.mkdir(parents=True, exist_ok=True)
    for path in [*generic_files(root), *SUPPORT_FILES]:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / path, target / path)
    for path, text in written.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text, encoding="utf-8")
    if lock:
        uv_lock(target)
    return names


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def uv_lock(project: Path) -> None:
    """`uv lock` in `project`: its Dockerfile installs from the lock (`uv sync --frozen`)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise LockError(f"uv is not on PATH: the project is written; install uv, then run `uv lock` in {project}")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run([uv, "lock"], cwd=project, env=environ, capture_output=True, text=True)
    if result.returncode != 0:
        raise LockError(f"`uv lock` failed in {project} (the project is written):\n{result.stderr.strip()}")


__all__ = ["DeriveError", "LockError", "Names", "checked_name", "derive", "generic_files"]
