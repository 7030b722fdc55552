"""`rooms-bench layers`: what each of the app's own layers costs a step.

Each build of the app below leaves one layer out (a bench-only build: the layers are Starlette
middleware, filtered from `app.user_middleware` before the app starts; the tools are left out by
serving the environment without its `@tool` methods, the metrics by `ROOMS_METRICS=false`). Every
build is driven in this process through its ASGI interface, with no server and no network between
(what uvicorn and the socket cost is the same for every build, and measured by `rooms-bench
--floor`): one WebSocket session on `/ws`, reset, then step frames, one at a time. The builds take
turns, round after round, each round starting with another build, the garbage collector off
while one is timed (as `timeit` does); each figure is the median over rounds of the CPU time per step (of the
thread that drives the app: the time the machine gives other processes does not count), so the
difference between a build's figure and the full app's is what the missing layer costs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
from time import thread_time
from typing import Any

from rich.console import Console
from rich.table import Table

from rooms_bench.sessions import step_frame

HELP = "the CPU time each layer of the app adds to a step (bench-only builds, each without one, in process)"
# A build's name, and the layers it leaves out.
BUILDS: dict[str, tuple[str, ...]] = {
    "full app": (),
    "without access control": ("access",),
    "without client limits": ("limits",),
    "without session doors": ("sessions",),
    "without the standard MCP door": ("standard-mcp",),
    "without MCP tools": ("tools",),
    "without metrics": ("metrics",),
    "OpenEnv's routes alone": ("access", "limits", "sessions", "standard-mcp", "tools", "metrics"),
}
RESET_FRAME = '{"type": "reset", "data": {}}'
WEBSOCKET_SCOPE: dict[str, Any] = {
    "type": "websocket",
    "asgi": {"version": "3.0"},
    "scheme": "ws",
    "path": "/ws",
    "raw_path": b"/ws",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "subprotocols": [],
    "extensions": {"websocket.http.response": {}},
}


def build_app(without: tuple[str, ...]) -> Any:
    """The app of server/app.py, less the layers named in `without`."""
    from rooms import RoomsAction, RoomsObservation
    from rooms.kit.access import AccessControl
    from rooms.kit.application import create_app
    from rooms.kit.limits import ClientLimits
    from rooms.kit.sessions import SessionDoors
    from rooms.kit.settings import Settings
    from rooms.kit.standard_mcp import StandardMcpDoor
    from rooms.server.rooms_environment import RoomsEnvironment

    class WithoutTools(RoomsEnvironment):
        async def echo(self, message: str) -> RoomsObservation:  # the same method, not declared a tool
            return await self.step_async(RoomsAction(message=message))

    env = WithoutTools if "tools" in without else RoomsEnvironment
    settings = Settings.from_env({**os.environ, **({"ROOMS_METRICS": "false"} if "metrics" in without else {})})
    app = create_app(env, RoomsAction, RoomsObservation, settings=settings)
    middleware = {
        "access": AccessControl,
        "limits": ClientLimits,
        "sessions": SessionDoors,
        "standard-mcp": StandardMcpDoor,
    }
    left_out: set[object] = {middleware[name] for name in without if name in middleware}
    app.user_middleware = [m for m in app.user_middleware if m.cls not in left_out]
    return app


async def seconds_per_step(app: Any, steps: int, frame: str) -> float:
    """One `/ws` session of `app`, driven through ASGI: reset, then `steps` step frames; seconds per step."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def exchange(message: dict[str, Any]) -> dict[str, Any]:
        inbox.put_nowait(message)
        return await replies.get()

    session = asyncio.create_task(app({**WEBSOCKET_SCOPE, "state": {}}, inbox.get, replies.put))
    accepted = await exchange({"type": "websocket.connect"})
    if accepted["type"] != "websocket.accept":
        raise RuntimeError(f"the session was refused: {accepted}")
    await exchange({"type": "websocket.receive", "text": RESET_FRAME})
    step = {"type": "websocket.receive", "text": frame}
    started = thread_time()
    for _ in range(steps):
        reply = await exchange(step)
    elapsed = thread_time() - started
    if '"observation"' not in reply.get("text", ""):
        raise RuntimeError(f"a step was not answered with an observation: {reply}")
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await session
    return elapsed / steps


async def measure_builds(steps: int, rounds: int, frame: str) -> dict[str, list[float]]:
    """Each build's seconds per step, one figure per round, the builds taking turns."""
    apps = {name: build_app(without) for name, without in BUILDS.items()}
    figures: dict[str, list[float]] = {name: [] for name in apps}
    async with contextlib_stack(apps.values()):
        for app in apps.values():  # untimed: imports, first-call caches
            await seconds_per_step(app, 200, frame)
        names = list(apps)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # each round starts elsewhere
                gc.collect()
                gc.disable()  # as timeit does: a collection lands on whichever build is running
                try:
                    figures[name].append(await seconds_per_step(apps[name], steps, frame))
                finally:
                    gc.enable()
    return figures


def contextlib_stack(apps: Any) -> Any:
    """Every app's lifespan (its reaper, its MCP transport), entered for the whole measurement."""
    from contextlib import AsyncExitStack, asynccontextmanager

    @asynccontextmanager
    async def lifespans() -> Any:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            yield

    return lifespans()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per build and round (default 3000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, the builds taking turns (default 7)")


def run(args: argparse.Namespace) -> int:
    figures = asyncio.run(measure_builds(args.steps, args.rounds, step_frame("Hello, World!")))
    medians = {name: statistics.median(values) * 1e6 for name, values in figures.items()}
    full = medians["full app"]
    table = Table(title=f"a /ws step through the app, in process (median of {args.rounds} rounds)")
    for column in ("build", "µs per step", "minus the full app's"):
        table.add_column(column, justify="left" if column == "build" else "right")
    for name, value in medians.items():
        table.add_row(name, f"{value:,.1f}", f"{value - full:+,.1f}")
    Console(width=None if sys.stdout.isatty() else 120).print(table)  # the figures: stdout, whole
    return 0


__all__ = ["BUILDS", "HELP", "add_arguments", "build_app", "run"]
