"""`rooms-bench`: step latency and throughput of an OpenEnv env server.

With no `--url` it starts a local Rooms server, measures, and stops it. `--floor`
adds a bare `websockets` echo server answering the same JSON frames, and prints
each result's ratio to it; `--compare-template` adds the pristine `openenv init`
template served from the same virtual environment.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from rooms.kit.testing import LiveServer
from rooms_bench import bound, capacity, failover, layers, mcp_calls, metrics_cost, startup
from rooms_bench.compare import (
    COLD_START_ROUNDS,
    Contender,
    Ratio,
    compare_sync_side_by_side,
    compare_with_template,
    measure_cold_starts,
)
from rooms_bench.measure import Plan, console, measure
from rooms_bench.report import Results, print_results, write_json, write_plot
from rooms_bench.servers import (
    Template,
    generate_template,
    observation_frame,
    rooms_classes,
    start_floor,
    start_rooms,
    start_template,
)
from rooms_bench.sessions import env_client_async, sessions_for, websocket_sync

# Sessions the async comparison with the template runs, at least: servers are started with room for them.
TEMPLATE_CONCURRENT_SESSIONS = 16


@dataclass(frozen=True)
class Subcommand:
    """`rooms-bench NAME ...`: its help line, its options, and what it runs (returning the exit status)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# Subcommands beside the default measurement.
SUBCOMMANDS: dict[str, Subcommand] = {
    "bound": Subcommand(bound.HELP, bound.add_arguments, bound.run),
    "capacity": Subcommand(capacity.HELP, capacity.add_arguments, capacity.run),
    "failover": Subcommand(failover.HELP, failover.add_arguments, failover.run),
    "layers": Subcommand(layers.HELP, layers.add_arguments, layers.run),
    "mcp": Subcommand(mcp_calls.HELP, mcp_calls.add_arguments, mcp_calls.run),
    "metrics": Subcommand(metrics_cost.HELP, metrics_cost.add_arguments, metrics_cost.run),
    "startup": Subcommand(startup.HELP, startup.add_arguments, startup.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rooms-bench", description=(__doc__ or "").split("\n\n")[0])
    add_measure_arguments(parser)
    parser.set_defaults(run=run_measure)
    if SUBCOMMANDS:
        subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND")
        for name, subcommand in SUBCOMMANDS.items():
            subparser = subparsers.add_parser(name, help=subcommand.help, description=subcommand.help)
            subcommand.add_arguments(subparser)
            subparser.set_defaults(run=subcommand.run)
    return parser


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", help="measure a running server (default: start a local one)")
    add("--sessions", type=int, default=1, help="concurrent sessions (default 1)")
    add("--steps", type=int, default=2000, help="timed steps per session (default 2000)")
    add("--duration", type=float, help="seconds per run instead of --steps")
    add("--warmup", type=int, default=100, help="untimed steps per session first (default 100)")
    add("--message-size", type=int, default=13, help="message size in bytes (default 13)")
    add("--transport", choices=("ws", "http"), default="ws")
    add("--mode", choices=("sync", "async"), default="sync")
    add("--floor", action="store_true", help="also measure a bare websockets echo; print ratios")
    add("--compare-template", action="store_true", help="also measure the pristine `openenv init` template")
    add("--sweep", type=session_counts, help="comma-separated session counts, async WebSocket, e.g. 1,16,128,1000")
    rounds_help = f"with --compare-template: cold starts per server, their median kept (default {COLD_START_ROUNDS})"
    add("--rounds", type=int, default=COLD_START_ROUNDS, help=rounds_help)
    add("--json", type=Path, help="write the figures to this file")
    add("--plot", type=Path, help="write a latency histogram (and sweep chart) PNG; needs matplotlib")


def session_counts(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run is run_measure:
        bad_counts = min(args.sessions, args.steps, args.rounds) < 1 or args.message_size < 0
        if bad_counts or (args.duration is not None and args.duration <= 0):
            parser.error("--sessions, --steps and --rounds must be ≥ 1, --message-size ≥ 0, --duration > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rooms-bench` console script."""
    args = parse_args(argv)
    raise_open_files_limit()
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return status


def raise_open_files_limit() -> None:
    """A thousand sessions need a thousand sockets: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_measure(args: argparse.Namespace) -> int:
    """The default command: measure Rooms (or `--url`), and what the options add."""
    results = Results(target=args.url or "local rooms server")
    with ExitStack() as cleanup:
        try:
            measure_all(args, results, cleanup)
        except (RuntimeError, httpx.HTTPError) as exc:
            raise SystemExit(f"rooms-bench: {exc}") from None
    print_results(results)
    if args.json:
        write_json(args.json, results)
    if args.plot:
        write_plot(args.plot, results.runs)
    return 1 if results.failed else 0


def measure_all(args: argparse.Namespace, results: Results, cleanup: ExitStack) -> None:
    """Start what is needed (stopped by `cleanup`), measure, and add the figures to `results`."""
    work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rooms-bench-")))
    plan = Plan(args.steps, args.duration, args.warmup, "x" * args.message_size)
    most_sessions = max([args.sessions, TEMPLATE_CONCURRENT_SESSIONS, *(args.sweep or [])])

    def started(server: LiveServer) -> LiveServer:
        cleanup.callback(server.stop)
        return server

    local = None if args.url else started(start_rooms(work_dir, most_sessions))
    url = args.url.rstrip("/") if args.url else local.url if local else ""
    if local is not None and local.start_seconds is not None:
        results.cold_starts["rooms"] = local.start_seconds
    rooms = Contender(rooms_classes(), url)

    compared = args.floor or args.compare_template
    if not (compared and (args.transport, args.mode, args.sessions) == ("ws", "sync", 1)):
        sessions = sessions_for(args.transport, args.mode, rooms.classes, url, plan.message)
        results.runs.append(measure(f"rooms {args.transport} {args.mode}", args.sessions, plan, sessions, local))
    generated: Template | None = None
    template: Contender | None = None
    if args.compare_template:
        generated = generate_template()
        template = Contender(generated.classes, started(start_template(work_dir, generated, most_sessions)).url)
    if compared:
        floor = started(start_floor(work_dir, observation_frame(url, plan.message)))
        runs, ratios = compare_sync_side_by_side(plan, rooms, websocket_sync(floor.url, plan.message), template)
        results.runs += runs
        results.ratios += ratios
    if generated is not None and template is not None:
        runs, ratios = compare_with_template(plan, rooms, template)
        results.runs += runs
        results.ratios += ratios
        compare_cold_starts(work_dir, most_sessions, generated, results, args.rounds)
    for count in args.sweep or []:
        sessions = env_client_async(rooms.classes, url, plan.message)
        results.runs.append(measure(f"sweep {count} sessions", count, plan, sessions, local))


def compare_cold_starts(work_dir: Path, most_sessions: int, template: Template, results: Results, rounds: int) -> None:
    """Both servers started and stopped in turn; the ratio of their median cold starts."""

    def cold_start(start: Callable[[], LiveServer]) -> Callable[[], float]:
        def launch() -> float:
            server = start()
            server.stop()
            return server.start_seconds or float("nan")

        return launch

    results.cold_starts = measure_cold_starts({
        "rooms": cold_start(lambda: start_rooms(work_dir, most_sessions)),
        "template": cold_start(lambda: start_template(work_dir, template, most_sessions)),
    }, rounds)  # fmt: skip
    results.starts = rounds
    ratio = results.cold_starts["rooms"] / results.cold_starts["template"]
    results.ratios.append(Ratio("rooms cold start", "template cold start", ratio))


if __name__ == "__main__":
    sys.exit(main())
