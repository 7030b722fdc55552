"""`rooms-bench bound`: how near the floor a step can get while OpenEnv's handler answers it.

Served as the `server` command serves Rooms (`rooms.kit.command.serve`: uvicorn, uvloop,
httptools, websockets' Sans-I/O protocol, no compression), one process each:

- the floor: a bare `websockets` echo answering every frame with Rooms' observation frame;
- uvicorn and a bare Starlette WebSocket answering the same frame (no OpenEnv);
- OpenEnv's routes alone (the bench-only build of `rooms-bench layers`, without any of Rooms' layers);
- the Rooms `server` command.

Each OpenEnv server is stepped twice: with bare frames (send a step frame, read the reply) and
with the typed client, `RoomsEnv(...).sync()`, which builds each `StepResult`. One session each,
timed in alternating slices; each p50 is given as a ratio to the floor's.

    python -m rooms_bench.bound serve openenv-alone|starlette-echo PORT

serves one of the two bench-only apps (what the subcommand starts; the echo's reply comes from
`ROOMS_BENCH_REPLY`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rooms.kit.testing import LiveServer, free_port, start_server
from rooms_bench.measure import Plan, measure_side_by_side
from rooms_bench.servers import observation_frame, rooms_classes, start_floor, start_rooms
from rooms_bench.sessions import SyncSessions, env_client_sync, websocket_sync

HELP = "how near the floor a step gets with OpenEnv's handler alone and with Rooms, bare frames and typed client"
REPLY_SETTING = "ROOMS_BENCH_REPLY"  # the frame the Starlette echo answers with
SERVED_APPS = ("openenv-alone", "starlette-echo")
MODULE = "rooms_bench.bound"  # this module, by the name uvicorn imports it with


def openenv_alone() -> Any:
    """OpenEnv's routes serving Rooms' environment, none of Rooms' layers (`rooms-bench layers`' build)."""
    from rooms_bench.layers import BUILDS, build_app

    return build_app(BUILDS["OpenEnv's routes alone"])


def starlette_echo() -> Any:
    """uvicorn's and Starlette's share of a step: a WebSocket route answering each frame with one reply."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    reply = os.environ[REPLY_SETTING]

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            await websocket.receive_text()
            await websocket.send_text(reply)

    async def health(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[WebSocketRoute("/ws", echo), Route("/health", health)])


def __getattr__(name: str) -> Any:
    """The apps `serve` names by import string, built in the served process, without Gradio (as the `server`
    command builds Rooms')."""
    builders = {"openenv_alone": openenv_alone, "starlette_echo": starlette_echo}
    if name not in builders:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]
    return builders[name]()


def serve(kind: str, port: int) -> None:
    """Serve `kind` with the `server` command's uvicorn options."""
    from rooms.kit.command import serve as serve_as_the_server_command
    from rooms.kit.settings import Settings

    options = argparse.Namespace(host="127.0.0.1", port=port, workers=1, reload=False)
    serve_as_the_server_command(Settings.from_env(), options, app=f"{MODULE}:{kind.replace('-', '_')}")


def start_served(log_dir: Path, kind: str, reply: str) -> LiveServer:
    port = free_port()
    command = [sys.executable, "-m", MODULE, "serve", kind, str(port)]
    return start_server(log_dir, command, env={REPLY_SETTING: reply}, port=port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per contender (default 3000)")
    parser.add_argument("--rounds", type=int, default=20, help="alternating slices (default 20)")


def run(args: argparse.Namespace) -> int:
    plan = Plan(args.steps, None, 200, "Hello, World!")
    with ExitStack() as cleanup:
        work_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rooms-bench-bound-")))

        def started(server: LiveServer) -> str:
            cleanup.callback(server.stop)
            return server.url

        rooms = started(start_rooms(work_dir, 1))
        reply = observation_frame(rooms, plan.message)
        floor = started(start_floor(work_dir, reply))
        echo = started(start_served(work_dir, "starlette-echo", reply))
        openenv = started(start_served(work_dir, "openenv-alone", reply))
        classes = rooms_classes()
        contenders: list[tuple[str, SyncSessions]] = [
            ("floor: bare websockets echo", websocket_sync(floor, plan.message)),
            ("uvicorn + Starlette echo, bare frames", websocket_sync(f"{echo}/ws", plan.message)),
            ("OpenEnv's routes alone, bare frames", websocket_sync(f"{openenv}/ws", plan.message)),
            ("OpenEnv's routes alone, RoomsEnv.sync()", env_client_sync(classes, openenv, plan.message)),
            ("Rooms server, bare frames", websocket_sync(f"{rooms}/ws", plan.message)),
            ("Rooms server, RoomsEnv.sync()", env_client_sync(classes, rooms, plan.message)),
        ]
        runs = measure_side_by_side(contenders, plan, args.rounds)
    floor_p50 = runs[0].percentile_us(50) or float("nan")
    table = Table(title=f"one sync session each, {args.steps:,} steps in {args.rounds} alternating slices")
    for column in ("served", "p50 µs", "× floor", "errors"):
        table.add_column(column, justify="left" if column == "served" else "right")
    for result in runs:
        p50 = result.percentile_us(50) or float("nan")
        table.add_row(result.name, f"{p50:,.0f}", f"{p50 / floor_p50:.2f}×", str(sum(result.errors.values())))
    Console(width=None if sys.stdout.isatty() else 120).print(table)  # the figures: stdout, whole
    return 1 if any(result.errors for result in runs) else 0


def main(argv: list[str]) -> int:
    command, kind, port = argv
    if command != "serve" or kind not in SERVED_APPS:
        raise SystemExit(f"usage: python -m {MODULE} serve {'|'.join(SERVED_APPS)} PORT")
    serve(kind, int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["HELP", "add_arguments", "run"]
