"""The `rooms-new` command: `rooms-new NAME DIR` makes the project of a new environment from Rooms."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .derive import DeriveError, LockError, derive
from .layout import ENVIRONMENT_FILES


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rooms-new",
        description="Make a new OpenEnv environment from Rooms: its package renamed, with its own "
        "pyproject.toml, openenv.yaml, README.md, tests and uv.lock.",
    )
    parser.add_argument("name", help="the package name of the new environment: a lowercase Python identifier")
    parser.add_argument("dir", type=Path, help="where to write its project: a new or empty directory")
    parser.add_argument("--no-lock", action="store_true", help="do not run `uv lock` in DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rooms-new`: 0 when the project is written, 2 for a bad name or DIR, 1 if `uv lock` failed."""
    args = parse_args(argv)
    try:
        names = derive(args.name, args.dir, lock=not args.no_lock)
    except LockError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 1
    except DeriveError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 2
    models, _, environment, _ = (names.rename(path) for path in ENVIRONMENT_FILES)
    print(
        f"{names.classes} is in {args.dir}. Change its models ({models}), reset and step ({environment}),\n"
        f"and the reward range in openenv.yaml; then, there:\n"
        f"  uv run pytest\n"
        f"  uv run server"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
