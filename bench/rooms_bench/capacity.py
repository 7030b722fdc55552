"""`rooms-bench capacity`: how many concurrent sessions a deployment holds, by OpenEnv's scaling method.

Each request opens `/ws`, resets, steps, waits `--wait` seconds (the rollout's think time), steps
again and closes. All requests of a size are launched at once, as OpenEnv's scaling experiments do.
A request succeeds when it connects within 10 s and every reply arrives within 60 s: the defaults of
OpenEnv's `EnvClient`. The max batch is the largest size whose success rate over `--reps`
repetitions reaches 95 % (and 99 %).

With no `--url` it starts the Rooms server itself; `--floor` also sweeps a bare websockets server
answering the same frames, `--compare-template` the pristine `openenv init` template. Targets run
interleaved, size by size, so that their ratios come from the same moments of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from rooms.kit.testing import LiveServer, free_port, start_server
from rooms_bench.measure import percentile
from rooms_bench.servers import generate_template, start_floor, start_template

HELP = "how many concurrent sessions a deployment holds, by OpenEnv's scaling method"
CONNECT_TIMEOUT_S = 10.0  # OpenEnv EnvClient's connect_timeout_s default
REPLY_TIMEOUT_S = 60.0  # OpenEnv EnvClient's message_timeout_s default
THRESHOLDS = (0.95, 0.99)
DEFAULT_SIZES = "64,128,256,512,1024,2048,4096"
STEP_MESSAGE = "Hello, World!"

console = Console(stderr=True)


# --- one request ---------------------------------------------------------------------------------


@dataclass
class RequestResult:
    """One request: whether it succeeded, why not, and how long each part took (seconds)."""

    ok: bool = False
    failure: str | None = None
    connect_s: float | None = None
    reset_s: float | None = None
    step_s: list[float] = field(default_factory=list)
    total_s: float | None = None  # think time excluded
    total_with_wait_s: float | None = None


class Failed(Exception):
    """A request that did not complete, with the kind of failure it counts as."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def failure_kind(exc: BaseException) -> str:
    """The short name a failed request is counted under."""
    if isinstance(exc, Failed):
        return exc.kind
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (ConnectionRefusedError, "refused"),
        (ConnectionResetError, "reset by peer"),
        (InvalidHandshake, "handshake"),
        (ConnectionClosed, "closed"),
    )
    for kind, name in kinds:
        if isinstance(exc, kind):
            return name
    return f"OSError {exc.errno}" if isinstance(exc, OSError) else type(exc).__name__


async def _reply(ws: ClientConnection, frame: str) -> dict[str, Any]:
    """Send `frame` and return the reply, a JSON object; an error reply raises `Failed` with its code."""
    # The server may have answered (CAPACITY_REACHED) and closed before this frame went out.
    with suppress(ConnectionClosed):
        await ws.send(frame)
    try:
        raw = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise Failed("reply timeout") from None
    reply: dict[str, Any] = json.loads(raw)
    if reply.get("type") == "error":
        raise Failed(str(reply.get("data", {}).get("code") or "error"))
    return reply


RESET_FRAME = json.dumps({"type": "reset", "data": {}})
STEP_FRAME = json.dumps({"type": "step", "data": {"message": STEP_MESSAGE}})


async def pause(wait: float) -> float:
    """Sleep at least `wait` s by `time.perf_counter()`; return the time slept.

    uvloop's timers read a clock cached at the start of each loop iteration, so one can fire a
    fraction of a millisecond early: the rest is slept again, and the report's wait is never short.
    """
    started = time.perf_counter()
    while (slept := time.perf_counter() - started) < wait:
        await asyncio.sleep(wait - slept)
    return slept


async def one_request(ws_url: str, wait: float) -> RequestResult:
    """Open `/ws`, reset, step, wait `wait` s, step again, close; time each part."""
    result = RequestResult()
    started = time.perf_counter()
    waited = 0.0
    try:
        try:
            ws = await connect(
                ws_url, open_timeout=CONNECT_TIMEOUT_S, compression=None, max_size=None, ping_interval=None, proxy=None
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise Failed("connect timeout") from None
        result.connect_s = time.perf_counter() - started
        async with ws:
            mark = time.perf_counter()
            await _reply(ws, RESET_FRAME)
            result.reset_s = time.perf_counter() - mark
            for step in range(2):
                if step:
                    waited = await pause(wait)
                mark = time.perf_counter()
                await _reply(ws, STEP_FRAME)
                result.step_s.append(time.perf_counter() - mark)
        result.ok = True
    except Exception as exc:  # every failure is counted by kind, none ends the sweep
        result.failure = failure_kind(exc)
    elapsed = time.perf_counter() - started
    if result.ok:
        result.total_with_wait_s = elapsed
        result.total_s = elapsed - waited
    return result


async def storm(ws_urls: Sequence[str], sessions: int, wait: float) -> list[RequestResult]:
    """`sessions` requests launched at once, spread round-robin over `ws_urls`."""
    return list(await asyncio.gather(*(one_request(ws_urls[i % len(ws_urls)], wait) for i in range(sessions))))


# --- what a run of one size reports -------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


@dataclass
class SizeResult:
    """One target at one size, all repetitions pooled."""

    target: str
    sessions: int
    reps: int
    requests: int
    successes: int
    failures: dict[str, int]
    success_rate: float
    connect_p50_s: float | None
    reset_p50_s: float | None
    step_p50_s: float | None
    request_p99_s: float | None
    request_with_wait_p99_s: float | None
    rss_per_session_kb: float | None
    batch_per_core: float
    generator_cpu_s: float
    server_cpu_s: float | None


def summarize(
    target: str,
    sessions: int,
    reps: list[list[RequestResult]],
    cores: int,
    rss_kb: list[float | None],
    generator_cpu: float,
    server_cpu: float | None,
) -> SizeResult:
    pooled = [r for rep in reps for r in rep]
    ok = [r for r in pooled if r.ok]
    failures = Counter(r.failure for r in pooled if r.failure)
    known_rss = [value for value in rss_kb if value is not None]
    return SizeResult(
        target=target,
        sessions=sessions,
        reps=len(reps),
        requests=len(pooled),
        successes=len(ok),
        failures=dict(failures.most_common()),
        success_rate=len(ok) / len(pooled) if pooled else 0.0,
        connect_p50_s=median([r.connect_s for r in pooled if r.connect_s is not None]),
        reset_p50_s=median([r.reset_s for r in pooled if r.reset_s is not None]),
        step_p50_s=median([s for r in pooled for s in r.step_s]),
        request_p99_s=percentile([r.total_s for r in ok if r.total_s is not None], 99),
        request_with_wait_p99_s=percentile([r.total_with_wait_s for r in ok if r.total_with_wait_s is not None], 99),
        rss_per_session_kb=max(known_rss) / sessions if known_rss else None,
        batch_per_core=sessions / cores,
        generator_cpu_s=generator_cpu,
        server_cpu_s=server_cpu,
    )


def max_batch(results: Sequence[SizeResult], threshold: float) -> int | None:
    """The largest size whose pooled success rate reaches `threshold`."""
    passing = [r.sessions for r in results if r.success_rate >= threshold]
    return max(passing) if passing else None


# --- the targets ---------------------------------------------------------------------------------


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and its descendants (uvicorn's workers); none once it has exited."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_kb(pid: int) -> int | None:
    """The resident memory of `pid` and its descendants, in KiB."""
    total, seen = 0, False
    for member in process_tree(pid):
        with suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss // 1024
            seen = True
    return total if seen else None


def tree_cpu_s(pid: int) -> float | None:
    """The CPU seconds (user and system) `pid` and its descendants have used."""
    total, seen = 0.0, False
    for member in process_tree(pid):
        with suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
            seen = True
    return total if seen else None


@dataclass
class Target:
    """What a sweep sends requests to; `server` when this command started it."""

    name: str
    ws_urls: list[str]
    server: LiveServer | None = None


def _ws_url(url: str) -> str:
    url = url.rstrip("/")
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(http):
            url = ws + url[len(http) :]
    return url if url.endswith("/ws") else url + "/ws"


def rooms_command(port: int, workers: int | None) -> list[str]:
    command = [sys.executable, "-m", "rooms.kit.command", "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--workers", str(workers)] if workers else [])


def floor_frames() -> dict[str, str]:
    """The replies Rooms gives to this sweep's reset and step frames, computed with Rooms itself."""
    from openenv.core.env_server.serialization import serialize_observation

    from rooms.models import RoomsAction
    from rooms.server.rooms_environment import RoomsEnvironment

    env = RoomsEnvironment()
    reset = serialize_observation(env.reset())
    step = serialize_observation(env.step(RoomsAction(message=STEP_MESSAGE)))
    return {
        "reset": json.dumps({"type": "observation", "data": reset}),
        "step": json.dumps({"type": "observation", "data": step}),
    }


@contextmanager
def started_targets(args: argparse.Namespace, log_dir: Path) -> Iterator[list[Target]]:
    """The targets to sweep: `--url`s as given, or servers started here (stopped on exit)."""
    if args.url:
        yield [Target("given", [_ws_url(url) for url in args.url])]
        return
    env = {"MAX_CONCURRENT_ENVS": str(args.max_sessions)} if args.max_sessions else {}
    with ExitStack() as stack:
        targets: list[Target] = []

        def add(name: str, server: LiveServer) -> None:
            stack.callback(server.stop)
            targets.append(Target(name, [_ws_url(server.url)], server))

        port = free_port()
        add("rooms", start_server(log_dir, rooms_command(port, args.workers), env=env, port=port, timeout=180))
        if args.floor:
            frames = floor_frames()
            add("floor", start_floor(log_dir, frames["step"], frames["reset"]))
        if args.compare_template:
            add("template", start_template(log_dir, generate_template(), max(args.sizes)))
        yield targets


# --- the sweep -----------------------------------------------------------------------------------


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop when it is installed (it comes with uvicorn[standard]): a cheaper generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def measure_once(target: Target, sessions: int, wait: float) -> tuple[list[RequestResult], float | None]:
    """One repetition; with a server started here, also its peak RSS above its idle RSS."""
    pid = target.server.process.pid if target.server else None
    idle = tree_rss_kb(pid) if pid else None
    peak = idle
    task = asyncio.ensure_future(storm(target.ws_urls, sessions, wait))
    while not task.done():
        await asyncio.wait([task], timeout=0.1)
        if pid:
            now = tree_rss_kb(pid)
            peak = max(peak or 0, now or 0)
    rss = float(peak - idle) if idle is not None and peak is not None else None
    return task.result(), rss


def mean_or_none(total: float | None, count: int) -> float | None:
    return None if total is None else total / count


async def sweep(
    targets: list[Target], sizes: list[int], reps: int, wait: float, settle: float, cores: int
) -> dict[str, list[SizeResult]]:
    results: dict[str, list[SizeResult]] = {t.name: [] for t in targets}
    for sessions in sizes:
        runs: dict[str, list[list[RequestResult]]] = {t.name: [] for t in targets}
        rss: dict[str, list[float | None]] = {t.name: [] for t in targets}
        generator_cpu: dict[str, float] = {t.name: 0.0 for t in targets}
        server_cpu: dict[str, float | None] = {t.name: None for t in targets}
        for rep in range(reps):
            # Alternate the order so that no target always runs right after another one's storm.
            for target in targets if rep % 2 == 0 else list(reversed(targets)):
                console.print(f"[dim]{target.name}: {sessions} sessions, repetition {rep + 1}/{reps}[/dim]")
                cpu_before = resource.getrusage(resource.RUSAGE_SELF)
                server_before = tree_cpu_s(target.server.process.pid) if target.server else None
                results_once, rss_once = await measure_once(target, sessions, wait)
                cpu_after = resource.getrusage(resource.RUSAGE_SELF)
                generator_cpu[target.name] += (
                    cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
                )
                if target.server and server_before is not None:
                    server_after = tree_cpu_s(target.server.process.pid)
                    if server_after is not None:
                        server_cpu[target.name] = (server_cpu[target.name] or 0.0) + server_after - server_before
                runs[target.name].append(results_once)
                rss[target.name].append(rss_once)
                await asyncio.sleep(settle)  # the server closes the sessions it just served
        for target in targets:
            results[target.name].append(
                summarize(
                    target.name,
                    sessions,
                    runs[target.name],
                    cores,
                    rss[target.name],
                    generator_cpu[target.name] / reps,
                    mean_or_none(server_cpu[target.name], reps),
                )
            )
    return results


# --- output --------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: dict[str, list[SizeResult]], wait: float, reps: int) -> None:
    table = Table(
        title=f"Capacity: open /ws, reset, step, wait {wait:g} s, step, close; {reps} repetition(s) per size;"
        " times in seconds"
    )
    for column in (
        "target",
        "sessions",
        "success",
        "failures",
        "connect p50",
        "reset p50",
        "step p50",
        "P99 excl. wait",
        "P99 incl. wait",
        "RSS/session KB",
        "batch/core",
    ):
        table.add_column(column, justify="left" if column in ("target", "failures") else "right")
    for name, rows in results.items():
        for r in rows:
            failures = ", ".join(f"{kind} {count}" for kind, count in r.failures.items()) or "-"
            rss = "-" if r.rss_per_session_kb is None else f"{r.rss_per_session_kb:.1f}"
            table.add_row(
                name,
                str(r.sessions),
                f"{100 * r.success_rate:.1f} %",
                failures,
                _seconds(r.connect_p50_s),
                _seconds(r.reset_p50_s),
                _seconds(r.step_p50_s),
                _seconds(r.request_p99_s),
                _seconds(r.request_with_wait_p99_s),
                rss,
                f"{r.batch_per_core:g}",
            )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for name, rows in results.items():
        print(
            f"{name}: max batch {max_batch(rows, 0.95) or '-'} at >= 95 %, "
            f"{max_batch(rows, 0.99) or '-'} at >= 99 % success"
        )


def ratios_to_floor(results: dict[str, list[SizeResult]]) -> list[dict[str, Any]]:
    """Each target's P99 (think time excluded) over the floor's, size by size."""
    floor = {r.sessions: r for r in results.get("floor", [])}
    ratios = []
    for name, rows in results.items():
        for r in rows:
            base = floor.get(r.sessions)
            if name == "floor" or base is None or not base.request_p99_s or r.request_p99_s is None:
                continue
            ratios.append(
                {
                    "target": name,
                    "sessions": r.sessions,
                    "p99_over_floor": round(r.request_p99_s / base.request_p99_s, 2),
                }
            )
    return ratios


def report(results: dict[str, list[SizeResult]], args: argparse.Namespace, cores: int) -> dict[str, Any]:
    def rounded(row: SizeResult) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(row).items()}

    return {
        "method": {
            "wait_s": args.wait,
            "reps": args.reps,
            "sizes": args.sizes,
            "connect_timeout_s": CONNECT_TIMEOUT_S,
            "reply_timeout_s": REPLY_TIMEOUT_S,
            "cores": cores,
        },
        "targets": {
            name: {
                "max_batch_95": max_batch(rows, 0.95),
                "max_batch_99": max_batch(rows, 0.99),
                "sizes": [rounded(r) for r in rows],
            }
            for name, rows in results.items()
        },
        "ratios_to_floor": ratios_to_floor(results),
    }


def write_plot(path: Path, results: dict[str, list[SizeResult]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (success, p99) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in results.items():
        sizes = [r.sessions for r in rows]
        success.plot(sizes, [100 * r.success_rate for r in rows], marker="o", label=name)
        p99.plot(sizes, [r.request_p99_s for r in rows], marker="o", label=name)
    success.set(xscale="log", xlabel="concurrent sessions", ylabel="success %", title="Success")
    p99.set(
        xscale="log", xlabel="concurrent sessions", ylabel="seconds", title="P99 of a request (think time excluded)"
    )
    for axes in (success, p99):
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)


# --- command line --------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be positive integers, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `rooms-bench capacity`."""
    parser.add_argument(
        "--url",
        action="append",
        help="server to measure (repeat for replicas: sessions go round-robin); default: start Rooms here",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes(DEFAULT_SIZES),
        help=f"concurrent sessions per run (default {DEFAULT_SIZES})",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per size (default 3)")
    parser.add_argument("--wait", type=float, default=1.0, help="think time between the two steps, s (default 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after each run, s (default 1)")
    parser.add_argument("--workers", type=int, help="`server --workers` for the Rooms server started here")
    parser.add_argument("--max-sessions", type=int, help="MAX_CONCURRENT_ENVS for the Rooms server started here")
    parser.add_argument(
        "--floor", action="store_true", help="also sweep a bare websockets server answering the same frames"
    )
    parser.add_argument(
        "--compare-template", action="store_true", help="also sweep the pristine `openenv init` template"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="write success and P99 against sessions (PNG)")


def raise_open_files_limit() -> int:
    """Lift this process's open-files limit to its hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run(args: argparse.Namespace) -> int:
    """Run a capacity sweep as `args` say; 0 unless nothing at all succeeded."""
    if args.url and (args.floor or args.compare_template or args.workers or args.max_sessions):
        raise SystemExit(
            "--floor, --compare-template, --workers and --max-sessions need no --url: they start servers here"
        )
    if args.reps < 1 or args.wait < 0:
        raise SystemExit("--reps must be at least 1 and --wait at least 0")
    open_files = raise_open_files_limit()
    if open_files < max(args.sizes) + 64:
        console.print(f"[yellow]open-files limit {open_files} is below {max(args.sizes)} sessions[/yellow]")
    cores = len(os.sched_getaffinity(0))
    log_dir = Path(tempfile.mkdtemp(prefix="rooms-bench-capacity-"))
    try:
        with started_targets(args, log_dir) as targets:
            results = run_loop(sweep(targets, args.sizes, args.reps, args.wait, args.settle, cores))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    print_table(results, args.wait, args.reps)
    document = report(results, args, cores)
    for ratio in document["ratios_to_floor"]:
        print(f"{ratio['target']} P99 / floor P99 at {ratio['sessions']}: {ratio['p99_over_floor']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    if args.plot:
        write_plot(args.plot, results)
    return 0 if any(r.successes for rows in results.values() for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rooms-bench capacity", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
