"""What the Rooms checkout holds: the files of its package, and which of them are its own.

Rooms' own files name it: the four files of OpenEnv's template and the two that export
their names. Every other module of the package is generic (it names no Rooms type, no
`rooms.` import path and no `ROOMS_` setting), so a new environment copies it unchanged.
tests/test_generic_modules.py checks that of each module listed here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # new/rooms_new/layout.py, in the checkout
PACKAGE = "rooms"
ENVIRONMENT_FILES = ("models.py", "client.py", "server/rooms_environment.py", "server/app.py")
PACKAGE_FILES = ("__init__.py", "server/__init__.py")  # exports, named after the environment
OWN_FILES = ENVIRONMENT_FILES + PACKAGE_FILES


def package_files(root: Path = ROOT) -> list[str]:
    """Every file of the package at `root` (its modules and its Dockerfile), relative to `root`."""
    paths = [
        *root.glob("*.py"),
        *(root / "server").glob("*.py"),
        root / "server" / "Dockerfile",
        *(path for path in (root / "kit").rglob("*") if "__pycache__" not in path.parts),
    ]
    return sorted(path.relative_to(root).as_posix() for path in paths if path.is_file())


def generic_files(root: Path = ROOT) -> list[str]:
    """The package's files that are not Rooms' own: a new environment copies them byte for byte."""
    return [path for path in package_files(root) if path not in OWN_FILES]


__all__ = ["ENVIRONMENT_FILES", "OWN_FILES", "PACKAGE", "PACKAGE_FILES", "ROOT", "generic_files", "package_files"]
