"""The machinery is apart from the name: a copy for another environment uses it unchanged.

What is Rooms' own lives in the four files OpenEnv's template has (`models.py`, `client.py`,
`server/rooms_environment.py`, `server/app.py`) and the two that export their names; every other
module names no Rooms type, no `rooms` import path and no `ROOMS_` setting, so it works under any
package name. The list is rooms_new's: `rooms-new` copies exactly these modules unchanged.
"""

from __future__ import annotations

import re

import pytest

from rooms_new import generic_files
from tests.conftest import ROOT

GENERIC_FILES = generic_files(ROOT)
ROOMS_NAME = re.compile(r"Rooms|rooms\.|ROOMS_")


def test_the_machinery_is_there() -> None:
    assert {"kit/client.py", "kit/application.py", "kit/settings.py", "kit/command.py"} <= set(GENERIC_FILES)


@pytest.mark.parametrize("path", GENERIC_FILES)
def test_a_generic_module_names_no_rooms_type_path_or_setting(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    found = [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if ROOMS_NAME.search(line)]
    assert found == []


def test_settings_are_prefixed_by_the_package_name() -> None:
    from rooms.kit.settings import PREFIX, Settings

    assert PREFIX == "ROOMS_"
    assert Settings.from_env({"ROOMS_MAX_PAYLOAD_BYTES": "1000"}).max_payload_bytes == 1000
