"""What installs: the wheel holds the environment package and nothing of the tooling beside it."""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_of_the_checkout, require
from tests.readme_blocks import layout_paths, readme_blocks

# On one pytest-xdist worker: its tests read one built wheel, made once.
pytestmark = pytest.mark.xdist_group("wheel")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`uv build --wheel` of a copy of the checkout (setuptools writes beside the sources it builds)."""
    uv = shutil.which("uv")
    require(uv is not None, "needs uv on PATH: https://docs.astral.sh/uv/")
    assert uv is not None
    source = copy_of_the_checkout(tmp_path_factory.mktemp("source") / "rooms")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(source)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = out.glob("openenv_rooms-*.whl")
    return built


def packaged_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if ".dist-info/" not in name]


def test_wheel_holds_only_the_rooms_package(wheel: Path) -> None:
    files = packaged_files(wheel)
    print("\n".join(["", *files]))
    assert files, "the wheel is empty"
    for name in files:
        assert re.fullmatch(r"rooms/((server|kit)/)?[\w.]+", name), f"{name} is not part of the environment package"
    assert {"rooms/__init__.py", "rooms/client.py", "rooms/models.py", "rooms/server/app.py"} <= set(files)
    assert not [name for name in files if "bench" in name or "/tests/" in name]


def test_wheel_does_not_require_the_benchmark_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [metadata_name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    required = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        for requirement in metadata.get_all("Requires-Dist") or []
    }
    assert "openenv" in required
    assert not required & {"httpx", "requests", "rich", "matplotlib", "rooms-bench"}


def test_readme_project_structure_lists_every_shipped_file(wheel: Path) -> None:
    """README's Project Structure lists the environment's files; kit/README.md's table, the kit's."""
    [layout] = readme_blocks("layout")
    listed = set(layout_paths(layout))
    kit_listed = set(re.findall(r"^\| `([\w.]+)` \|", (ROOT / "kit" / "README.md").read_text(), re.MULTILINE))
    assert "kit/" in listed
    for name in packaged_files(wheel):
        path = name.removeprefix("rooms/")
        if path.startswith("kit/"):
            assert path.removeprefix("kit/") in kit_listed | {"__init__.py", "README.md"}, f"kit/README.md: {path}"
        else:
            assert path in listed, f"the wheel ships {name}; README's Project Structure does not list {path}"


def test_every_module_in_the_wheel_is_checked_for_private_api_use(wheel: Path) -> None:
    from tests.test_public_api import SHIPPED

    assert {"rooms.client", "rooms.kit.client", "rooms.models", "rooms.server.app"} <= set(SHIPPED)
    wheel_modules = {ROOT / name.removeprefix("rooms/") for name in packaged_files(wheel) if name.endswith(".py")}
    assert wheel_modules == set(SHIPPED.values())
