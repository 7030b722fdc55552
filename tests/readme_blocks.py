"""The code blocks of README.md and docs/*.md, each with the marker that says how the suite runs it.

A block is preceded by `<!-- readme-test: KIND -->`; KIND is one of `KINDS`.
Printed results the documents show as trailing `# comments` are checked too.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

KINDS = {
    "live-server": "run as a script against a live server (localhost:8000 replaced by its address)",
    "server-command": "started as written (on a free port), must answer /health and serve Rooms",
    "token-server": "run from a temporary directory, its last line the server (on a free port): it must want the "
    "token its file holds (tests/test_access.py)",
    "mcp-token": "its function run against a server that wants a token, with that token (tests/test_mcp_workers.py)",
    "token-live-server": "run as a script, in the directory where the token-server block ran, against the server that "
    "block started (localhost:8000 replaced by its address) (tests/test_access.py)",
    "test-command": "the command .ci/run runs: this very suite",
    "shell": "run as written from the project root, must exit 0",
    "validate": "`openenv validate`, run as written from the project root by tests/test_openenv_tooling.py "
    "(localhost:8000 replaced by a live server's address): it must print `Verdict: PASS`",
    "sweep-command": "a long benchmark, run by the bench test `SWEEP_COMMANDS` names with the smallest sizes "
    "(`SMALL_SIZES` replace its --sizes, --reps, --sweep, --duration, --wait, --rounds): the rows, columns and "
    "lines of its output block must appear, numbers aside, and the test checks its JSON report",
    "promql": "each line a PromQL query that a real Prometheus scraping a live server answers (tests/test_metrics.py)",
    "output": "what the block before it prints (or an excerpt): the same rows, columns and lines must appear",
    "app-excerpt": "must appear verbatim in server/app.py",
    "layout": "every path it lists must exist",
    "new-command": "run by tests/test_new_env.py with its ../tally replaced by a temporary directory",
    "docker": "run by the container tests (tests/test_docker.py)",
    "hub": "run up to the network boundary (tests/test_docker.py, tests/test_openenv_tooling.py)",
    "swarm": "run by tests/test_swarm.py on a single-node swarm (its stack name and replica addresses substituted)",
    "haproxy": "run by tests/test_mcp_workers.py with Debian's haproxy in front of two servers (their addresses, "
    "and a free port for :8000, substituted)",
    "swarm-host": "needs a normal Docker host (the routing mesh) or several machines; tests/test_swarm.py runs "
    "the DockerSwarmProvider block where the mesh answers",
    "trl-smoke": "run as written against a live server (localhost:8000 replaced) by tests/test_trl_example.py",
    "trl-gpu": "run against a live server up to where a GPU is needed (tests/test_trl_example.py)",
    "trl-excerpt": "must appear in examples/trl_grpo.py, indentation aside",
    "new-update": "run by tests/test_new_env.py with its ../tally replaced by a new project it derived",
    "new-env": "the person's edit tests/test_new_env.py applies to a new project (models, __init__/reset/step, "
    "reward range, their game's test)",
    "new-project": "what tests/test_new_env.py runs in the new project: its tests, then its server",
}

# What a `sweep-command` block's options become in the suite: enough to print every row and column.
SMALL_SIZES = {"--sizes": "4", "--reps": "1", "--sweep": "1,2", "--duration": "0.2", "--wait": "0.1", "--rounds": "1"}
# Each `sweep-command` block, by what its command says, and the bench test module that runs it.
SWEEP_COMMANDS = {
    "rooms-bench --compare-template --sweep": "bench/tests/test_bench.py",
    "rooms-bench startup": "bench/tests/test_bench.py",
    "rooms-bench capacity": "bench/tests/test_capacity.py",
}

_MARKED_BLOCK = re.compile(
    r"<!-- readme-test: (?P<kind>[\w-]+) -->\n```(?P<lang>\w*)\n(?P<code>.*?)^```\n", re.S | re.M
)
_FENCE_OPENING = re.compile(r"^```\w*\n(?:.*?)^```\n", re.S | re.M)


def block_id(block: object) -> str:
    """A test id for a block (pytest 8.3 asks one of its empty-set placeholder too)."""
    return block.id if isinstance(block, Block) else "no-block"


@dataclass(frozen=True)
class Block:
    index: int  # position among the blocks of all documents, README.md first
    kind: str
    lang: str
    code: str
    line: int
    source: str = "README.md"  # the document, relative to the project root

    @property
    def id(self) -> str:
        return f"{self.source}-{self.kind}-line{self.line}"

    def expected_output(self) -> list[re.Pattern[str]]:
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


def documents() -> list[Path]:
    """README.md, then the pages of docs/ it links to, by name."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_text() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_blocks(kind: str | None = None) -> list[Block]:
    """The marked blocks of README.md and docs/*.md, in that order; those of `kind` if given."""
    blocks: list[Block] = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        source = path.relative_to(ROOT).as_posix()
        for m in _MARKED_BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            blocks.append(Block(len(blocks), m["kind"], m["lang"], m["code"], line, source))
    return [b for b in blocks if kind is None or b.kind == kind]


def next_block(block: Block) -> Block | None:
    """The block right after `block` in the same document, if any."""
    following = [b for b in readme_blocks() if b.index == block.index + 1 and b.source == block.source]
    return following[0] if following else None


def fence_count(path: Path | None = None) -> int:
    """Fenced blocks, marked or not, in `path` (default: README.md)."""
    text = (path or ROOT / "README.md").read_text(encoding="utf-8")
    return len(_FENCE_OPENING.findall(text))


def run_in_process(code: str) -> str:
    """Run `code` as a script (`__name__ == "__main__"`) in this process; returns what it printed. For blocks that
    are clients of a server, and read no file: they need no interpreter of their own."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<block>", "exec"), {"__name__": "__main__"})
    return printed.getvalue()


def run_python(code: str, timeout: float = 180) -> str:
    """Run `code` with this interpreter from the project root; it must exit 0. Returns its stdout."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"block failed:\n{code}\n--- stderr ---\n{result.stderr}"
    return result.stdout


def assert_prints_what_it_promises(block: Block, stdout: str) -> None:
    for pattern in block.expected_output():
        assert any(pattern.fullmatch(line) for line in stdout.splitlines()), (
            f"{block.source} promises a line matching {pattern.pattern!r}; the block printed:\n{stdout}"
        )


def layout_paths(block: Block) -> list[str]:
    """The paths a `layout` block's tree lists, relative to the project root (directories end in /)."""
    parents: list[str] = []
    paths = []
    for line in block.code.splitlines()[1:]:
        match = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        if not match:
            continue
        depth = len(match[1]) // 4
        parents = parents[:depth]
        name = match[2]
        paths.append("".join(parents) + name)
        if name.endswith("/"):
            parents.append(name)
    return paths


def with_small_sizes(command: str) -> str:
    """`command` with each option of `SMALL_SIZES` it gives set to its small value."""
    for option, value in SMALL_SIZES.items():
        command = re.sub(rf"{option} \S+", f"{option} {value}", command)
    return command


_NUMBER = re.compile(r"\d[\d,.]*")
_TABLE_RULE = tuple("┏┡└━─")


def output_shape(text: str) -> set[str]:
    """What a command's output looks like, numbers aside: its tables' columns and row labels, its other lines."""
    shape = set()
    for raw in text.splitlines():
        line = _NUMBER.sub("N", raw.strip())
        if line.startswith("┃"):
            shape.add("columns: " + " | ".join(cell.strip() for cell in line.strip("┃").split("┃")))
        elif line.startswith("│"):
            shape.add("row: " + line.split("│")[1].strip())
        elif line and not line.startswith(_TABLE_RULE):
            shape.add("line: " + line)
    return shape


def assert_output_has_the_shape_shown(shown: Block, stdout: str) -> None:
    missing = output_shape(shown.code) - output_shape(stdout)
    assert not missing, f"{shown.source} shows what the command no longer prints: {sorted(missing)}\n{stdout}"


@dataclass(frozen=True)
class SweepRun:
    stdout: str
    report: dict[str, Any]  # what its --json wrote


def run_sweep_command(says: str, directory: Path, *extra: str) -> SweepRun:
    """Run the `sweep-command` block that `says` (a key of `SWEEP_COMMANDS`) with `SMALL_SIZES`, its JSON
    report written in `directory`, `extra` options added. It must exit 0 and print what its output block shows.
    """
    [block] = [b for b in readme_blocks("sweep-command") if says in " ".join(b.code.split()[2:])]
    report = directory / "report.json"
    command = re.sub(r" --json \S+", "", with_small_sizes(block.code.strip()))
    command = " ".join([command, "--json", str(report), *extra])
    result = subprocess.run(["bash", "-euc", command], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    following = next_block(block)
    assert following is not None and following.kind == "output", "a sweep command is followed by what it prints"
    assert_output_has_the_shape_shown(following, result.stdout)
    return SweepRun(result.stdout, json.loads(report.read_text()))
