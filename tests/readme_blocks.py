"""The README's code blocks, each with the marker that says how the suite runs it.

A block is preceded by `<!-- readme-test: KIND -->`; KIND is one of `KINDS`.
Printed results the README documents as trailing `# comments` are checked too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.conftest import ROOT

KINDS = {
    "python": "run as a script",
    "live-server": "run as a script against a live server (localhost:8000 replaced by its address)",
    "server-command": "started as written (on a free port), must answer /health and serve Rooms",
    "test-command": "the command .ci/run runs: this very suite",
    "shell": "run as written from the project root, must exit 0",
    "live-shell": "run from the project root against a live server (localhost:8000 replaced), must exit 0",
    "sweep-command": "a long sweep, run with small sizes (`--sizes 4,8 --reps 1`); its output block's rows must appear",
    "output": "what the block before it prints: the same rows must appear when it runs",
    "app-excerpt": "must appear verbatim in server/app.py",
    "layout": "every path it lists must exist",
    "docker": "run by the container tests (tests/test_docker.py)",
    "hub": "run up to the network boundary (tests/test_docker.py, tests/test_openenv_tooling.py)",
}

_MARKED_BLOCK = re.compile(r"<!-- readme-test: (?P<kind>[\w-]+) -->\n```(?P<lang>\w*)\n(?P<code>.*?)^```\n", re.S | re.M)
_FENCE_OPENING = re.compile(r"^```\w*\n(?:.*?)^```\n", re.S | re.M)


@dataclass(frozen=True)
class Block:
    index: int
    kind: str
    lang: str
    code: str
    line: int

    @property
    def id(self) -> str:
        return f"{self.kind}-line{self.line}"

    def expected_output(self) -> list[re.Pattern]:
        """Patterns for what the block's `print(...)  # shown` lines and trailing comments promise."""
        promised: list[str] = []
        lines = self.code.rstrip("\n").splitlines()
        for line in lines:
            if line.lstrip().startswith("print(") and "  # " in line:
                promised.append(line.split("  # ", 1)[1])
        trailing = []
        for line in reversed(lines):
            if not line.startswith("# "):
                break
            trailing.append(line[2:])
        promised.extend(reversed(trailing))
        return [re.compile(re.escape(text).replace(re.escape("..."), ".*")) for text in promised]


def readme_text() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_blocks(kind: str | None = None) -> list[Block]:
    text = readme_text()
    blocks = [
        Block(i, m["kind"], m["lang"], m["code"], text.count("\n", 0, m.start()) + 2)
        for i, m in enumerate(_MARKED_BLOCK.finditer(text))
    ]
    return [b for b in blocks if kind is None or b.kind == kind]


def fence_count() -> int:
    return len(_FENCE_OPENING.findall(readme_text()))
