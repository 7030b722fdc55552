"""The package this kit serves: its name, its shipped files, its version.

Light on purpose (standard library only): the environment reads its README and version
from here for `get_metadata()` without importing the serving layer.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata, resources
from pathlib import Path

PACKAGE = __name__.split(".")[0]  # the environment's package: `<package>` of `<package>.kit.package`
NAME = PACKAGE.replace("_", " ").title()  # as people read it: `Word Count` for word_count


def package_file(name: str) -> Path:
    """A file shipped in this package (README.md, openenv.yaml)."""
    return Path(str(resources.files(PACKAGE).joinpath(name)))


@cache
def package_readme() -> str:
    """This package's README, for `/metadata` and `/web`."""
    return package_file("README.md").read_text(encoding="utf-8")


@cache
def package_version() -> str:
    """The version of the distribution that installed this package."""
    return metadata.version(metadata.packages_distributions()[PACKAGE][0])


__all__ = ["NAME", "PACKAGE", "package_file", "package_readme", "package_version"]
