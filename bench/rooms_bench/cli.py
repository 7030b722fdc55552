"""`rooms-bench`: step latency and throughput of an OpenEnv env server.

With no `--url` it starts a local Rooms server, measures, and stops it. `--floor`
adds a bare `websockets` echo server answering the same JSON frames, and prints
each result's ratio to it; `--compare-template` adds the pristine
`openenv init rooms` template served from the same virtual environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
import inspect

from websockets.sync.client import connect as ws_connect


# A connection held open without `with`: websockets >= 17 warns unless asked for directly.
DIRECT_CONNECTION = {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}

console = Console(stderr=True)
# Sessions open this many at a time: a thousand simultaneous handshakes would time out
# against one server process long before any of them stepped.
OPENING_AT_ONCE = 64
# Single sync sessions compared with each other run in this many alternating slices.
SIDE_BY_SIDE_ROUNDS = 20
# Servers whose cold starts are compared are each started this many times, in alternating order.
COLD_START_ROUNDS = 5


@dataclass
class Run:
    """One measured scenario: what ran, how long each step took, what failed."""

    name: str
    transport: str
    mode: str
    sessions: int
    message_size: int
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    server_rss_per_session_kb: Optional[float] = None

    @property
    def steps(self) -> int:
        return len(self.latencies_ns)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def percentile_us(self, q: float) -> Optional[float]:
        if not self.latencies_ns:
            return None
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] / 1000

    def absorb(self, other: "Run") -> None:
        """Add another part of the same scenario's figures to this one."""
        self.latencies_ns.extend(other.latencies_ns)
        self.errors.update(other.errors)
        self.seconds += other.seconds

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "mode": self.mode,
            "sessions": self.sessions,
            "message_size": self.message_size,
            "steps": self.steps,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "seconds": round(self.seconds, 4),
            "steps_per_s": round(self.steps_per_s, 1),
            "latency_us": {f"p{q}": _round(self.percentile_us(q)) for q in (50, 90, 99)}
            | {"max": _round(self.percentile_us(100))},
            "server_rss_per_session_kb": _round(self.server_rss_per_session_kb),
        }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


# --- servers the benchmark starts itself -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: Optional[subprocess.Popen] = None
    start_seconds: Optional[float] = None

    def rss_kb(self, field: str = "VmRSS") -> Optional[int]:
        """The server's resident memory (`VmHWM`: its peak), when it runs here."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        return next((int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:")), None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def spawn(command: list[str], cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None, port: int = 0) -> Server:
    """Start a server process and wait for `/health` (or, for the floor, the port) to answer."""
    started = time.perf_counter()
    # The log goes to a file: an unread pipe fills up and stalls a server that logs each connection.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited during start: {' '.join(command)}\n{log.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code < 500:
                return Server(url, process, time.perf_counter() - started)
        except requests.RequestException:
            time.sleep(0.02)
    process.kill()
    raise SystemExit(f"server did not answer within 120 s: {' '.join(command)}")


def start_rooms(max_sessions: int) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "rooms.server", "--host", "127.0.0.1", "--port", str(port)]
    return spawn(command, env={"MAX_CONCURRENT_ENVS": str(max(64, max_sessions))}, port=port)


def generate_template(directory: Path) -> Path:
    """`openenv init rooms`, pristine but for its session limit, as package `rooms_template`."""
    openenv = shutil.which("openenv") or str(Path(sys.executable).parent / "openenv")
    subprocess.run([openenv, "init", "rooms", "--output-dir", str(directory)], check=True, capture_output=True)
    package = directory / "rooms_template"
    (directory / "rooms").rename(package)
    app = package / "server" / "app.py"
    app.write_text(app.read_text().replace("max_concurrent_envs=1,", "max_concurrent_envs=1024,"))
    return package


def start_template(package: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "server.app:app", "--host", "127.0.0.1", "--port", str(port)]
    return spawn(command, cwd=package, port=port)


def start_floor(response: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "rooms_bench.cli", "--serve-floor", str(port), response]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdout.readline()  # "ready"
    return Server(f"http://127.0.0.1:{port}", process)


def serve_floor(port: int, response: str) -> None:
    """The floor: a bare websockets server answering every frame with `response`."""
    from websockets.asyncio.server import serve

    async def answer(ws) -> None:
        async for _ in ws:
            await ws.send(response)

    async def main() -> None:
        async with serve(answer, "127.0.0.1", port):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --- the measuring loops ------------------------------------------------------------------------


@dataclass
class Plan:
    steps: int
    duration: Optional[float]
    warmup: int
    message: str

    def keep_going(self, done: int, started: float) -> bool:
        if self.duration is not None:
            return time.perf_counter() - started < self.duration
        return done < self.steps


def _step_frame(message: str) -> str:
    return json.dumps({"type": "step", "data": {"message": message}})


class Counting:
    """Times steps and counts failures for one session; shared by the sync and async loops."""

    def __init__(self, plan: Plan, run: Run, advance: Callable[[int], None]):
        self.plan, self.run, self.advance = plan, run, advance
        self.done, self.started = 0, 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def more(self) -> bool:
        return self.plan.keep_going(self.done, self.started)

    def succeeded(self, t0: int) -> None:
        self.run.latencies_ns.append(time.perf_counter_ns() - t0)
        self.done += 1
        if self.done % 50 == 0:
            self.advance(50)

    def failed(self, exc: BaseException) -> bool:
        """Count the failure; False once a session has failed too often to go on."""
        kind = _kind(exc)
        self.run.errors[kind] += 1
        return self.run.errors[kind] <= 100


def sync_session(make_step: Callable[[], tuple[Callable[[], Any], Callable[[], None]]], plan: Plan, run: Run, advance,
                 opening: threading.Semaphore) -> None:
    """One session in this thread: warm up, then time each step; failures are counted."""
    counting, close = Counting(plan, run, advance), None
    try:
        with opening:
            step, close = make_step()
        for _ in range(plan.warmup):
            step()
        timed_sync_steps(step, counting)
    except Exception as exc:  # noqa: BLE001
        counting.failed(exc)
    finally:
        if close is not None:
            _close_quietly(close)


def timed_sync_steps(step: Callable[[], Any], counting: Counting) -> bool:
    """Time steps until the plan says stop; False if the session failed too often to go on."""
    counting.start()
    while counting.more():
        t0 = time.perf_counter_ns()
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            if not counting.failed(exc):
                return False
            continue
        counting.succeeded(t0)
    return True


def _kind(exc: BaseException) -> str:
    text = str(exc)
    for code in ("CAPACITY_REACHED", "VALIDATION_ERROR"):
        if code in text:
            return code
    if os.environ.get("ROOMS_BENCH_DEBUG"):
        console.print(f"{type(exc).__name__}: {text[:200]}")
    return type(exc).__name__


def rooms_ws_sync(client_cls: type, url: str, message: str):
    def make():
        action = _action_class(client_cls)(message=message)
        env = client_cls(base_url=url).sync()
        env.connect()
        env.reset()
        return (lambda: env.step(action)), env.close

    return make


def _action_class(client_cls: type) -> type:
    module = sys.modules[client_cls.__module__.rsplit(".", 1)[0] + ".models"]
    return module.RoomsAction


def floor_ws_sync(url: str, message: str):
    frame = _step_frame(message)

    def make():
        ws = ws_connect(url.replace("http", "ws"), max_size=None, **DIRECT_CONNECTION)

        def step():
            ws.send(frame)
            ws.recv()

        return step, ws.close

    return make


def http_sync(url: str, message: str):
    def make():
        session = requests.Session()
        body = {"action": {"message": message}}

        def step():
            response = session.post(f"{url}/step", json=body, timeout=60)
            response.raise_for_status()

        return step, session.close

    return make


async def async_session(open_session, plan: Plan, run: Run, advance, opening: asyncio.Semaphore) -> None:
    """One session on this event loop: warm up, then time each step; failures are counted."""
    counting, close = Counting(plan, run, advance), None
    try:
        async with opening:
            step, close = await open_session()
        for _ in range(plan.warmup):
            await step()
        counting.start()
        while counting.more():
            t0 = time.perf_counter_ns()
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                if not counting.failed(exc):
                    return
                continue
            counting.succeeded(t0)
    except Exception as exc:  # noqa: BLE001
        counting.failed(exc)
    finally:
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001
                pass


def rooms_ws_async(client_cls: type, url: str, message: str):
    async def open_session():
        env = client_cls(base_url=url)
        action = _action_class(client_cls)(message=message)
        await env.connect()
        await env.reset()
        return (lambda: env.step(action)), env.close

    return open_session


def http_async(url: str, message: str, client: list):
    async def open_session():
        if not client:
            client.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=60))
        body = {"action": {"message": message}}

        async def step():
            (await client[0].post(f"{url}/step", json=body)).raise_for_status()

        async def close():
            pass

        return step, close

    return open_session


def measure(name: str, transport: str, mode: str, sessions: int, plan: Plan, make_session, server: Optional[Server] = None) -> Run:
    """Run `sessions` sessions at once with a progress bar; return their combined figures."""
    run = Run(name, transport, mode, sessions, len(plan.message.encode()))
    total = None if plan.duration else plan.steps * sessions
    rss_before = server.rss_kb() if server else None
    with Progress(TextColumn(f"{name:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(name, total=total)

        def advance(n: int) -> None:
            progress.update(task, advance=n)

        started = time.perf_counter()
        if mode == "sync":
            opening = threading.Semaphore(OPENING_AT_ONCE)
            with ThreadPoolExecutor(max_workers=sessions) as pool:
                for future in [pool.submit(sync_session, make_session, plan, run, advance, opening) for _ in range(sessions)]:
                    future.result()
        else:

            async def main() -> None:
                opening = asyncio.Semaphore(OPENING_AT_ONCE)
                await asyncio.gather(*(async_session(make_session, plan, run, advance, opening) for _ in range(sessions)))

            asyncio.run(main())
        run.seconds = time.perf_counter() - started
    if rss_before is not None and sessions > 1:
        # Sessions are closed by now; RSS high-water mark is what they cost.
        run.server_rss_per_session_kb = max(0, (server.rss_kb("VmHWM") or 0) - rss_before) / sessions
    return run


def measure_side_by_side(contenders: list[tuple[str, Callable]], plan: Plan, rounds: int = SIDE_BY_SIDE_ROUNDS) -> list[Run]:
    """One sync session each, timed in alternating slices: a machine that drifts weighs on all alike."""
    runs = [Run(name, "ws", "sync", 1, len(plan.message.encode())) for name, _ in contenders]
    sessions: list[Optional[tuple[Callable, Callable]]] = []
    label = " · ".join(name for name, _ in contenders)
    with Progress(TextColumn(f"{label[:60]:<60}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(label, total=rounds * len(contenders))
        try:
            for (_, make), run in zip(contenders, runs):
                sessions.append(_open_warm(make, plan.warmup, run))
            for round_ in range(rounds):
                steps = plan.steps * (round_ + 1) // rounds - plan.steps * round_ // rounds
                slice_plan = Plan(steps, plan.duration / rounds if plan.duration else None, 0, plan.message)
                for index, (session, run) in enumerate(zip(sessions, runs)):
                    if session is not None:
                        counting = Counting(slice_plan, run, lambda n: None)
                        if not timed_sync_steps(session[0], counting):
                            _close_quietly(session[1])
                            sessions[index] = None
                        run.seconds += time.perf_counter() - counting.started
                    progress.update(task, advance=1)
        finally:
            for session in sessions:
                if session is not None:
                    _close_quietly(session[1])
    return runs


def _open_warm(make: Callable, warmup: int, run: Run) -> Optional[tuple[Callable, Callable]]:
    close = None
    try:
        step, close = make()
        for _ in range(warmup):
            step()
        return step, close
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        run.errors[_kind(exc)] += 1
        if close is not None:
            _close_quietly(close)
        return None


def _close_quietly(close: Callable) -> None:
    try:
        close()
    except Exception:  # noqa: BLE001
        pass


def session_factory(transport: str, mode: str, client_cls: type, url: str, message: str):
    if transport == "ws":
        return (rooms_ws_sync if mode == "sync" else rooms_ws_async)(client_cls, url, message)
    return http_sync(url, message) if mode == "sync" else http_async(url, message, [])


# --- reporting ----------------------------------------------------------------------------------


def print_results(runs: list[Run], ratios: list[tuple[str, str, float]], cold_starts: dict[str, float],
                  starts: int = 1) -> None:
    out = Console(width=None if sys.stdout.isatty() else 170)
    if ratios:
        table = Table(title="Ratios (same machine, same run)")
        for column in ("figure", "compared with", "ratio"):
            table.add_column(column, justify="right" if column == "ratio" else "left")
        for figure, against, value in ratios:
            table.add_row(figure, against, f"{value:.2f}×")
        out.print(table)
    table = Table(title="Runs (absolute figures are machine-specific)")
    for column in ("run", "transport", "mode", "sessions", "steps", "errors", "steps/s", "p50 µs", "p90 µs", "p99 µs", "max µs", "server KB/session"):
        table.add_column(column, justify="left" if column in ("run", "transport", "mode") else "right")
    for run in runs:
        s = run.summary()
        lat = s["latency_us"]
        table.add_row(
            run.name, run.transport, run.mode, str(run.sessions), str(run.steps), str(s["errors"]),
            f"{run.steps_per_s:,.0f}", *(_fmt(lat[k]) for k in ("p50", "p90", "p99", "max")),
            _fmt(s["server_rss_per_session_kb"]),
        )
    out.print(table)
    for run in runs:
        if run.errors:
            out.print(f"[yellow]{run.name}: errors {dict(run.errors)}[/yellow]")
    of_starts = f", median of {starts} starts" if starts > 1 else ""
    for name, seconds in cold_starts.items():
        out.print(f"cold start (process start → /health 200{of_starts}), {name}: {seconds:.2f} s")


def _fmt(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.0f}"


def write_plot(path: Path, runs: list[Run]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: `uv sync --extra plot` or `pip install 'openenv-rooms[plot]'`")
    sweep = sorted({r.sessions for r in runs if r.name.startswith("sweep")})
    fig, axes = plt.subplots(1, 2 if len(sweep) > 1 else 1, figsize=(12 if len(sweep) > 1 else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for run in runs:
        if run.latencies_ns:
            ax.hist([ns / 1000 for ns in run.latencies_ns], bins=80, alpha=0.5, label=run.name, histtype="stepfilled")
    ax.set(xlabel="step latency (µs)", ylabel="steps", title="Step latency", xscale="log")
    ax.legend(fontsize=7)
    if len(sweep) > 1:
        points = [(r.sessions, r.steps_per_s) for r in runs if r.name.startswith("sweep")]
        axes[0][1].plot(*zip(*sorted(points)), marker="o")
        axes[0][1].set(xlabel="concurrent sessions", ylabel="steps/s", title="Throughput vs sessions", xscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rooms-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="measure a running server (default: start a local one)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions (default 1)")
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per session (default 2000)")
    parser.add_argument("--duration", type=float, help="seconds per run instead of --steps")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps per session first (default 100)")
    parser.add_argument("--message-size", type=int, default=13, help="message size in bytes (default 13)")
    parser.add_argument("--transport", choices=("ws", "http"), default="ws")
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--floor", action="store_true", help="also measure a bare websockets echo; print ratios")
    parser.add_argument("--compare-template", action="store_true", help="also measure the pristine `openenv init` template")
    parser.add_argument("--sweep", help="comma-separated session counts, async WebSocket, e.g. 1,16,128,1000")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--plot", type=Path, help="write a latency histogram (and sweep chart) PNG; needs matplotlib")
    parser.add_argument("--serve-floor", nargs=2, metavar=("PORT", "RESPONSE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.sessions, args.steps) < 1 or args.message_size < 0 or (args.duration is not None and args.duration <= 0):
        parser.error("--sessions and --steps must be ≥ 1, --message-size ≥ 0, --duration > 0")
    if args.sweep:
        try:
            args.sweep = [int(n) for n in args.sweep.split(",")]
        except ValueError:
            parser.error(f"--sweep takes comma-separated integers, got {args.sweep!r}")
    return args


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `rooms-bench` console script."""
    args = parse_args(argv)
    if args.serve_floor:
        serve_floor(int(args.serve_floor[0]), args.serve_floor[1])
        return 0
    _raise_open_files_limit()
    from rooms.client import RoomsEnv

    message = "x" * args.message_size
    plan = Plan(args.steps, args.duration, args.warmup, message)
    runs: list[Run] = []
    ratios: list[tuple[str, str, float]] = []
    cold_starts: dict[str, float] = {}
    servers: list[Server] = []
    template: Optional[Template] = None
    try:
        largest = max([args.sessions, 16, *(args.sweep or [])])
        server = Server(args.url.rstrip("/")) if args.url else start_rooms(largest)
        servers.append(server)
        if server.start_seconds is not None:
            cold_starts["rooms"] = server.start_seconds
        sync_alone = (args.transport, args.mode, args.sessions) == ("ws", "sync", 1)
        if not (sync_alone and (args.floor or args.compare_template)):
            runs.append(measure(
                f"rooms {args.transport} {args.mode}", args.transport, args.mode, args.sessions, plan,
                session_factory(args.transport, args.mode, RoomsEnv, server.url, message), server,
            ))
        if args.compare_template:
            template = launch_template()
            servers.append(template.server)
        if args.floor or args.compare_template:
            ratios += compare_sync_side_by_side(plan, message, runs, servers, RoomsEnv, server, template)
        if template is not None:
            ratios += compare_with_template(plan, message, runs, RoomsEnv, server, template)
            package = template.directory / "rooms_template"
            cold_starts = measure_cold_starts({"rooms": lambda: start_rooms(largest),
                                               "template": lambda: start_template(package)})
            ratios.append(("rooms cold start", "template cold start", cold_starts["rooms"] / cold_starts["template"]))
        for sessions in args.sweep or []:
            runs.append(measure(f"sweep {sessions} sessions", "ws", "async", sessions, plan,
                                rooms_ws_async(RoomsEnv, server.url, message), server))
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        for server in servers:
            server.stop()
        if template is not None:
            shutil.rmtree(template.directory, ignore_errors=True)
    starts = COLD_START_ROUNDS if template is not None else 1
    print_results(runs, ratios, cold_starts, starts)
    if args.json:
        args.json.write_text(json.dumps({
            "schema": "rooms-bench/1",
            "target": args.url or "local rooms server",
            "runs": [r.summary() for r in runs],
            "ratios": [{"figure": f, "compared_with": c, "ratio": round(v, 3)} for f, c, v in ratios],
            "cold_start_s": {k: round(v, 3) for k, v in cold_starts.items()},
            "cold_start_starts": starts if cold_starts else 0,
        }, indent=2))
    if args.plot:
        write_plot(args.plot, runs)
    return 1 if any(r.errors for r in runs) else 0


def _observation_payload(url: str, message: str) -> dict:
    """The exact observation a step with `message` returns, for the floor to answer with."""
    payload = requests.post(f"{url}/step", json={"action": {"message": message}}, timeout=30).json()
    return payload


def compare_sync_side_by_side(plan, message, runs, servers, client_cls, ours: Server,
                              template: Optional[Template]) -> list[tuple[str, str, float]]:
    """Rooms, the floor and (optionally) the pristine template, one sync session each, side by side."""
    response = json.dumps({"type": "observation", "data": _observation_payload(ours.url, message)})
    floor = start_floor(response)
    servers.append(floor)
    contenders = [("rooms ws sync", rooms_ws_sync(client_cls, ours.url, message)),
                  ("floor (bare websockets echo)", floor_ws_sync(floor.url, message))]
    if template is not None:
        contenders.append(("template ws sync", rooms_ws_sync(template.client_cls, template.server.url, message)))
    measured = measure_side_by_side(contenders, plan)
    runs.extend(measured)
    rooms, floor_run = measured[0], measured[1]
    ratios = [("rooms sync p50 latency", "floor p50", rooms.percentile_us(50) / floor_run.percentile_us(50))]
    if template is not None:
        template_run = measured[2]
        ratios += [
            ("rooms sync steps/s", "template sync steps/s", rooms.steps_per_s / template_run.steps_per_s),
            ("template sync p50 latency", "floor p50", template_run.percentile_us(50) / floor_run.percentile_us(50)),
        ]
    return ratios


@dataclass
class Template:
    """The pristine template, generated into `directory` and served."""

    directory: Path
    server: Server
    client_cls: type


def launch_template() -> Template:
    directory = Path(tempfile.mkdtemp(prefix="rooms-bench-template-"))
    package = generate_template(directory)
    sys.path.insert(0, str(directory))
    from rooms_template.client import RoomsEnv as TemplateEnv  # noqa: E402

    return Template(directory, start_template(package), TemplateEnv)


def compare_with_template(plan, message, runs, client_cls, ours: Server, template: Template) -> list[tuple[str, str, float]]:
    """The pristine template and Rooms under load: async 16 sessions, and HTTP.

    Each scenario runs in two halves per server, template-rooms-rooms-template,
    so a machine that drifts steadily during the run weighs on both alike.
    """
    scenarios = {
        "async": lambda cls, url: ("ws", "async", 16, rooms_ws_async(cls, url, message)),
        "http": lambda cls, url: ("http", "sync", 1, http_sync(url, message)),
    }
    contenders = {"template": (template.client_cls, template.server.url), "rooms": (client_cls, ours.url)}
    duration = plan.duration / 2 if plan.duration else None
    halves = [Plan(plan.steps // 2, duration, plan.warmup, plan.message),
              Plan(plan.steps - plan.steps // 2, duration, plan.warmup, plan.message)]
    measured: dict[tuple[str, str], Run] = {}
    for scenario, build in scenarios.items():
        for who in ("template", "rooms", "rooms", "template"):
            transport, mode, sessions, make = build(*contenders[who])
            name = f"{who} {transport} {mode}" + (f" ×{sessions}" if sessions > 1 else "") + " (vs template)"
            run = measure(name, transport, mode, sessions, halves[(who, scenario) in measured], make)
            if (who, scenario) in measured:
                measured[who, scenario].absorb(run)
            else:
                measured[who, scenario] = run
    runs.extend(measured.values())
    return [
        ("rooms async ×16 steps/s", "template async ×16 steps/s", measured["rooms", "async"].steps_per_s / measured["template", "async"].steps_per_s),
        ("rooms http steps/s", "template http steps/s", measured["rooms", "http"].steps_per_s / measured["template", "http"].steps_per_s),
    ]


def measure_cold_starts(launchers: dict[str, Callable[[], Server]], rounds: int = COLD_START_ROUNDS) -> dict[str, float]:
    """Median seconds from process start to `/health` 200, each server started `rounds` times.

    The order alternates round by round (A B, B A, A B, ...), so neither always
    starts first, on the coldest file cache.
    """
    samples: dict[str, list[float]] = {name: [] for name in launchers}
    names = list(launchers)
    with Progress(TextColumn(f"{'cold starts':<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("cold starts", total=rounds * len(names))
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                server = launchers[name]()
                server.stop()
                samples[name].append(server.start_seconds)
                progress.update(task, advance=1)
    return {name: statistics.median(values) for name, values in samples.items()}


if __name__ == "__main__":
    sys.exit(main())
