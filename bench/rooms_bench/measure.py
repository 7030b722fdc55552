"""Timing loops: sessions stepping concurrently (threads or one event loop), and side by side."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rooms.kit.testing import LiveServer
from rooms_bench.sessions import AsyncSessions, SyncSession, SyncSessions

console = Console(stderr=True)
# Sessions open this many at a time: a thousand simultaneous handshakes would time out
# against one server process long before any of them stepped.
OPENING_AT_ONCE = 64
# Single sync sessions compared with each other run in this many alternating slices.
SIDE_BY_SIDE_ROUNDS = 20
# A session stops stepping after this many failures of one kind.
FAILURES_BEFORE_GIVING_UP = 100

Advance = Callable[[int], None]


def percentile(values: Sequence[float], q: int) -> float | None:
    """The `q`-th percentile of `values` (0 the lowest, 100 the highest), None for no values: every
    figure of rooms-bench uses this one. It is `statistics.quantiles(values, n=100, method="inclusive")`,
    linear interpolation between the closest ranks (numpy's default, and Excel's PERCENTILE.INC)."""
    if not values:
        return None
    if q <= 0 or q >= 100 or len(values) == 1:
        return float(min(values) if q <= 0 else max(values) if q >= 100 else values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Run:
    """One measured scenario: what ran, how long each step took, what failed."""

    name: str
    transport: str
    mode: str
    sessions: int
    message_size: int
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    server_rss_per_session_kb: float | None = None

    @property
    def steps(self) -> int:
        return len(self.latencies_ns)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def percentile_us(self, q: int) -> float | None:
        found = percentile(self.latencies_ns, q)
        return None if found is None else found / 1000

    def absorb(self, other: Run) -> None:
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
            "latency_us": {f"p{q}": rounded(self.percentile_us(q)) for q in (50, 90, 99)}
            | {"max": rounded(self.percentile_us(100))},
            "server_rss_per_session_kb": rounded(self.server_rss_per_session_kb),
        }


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Plan:
    """How long each session steps: `steps` steps, or `duration` seconds; `warmup` untimed steps first."""

    steps: int
    duration: float | None
    warmup: int
    message: str

    def keep_going(self, done: int, started: float) -> bool:
        if self.duration is not None:
            return time.perf_counter() - started < self.duration
        return done < self.steps

    def halves(self) -> tuple[Plan, Plan]:
        duration = self.duration / 2 if self.duration else None
        first = self.steps // 2
        return (
            Plan(first, duration, self.warmup, self.message),
            Plan(self.steps - first, duration, self.warmup, self.message),
        )


def error_kind(exc: BaseException) -> str:
    """The error code a server answered with, else the exception's type name."""
    text = str(exc)
    for code in ("CAPACITY_REACHED", "VALIDATION_ERROR"):
        if code in text:
            return code
    debug(f"{type(exc).__name__}: {text[:200]}")
    return type(exc).__name__


def debug(text: str) -> None:
    if os.environ.get("ROOMS_BENCH_DEBUG"):
        console.print(text)


class Counting:
    """Times steps and counts failures for one session; shared by the sync and async loops."""

    def __init__(self, plan: Plan, run: Run, advance: Advance) -> None:
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
        kind = error_kind(exc)
        self.run.errors[kind] += 1
        return self.run.errors[kind] <= FAILURES_BEFORE_GIVING_UP


def close_quietly(close: Callable[[], object]) -> None:
    """Close a session whose figures are taken; a failure to close is not a failed step."""
    try:
        close()
    except Exception as exc:
        debug(f"closing a session failed: {type(exc).__name__}: {exc}")


def timed_sync_steps(step: Callable[[], object], counting: Counting) -> bool:
    """Time steps until the plan says stop; False if the session failed too often to go on."""
    counting.start()
    while counting.more():
        t0 = time.perf_counter_ns()
        try:
            step()
        except Exception as exc:  # counted and reported, never raised
            if not counting.failed(exc):
                return False
            continue
        counting.succeeded(t0)
    return True


def sync_session(sessions: SyncSessions, plan: Plan, run: Run, advance: Advance, opening: threading.Semaphore) -> None:
    """One session in this thread: warm up, then time each step; failures are counted."""
    counting = Counting(plan, run, advance)
    session: SyncSession | None = None
    try:
        with opening:
            session = sessions.open()
        for _ in range(plan.warmup):
            session.step()
        timed_sync_steps(session.step, counting)
    except Exception as exc:  # the session could not open or warm up: counted
        counting.failed(exc)
    finally:
        if session is not None:
            close_quietly(session.close)


async def async_session(
    sessions: AsyncSessions, plan: Plan, run: Run, advance: Advance, opening: asyncio.Semaphore
) -> None:
    """One session on this event loop: warm up, then time each step; failures are counted."""
    counting = Counting(plan, run, advance)
    session = None
    try:
        async with opening:
            session = await sessions.open()
        for _ in range(plan.warmup):
            await session.step()
        counting.start()
        while counting.more():
            t0 = time.perf_counter_ns()
            try:
                await session.step()
            except Exception as exc:  # counted and reported, never raised
                if not counting.failed(exc):
                    return
                continue
            counting.succeeded(t0)
    except Exception as exc:  # the session could not open or warm up: counted
        counting.failed(exc)
    finally:
        if session is not None:
            try:
                await session.close()
            except Exception as exc:
                debug(f"closing a session failed: {type(exc).__name__}: {exc}")


def progress_bar(label: str) -> Progress:
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def measure(
    name: str, count: int, plan: Plan, sessions: SyncSessions | AsyncSessions, server: LiveServer | None = None
) -> Run:
    """Run `count` sessions at once with a progress bar; return their combined figures.

    With `server` (a process on this machine), also the server's peak memory per session.
    """
    run = Run(name, sessions.transport, sessions.mode, count, len(plan.message.encode()))
    rss_before = server.rss_kb() if server else None
    with progress_bar(f"{name:<28}") as progress:
        task = progress.add_task(name, total=None if plan.duration else plan.steps * count)

        def advance(n: int) -> None:
            progress.update(task, advance=n)

        started = time.perf_counter()
        if isinstance(sessions, SyncSessions):
            run_in_threads(sessions, count, plan, run, advance)
        else:
            asyncio.run(run_on_event_loop(sessions, count, plan, run, advance))
        run.seconds = time.perf_counter() - started
    if server is not None and rss_before is not None and count > 1:
        # Sessions are closed by now; the resident high-water mark is what they cost.
        run.server_rss_per_session_kb = max(0, (server.rss_kb("VmHWM") or 0) - rss_before) / count
    return run


def run_in_threads(sessions: SyncSessions, count: int, plan: Plan, run: Run, advance: Advance) -> None:
    opening = threading.Semaphore(OPENING_AT_ONCE)
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(sync_session, sessions, plan, run, advance, opening) for _ in range(count)]
        for future in futures:
            future.result()


async def run_on_event_loop(sessions: AsyncSessions, count: int, plan: Plan, run: Run, advance: Advance) -> None:
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    await asyncio.gather(*(async_session(sessions, plan, run, advance, opening) for _ in range(count)))


def measure_side_by_side(
    contenders: list[tuple[str, SyncSessions]], plan: Plan, rounds: int = SIDE_BY_SIDE_ROUNDS
) -> list[Run]:
    """One sync session each, timed in alternating slices: a machine that drifts weighs on all alike."""
    runs = [Run(name, sessions.transport, "sync", 1, len(plan.message.encode())) for name, sessions in contenders]
    label = " · ".join(name for name, _ in contenders)
    open_sessions: list[SyncSession | None] = []
    with progress_bar(f"{label[:60]:<60}") as progress:
        task = progress.add_task(label, total=rounds * len(contenders))
        try:
            for (_, sessions), run in zip(contenders, runs, strict=True):
                open_sessions.append(open_warm(sessions, plan.warmup, run))
            for round_ in range(rounds):
                steps = plan.steps * (round_ + 1) // rounds - plan.steps * round_ // rounds
                slice_plan = Plan(steps, plan.duration / rounds if plan.duration else None, 0, plan.message)
                for index, run in enumerate(runs):
                    session = open_sessions[index]
                    if session is not None:
                        counting = Counting(slice_plan, run, lambda n: None)
                        if not timed_sync_steps(session.step, counting):
                            close_quietly(session.close)
                            open_sessions[index] = None
                        run.seconds += time.perf_counter() - counting.started
                    progress.update(task, advance=1)
        finally:
            for session in open_sessions:
                if session is not None:
                    close_quietly(session.close)
    return runs


def open_warm(sessions: SyncSessions, warmup: int, run: Run) -> SyncSession | None:
    """A session, opened and warmed up; None (the failure counted) if it could not be."""
    session = None
    try:
        session = sessions.open()
        for _ in range(warmup):
            session.step()
        return session
    except Exception as exc:  # counted and reported, never raised
        run.errors[error_kind(exc)] += 1
        if session is not None:
            close_quietly(session.close)
        return None
