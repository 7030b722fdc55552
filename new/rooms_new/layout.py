"""What the Rooms checkout holds for `rooms-new`: its kit, the generic machinery a new environment copies.

The environment's own files are not read from the checkout: a new one starts from `template/`.
tests/test_generic_modules.py checks that no file of the kit names Rooms.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # new/rooms_new/layout.py, in the checkout
PACKAGE = "rooms"
KIT = "kit"
MANIFEST = "MANIFEST.json"  # in a made environment's kit: its version and each file's hash


def kit_files(root: Path = ROOT) -> list[str]:
    """Every file of the kit at `root`, relative to the kit (`application.py`, `README.md`, ...)."""
    kit = root / KIT
    return sorted(
        path.relative_to(kit).as_posix()
        for path in kit.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.relative_to(kit).as_posix() != MANIFEST
    )


def generic_files(root: Path = ROOT) -> list[str]:
    """The files a new environment copies byte for byte, relative to `root`: the kit's."""
    return [f"{KIT}/{path}" for path in kit_files(root)]


__all__ = ["KIT", "MANIFEST", "PACKAGE", "ROOT", "generic_files", "kit_files"]
