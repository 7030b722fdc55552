"""The `rooms-new` command: `rooms-new NAME DIR` makes the project of a new environment;
`rooms-new --update DIR` brings the kit of one to this version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .derive import DeriveError, EditedKitError, LockError, derive, update


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rooms-new",
        description="Make a new OpenEnv environment: its own models, client, app and environment from the "
        "template, with this kit (kit/), pyproject.toml, openenv.yaml, README.md, tests and uv.lock. "
        "With --update DIR: replace DIR's kit with this one, unless files of it were edited.",
    )
    parser.add_argument("name", nargs="?", help="the package name of the new environment: a lowercase identifier")
    parser.add_argument("dir", type=Path, nargs="?", help="where to write its project: a new or empty directory")
    parser.add_argument(
        "--update", type=Path, metavar="DIR", help="bring the kit of the project in DIR to this version"
    )
    parser.add_argument("--no-lock", action="store_true", help="do not run `uv lock` in DIR")
    args = parser.parse_args(argv)
    if args.update is not None and args.name is not None:
        parser.error("--update DIR takes no NAME")
    if args.update is None and (args.name is None or args.dir is None):
        parser.error("give NAME and DIR (or --update DIR)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rooms-new`: 0 when done, 2 for a bad name or DIR, 1 if `uv lock` failed or
    `--update` refused."""
    args = parse_args(argv)
    if args.update is not None:
        return main_update(args.update)
    try:
        names = derive(args.name, args.dir, lock=not args.no_lock)
    except LockError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 1
    except DeriveError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 2
    print(
        f"{names.classes} is in {args.dir}. Change its models (models.py), __init__, reset and step\n"
        f"(server/{names.package}_environment.py), the reward range in openenv.yaml and your game's tests\n"
        f"(tests/test_{names.package}.py); then, there:\n"
        f"  uv run pytest\n"
        f"  uv run server"
    )
    return 0


def main_update(project: Path) -> int:
    try:
        done = update(project)
    except EditedKitError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 1
    except DeriveError as error:
        print(f"rooms-new: {error}", file=sys.stderr)
        return 2
    if done.old_version == done.new_version and not (done.changed or done.added or done.removed):
        print(f"{project}'s kit is this version already ({done.new_version}).")
    else:
        print(f"{project}'s kit: {done.old_version} -> {done.new_version}")
        for label, paths in (("changed", done.changed), ("added", done.added), ("removed", done.removed)):
            if paths:
                print(f"  {label}: {', '.join(paths)}")
    if done.missing_dependencies:
        print(f"The kit needs these in {project}/pyproject.toml's dependencies, which lacks them:")
        print("".join(f"  {requirement}\n" for requirement in done.missing_dependencies), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
