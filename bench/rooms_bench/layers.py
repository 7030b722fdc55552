"""`rooms-bench layers`: what each of the app's own layers costs a step, server side.

Each build of the app below leaves one layer out (a bench-only build: the layers are
Starlette middleware, filtered from `app.user_middleware` before the app starts, or, for
the tools, the environment served without its `@tool` methods). Every build is served
by the `server` command's own uvicorn settings, and stepped by bare WebSocket frames
(no client library), one session each, in alternating slices beside the floor: the
difference between a build's p50 and the full app's is what the missing layer costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from rooms.kit.testing import LiveServer, free_port, start_server
from rooms_bench.measure import Plan, console, measure_side_by_side
from rooms_bench.servers import observation_frame, start_floor
from rooms_bench.sessions import websocket_sync

HELP = "the step latency each layer of the app adds, server side (bench-only builds, each without one)"
WITHOUT_SETTING = "ROOMS_BENCH_WITHOUT"
# A build's name, and the layers it leaves out.
BUILDS: dict[str, tuple[str, ...]] = {
    "full app": (),
    "without access control": ("access",),
    "without client limits": ("limits",),
    "without session doors": ("sessions",),
    "without the standard MCP door": ("standard-mcp",),
    "without MCP tools": ("tools",),
    "OpenEnv's routes alone": ("access", "limits", "sessions", "standard-mcp", "tools"),
}


def build_app(without: set[str]) -> Any:
    """The app of server/app.py, less the layers named in `without`."""
    from rooms import RoomsAction, RoomsObservation
    from rooms.kit.access import AccessControl
    from rooms.kit.application import create_app
    from rooms.kit.limits import ClientLimits
    from rooms.kit.sessions import SessionDoors
    from rooms.kit.standard_mcp import StandardMcpDoor
    from rooms.server.rooms_environment import RoomsEnvironment

    class WithoutTools(RoomsEnvironment):
        async def echo(self, message: str) -> RoomsObservation:  # the same method, not declared a tool
            return await self.step_async(RoomsAction(message=message))

    env = WithoutTools if "tools" in without else RoomsEnvironment
    app = create_app(env, RoomsAction, RoomsObservation)
    middleware = {
        "access": AccessControl,
        "limits": ClientLimits,
        "sessions": SessionDoors,
        "standard-mcp": StandardMcpDoor,
    }
    left_out: set[object] = {middleware[name] for name in without if name in middleware}
    app.user_middleware = [m for m in app.user_middleware if m.cls not in left_out]
    return app


def __getattr__(name: str) -> Any:
    """`app`: the build that `ROOMS_BENCH_WITHOUT` (comma-separated layers) names."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return build_app({layer for layer in os.environ.get(WITHOUT_SETTING, "").split(",") if layer})


def start_build(log_dir: Path, without: tuple[str, ...]) -> LiveServer:
    port = free_port()
    command = [sys.executable, "-m", __name__, str(port)]
    return start_server(log_dir, command, env={WITHOUT_SETTING: ",".join(without)}, port=port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per build (default 3000)")


def run(args: argparse.Namespace) -> int:
    message = "Hello, World!"
    plan = Plan(args.steps, None, 200, message)
    with tempfile.TemporaryDirectory() as log_dir:
        servers = {name: start_build(Path(log_dir), without) for name, without in BUILDS.items()}
        try:
            floor = start_floor(Path(log_dir), observation_frame(servers["full app"].url, message))
            contenders = [(name, websocket_sync(f"{server.url}/ws", message)) for name, server in servers.items()]
            contenders.append(("floor (bare websockets echo)", websocket_sync(floor.url, message)))
            runs = measure_side_by_side(contenders, plan)
            floor.stop()
        finally:
            for server in servers.values():
                server.stop()
    full = runs[0].percentile_us(50) or 0.0
    table = Table(title="one step, server side: bare WebSocket frames, one session, alternating slices")
    for column in ("build", "p50 µs", "steps/s", "p50 minus full app, µs"):
        table.add_column(column, justify="left" if column == "build" else "right")
    for run_ in runs:
        p50 = run_.percentile_us(50) or 0.0
        table.add_row(run_.name, f"{p50:,.0f}", f"{run_.steps_per_s:,.0f}", f"{p50 - full:+,.0f}")
    console.print(table)
    return 0


def main() -> None:
    """Serve the build `ROOMS_BENCH_WITHOUT` names on the port given, as the `server` command would."""
    from rooms.kit.command import parse_args, serve
    from rooms.kit.settings import Settings

    settings = Settings.from_env()
    serve(settings, parse_args(settings, ["--host", "127.0.0.1", "--port", sys.argv[1]]), app=f"{__name__}:app")


if __name__ == "__main__":
    main()


__all__ = ["BUILDS", "HELP", "add_arguments", "build_app", "run"]
