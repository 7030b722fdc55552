"""`rooms-bench startup`: how fast servers start and how much memory they hold idle, and the client's import.

Three servers, each started `--rounds` times in alternating order: Rooms with the web interface
off (the default) and on (`ENABLE_WEB_INTERFACE=true`), and the pristine `openenv init` template,
served as its users have it (its process imports OpenEnv, and with it Gradio, whether or not the
web interface is on). For each: the median seconds from process start to `/health` 200, and the
median resident memory of the server process (one worker) after `--settle` seconds idle.

Then the clients, each imported `--rounds` times in a fresh interpreter: the seconds the import
statement takes, and the resident memory of that process after it (interpreter included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rooms.kit.testing import LiveServer
from rooms_bench.compare import COLD_START_ROUNDS, Startup, StartupFigure, alternate
from rooms_bench.report import Results, print_results, write_json
from rooms_bench.servers import (
    TEMPLATE_PACKAGE,
    Template,
    generate_template,
    start_rooms,
    start_template,
    template_path,
)

HELP = "cold start and idle memory of Rooms (web interface off and on) and of the template; the clients' imports"
DEFAULT_SETTLE_S = 2.0
TEMPLATE_SERVER = "template server (openenv init)"
ROOMS_IMPORT = "from rooms import RoomsEnv"
TEMPLATE_IMPORT = f"from {TEMPLATE_PACKAGE} import RoomsTemplateEnv"
TEMPLATE_CLIENT = f"template client: {TEMPLATE_IMPORT}"
# The same import where Gradio cannot be imported: what OpenEnv's own imports weigh without it.
ROOMS_IMPORT_WITHOUT_GRADIO = f"import sys; sys.modules['gradio'] = None\n{ROOMS_IMPORT}"
# Run in a fresh interpreter: times STATEMENT, then prints the seconds and the process's resident memory.
PROBE = """\
import json, time
started = time.perf_counter()
{statement}
seconds = time.perf_counter() - started
status = open("/proc/self/status").read().split("VmRSS:")[1]
print(json.dumps({{"seconds": seconds, "rss_kb": int(status.split()[0])}}))
"""


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_kb: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--rounds", type=positive_int, default=COLD_START_ROUNDS,
        help=f"fresh processes of each kind; figures are their medians (default {COLD_START_ROUNDS})")  # fmt: skip
    add(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        help=f"seconds a server idles after /health before its memory is read (default {DEFAULT_SETTLE_S:g})",
    )
    add("--json", type=Path, help="write the figures to this file")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="rooms-bench-") as directory:
        work_dir = Path(directory)
        template = generate_template()
        try:
            startup = measure_startup(work_dir, template, args.rounds, args.settle)
        except RuntimeError as exc:
            raise SystemExit(f"rooms-bench startup: {exc}") from None
    results = Results(target="local servers and clients", startup=startup)
    print_results(results)
    if args.json:
        write_json(args.json, results)
    return 0


def measure_startup(work_dir: Path, template: Template, rounds: int, settle_s: float) -> Startup:
    web_off, web_on = {"ENABLE_WEB_INTERFACE": "false"}, {"ENABLE_WEB_INTERFACE": "true"}
    servers = alternate({
        "rooms server, web interface off": server_sample(lambda: start_rooms(work_dir, 1, web_off), settle_s),
        "rooms server, web interface on": server_sample(lambda: start_rooms(work_dir, 1, web_on), settle_s),
        TEMPLATE_SERVER: server_sample(lambda: start_template(work_dir, template, 1, web_off), settle_s),
    }, rounds, "server starts")  # fmt: skip
    clients = alternate({
        f"rooms client: {ROOMS_IMPORT}": client_sample(ROOMS_IMPORT, work_dir),
        "rooms client, Gradio not importable": client_sample(ROOMS_IMPORT_WITHOUT_GRADIO, work_dir),
        TEMPLATE_CLIENT: client_sample(TEMPLATE_IMPORT, work_dir, template_path(template)),
    }, rounds, "client imports")  # fmt: skip
    return Startup(
        servers=figures(servers, TEMPLATE_SERVER),
        clients=figures(clients, TEMPLATE_CLIENT),
        rounds=rounds,
        settle_s=settle_s,
    )


def server_sample(start: Callable[[], LiveServer], settle_s: float) -> Callable[[], Sample]:
    """Start a server, let it idle `settle_s` seconds, read its memory, stop it."""

    def launch() -> Sample:
        server = start()
        try:
            time.sleep(settle_s)
            rss_kb = server.rss_kb()
        finally:
            server.stop()
        if rss_kb is None or server.start_seconds is None:
            raise RuntimeError(f"the server exited while idle:\n{server.log()}")
        return Sample(server.start_seconds, rss_kb)

    return launch


def client_sample(statement: str, cwd: Path, env: dict[str, str] | None = None) -> Callable[[], Sample]:
    """Run `statement` in a fresh interpreter (in `cwd`, `env` added): its seconds and the process's memory."""

    def launch() -> Sample:
        result = subprocess.run(
            [sys.executable, "-c", PROBE.format(statement=statement)],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"`{statement}` failed in a fresh interpreter:\n{result.stderr}")
        measured = json.loads(result.stdout.splitlines()[-1])
        return Sample(measured["seconds"], measured["rss_kb"])

    return launch


def figures(samples: dict[str, list[Sample]], reference: str) -> list[StartupFigure]:
    """The median of each one's samples, and its ratios to `reference`'s medians."""
    seconds = {name: statistics.median(s.seconds for s in values) for name, values in samples.items()}
    rss_kb = {name: statistics.median(s.rss_kb for s in values) for name, values in samples.items()}
    return [
        StartupFigure(
            name, seconds[name], rss_kb[name], seconds[name] / seconds[reference], rss_kb[name] / rss_kb[reference]
        )
        for name in samples
    ]
