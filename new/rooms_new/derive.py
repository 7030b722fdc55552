"""Make a new environment project, and bring a made one's kit up to date.

`derive` is a plain substitution copy, as OpenEnv's own `openenv init` template is: the files
under `template/` are the new environment's own starting files, written with placeholders
(`__ENV_NAME__`, `__ENV_CLASS_NAME__`, ...) that are replaced by the new names, and the kit
(`kit/`) is copied byte for byte, with `kit/MANIFEST.json` recording its version and each
file's hash. `update` replaces a made environment's kit with this version's, unless files of it
were edited there (their hash differs from the manifest's): then it changes nothing and names them.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .layout import KIT, MANIFEST, PACKAGE, ROOT, kit_files

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable

    import tomllib
else:
    from importlib.abc import Traversable

    import tomli as tomllib

CACHES = {"__pycache__", ".ruff_cache", ".pytest_cache", ".mypy_cache"}  # never part of the template
RESERVED_NAMES = {PACKAGE, "server", "tests", "kit"}
DEV_REQUIREMENTS = ("pytest", "pytest-asyncio")  # versions as in Rooms' dev group
YAML_REQUIREMENT = "pyyaml>=6.0"  # the generated tests read openenv.yaml


class DeriveError(Exception):
    """The command cannot make or update the project; the message says why."""


class LockError(DeriveError):
    """The project is written but `uv lock` failed in it."""


class EditedKitError(DeriveError):
    """`update` refused: files of the project's kit differ from what its manifest records."""

    def __init__(self, project: Path, edited: list[str]) -> None:
        self.edited = edited
        listed = "".join(f"\n  {path}" for path in edited)
        super().__init__(
            f"{project}'s kit has files edited since it was written, so it is left as it is:{listed}\n"
            "Move what you changed into the environment's own files (or undo it), then update again."
        )


@dataclass(frozen=True)
class Names:
    """The names of the new environment, from its package name (`wordcount`, `word_count`)."""

    package: str

    @property
    def classes(self) -> str:
        """The prefix of its classes: `Wordcount`, `WordCount`."""
        return "".join(part.capitalize() for part in self.package.split("_"))

    @property
    def title(self) -> str:
        """Its name as people read it: `Wordcount`, `Word Count` (the kit's `package.NAME`)."""
        return self.package.replace("_", " ").title()

    @property
    def settings(self) -> str:
        """The prefix of its settings, without the underscore: `WORDCOUNT`."""
        return self.package.upper()

    @property
    def dashed(self) -> str:
        """Its name in distribution and image names: `word-count`."""
        return self.package.replace("_", "-")

    def placeholders(self) -> dict[str, str]:
        return {
            "__ENV_NAME__": self.package,
            "__ENV_CLASS_NAME__": self.classes,
            "__ENV_TITLE_NAME__": self.title,
            "__ENV_PREFIX__": self.settings,
            "__ENV_DIST_NAME__": self.dashed,
        }


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


# --- the template: the new environment's own files ----------------------------------------------


def template_files(folder: Traversable | None = None, prefix: str = "") -> dict[str, str]:
    """Every file of `template/`, by its path there (placeholders included), with its text."""
    folder = folder or resources.files("rooms_new") / "template"
    found: dict[str, str] = {}
    for entry in folder.iterdir():
        if entry.name in CACHES:
            continue
        if entry.is_dir():
            found.update(template_files(entry, f"{prefix}{entry.name}/"))
        else:
            found[f"{prefix}{entry.name}"] = entry.read_text(encoding="utf-8")
    return found


def substituted(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def project_values(names: Names, root: Path = ROOT) -> dict[str, str]:
    """Every placeholder's value: the names, and what pyproject.toml takes from Rooms' (the kit's dependencies)."""
    project, dev = pyproject_requirements(root)
    return {
        **names.placeholders(),
        '["__KIT_DEPENDENCIES__"]': toml_list(project["dependencies"]),
        '["__DEV_DEPENDENCIES__"]': toml_list(dev),
    }


def pyproject_requirements(root: Path) -> tuple[dict[str, Any], list[str]]:
    rooms = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    dev = [r for r in rooms["dependency-groups"]["dev"] if requirement_name(r) in DEV_REQUIREMENTS]
    return rooms["project"], [*dev, YAML_REQUIREMENT]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement)[0].lower()


def toml_list(items: list[str]) -> str:
    return "[\n" + "".join(f'    "{item}",\n' for item in items) + "]"


# --- the kit: copied byte for byte, recorded in its manifest ------------------------------------


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kit_manifest(files: dict[str, bytes], root: Path = ROOT) -> dict[str, object]:
    """What `kit/MANIFEST.json` records: the kit's version (Rooms' version and the digest of its files)
    and each file's hash."""
    hashes = {path: digest(data) for path, data in sorted(files.items())}
    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    whole = digest("".join(f"{path} {sha}\n" for path, sha in hashes.items()).encode())
    return {"version": f"{version}+{whole[:12]}", "files": hashes}


def read_kit(root: Path = ROOT) -> dict[str, bytes]:
    return {path: (root / KIT / path).read_bytes() for path in kit_files(root)}


def write_kit(project: Path, files: dict[str, bytes], root: Path = ROOT) -> dict[str, object]:
    for path, data in files.items():
        (project / KIT / path).parent.mkdir(parents=True, exist_ok=True)
        (project / KIT / path).write_bytes(data)
    manifest = kit_manifest(files, root)
    (project / KIT / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# --- the commands -------------------------------------------------------------------------------


def derive(name: str, target: Path, lock: bool = True, root: Path = ROOT) -> Names:
    """Write the project of a new environment `name` in `target` (new or empty), then `uv lock` it."""
    names = checked_name(name)
    checked_target(target, root)
    values = project_values(names, root)
    written = {substituted(path, values): substituted(text, values) for path, text in template_files().items()}
    kit = read_kit(root)
    target.mkdir(parents=True, exist_ok=True)
    for path, text in written.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text, encoding="utf-8")
    write_kit(target, kit, root)
    if lock:
        uv_lock(target)
    return names


@dataclass(frozen=True)
class Update:
    """What `update` did: the kit's version before and after, the files it wrote, added and removed,
    and the kit's dependencies that the project's pyproject.toml lacks."""

    old_version: str
    new_version: str
    changed: list[str]
    added: list[str]
    removed: list[str]
    missing_dependencies: list[str]


def update(project: Path, root: Path = ROOT) -> Update:
    """Replace `project`'s kit with this version's; `EditedKitError` (nothing changed) if files of it were edited.

    The project's own files are left alone; a kit file the project added (absent from the manifest
    and from this kit) is kept.
    """
    manifest_path = project / KIT / MANIFEST
    try:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))
        old_hashes: dict[str, str] = recorded["files"]
        old_version: str = recorded["version"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DeriveError(
            f"{manifest_path} is missing or unreadable ({error}): is {project} made by rooms-new?"
        ) from None
    new_files = read_kit(root)
    edited = [
        path
        for path, sha in sorted(old_hashes.items())
        if not (project / KIT / path).is_file() or digest((project / KIT / path).read_bytes()) != sha
    ]
    edited += [  # the project's own file where this kit now has one
        path for path in sorted(new_files.keys() - old_hashes.keys()) if (project / KIT / path).exists()
    ]
    if edited:
        raise EditedKitError(project, edited)
    removed = sorted(old_hashes.keys() - new_files.keys())
    for path in removed:
        (project / KIT / path).unlink()
    manifest = write_kit(project, new_files, root)
    changed = sorted(
        path for path in new_files.keys() & old_hashes.keys() if digest(new_files[path]) != old_hashes[path]
    )
    return Update(
        old_version=old_version,
        new_version=str(manifest["version"]),
        changed=changed,
        added=sorted(new_files.keys() - old_hashes.keys()),
        removed=removed,
        missing_dependencies=missing_dependencies(project, root),
    )


def missing_dependencies(project: Path, root: Path = ROOT) -> list[str]:
    """The kit's dependencies (Rooms' runtime ones) that `project`'s pyproject.toml does not name."""
    kit_requirements, _ = pyproject_requirements(root)
    try:
        own = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    except (OSError, ValueError, KeyError):
        own = []
    names = {requirement_name(r) for r in own}
    return [r for r in kit_requirements["dependencies"] if requirement_name(r) not in names]


def uv_lock(project: Path) -> None:
    """`uv lock` in `project`: its Dockerfile installs from the lock (`uv sync --frozen`)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise LockError(f"uv is not on PATH: the project is written; install uv, then run `uv lock` in {project}")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run([uv, "lock"], cwd=project, env=environ, capture_output=True, text=True)
    if result.returncode != 0:
        raise LockError(f"`uv lock` failed in {project} (the project is written):\n{result.stderr.strip()}")


__all__ = [
    "DeriveError",
    "EditedKitError",
    "LockError",
    "Names",
    "Update",
    "checked_name",
    "derive",
    "kit_manifest",
    "template_files",
    "update",
]
