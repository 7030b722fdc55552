"""`rooms-bench metrics`: what the Prometheus metrics (`GET /metrics`, kit/metrics.py) cost a step.

Two servers side by side, one with metrics (the default) and one with `ROOMS_METRICS=false`, each
`server --workers N` (with more than one worker every count is written to a file, prometheus-client's
multiprocess mode). Each round runs one `/ws` session's steps on each, sequential, in alternating
order; the figures are the medians over the rounds: steps per second and the p50 of a step's latency,
and their ratio with metrics to without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from websockets.sync.client import connect

from rooms.kit.testing import LiveServer, console_script, free_port, start_server
from rooms_bench.mcp_calls import eventually_started

HELP = "steps/s and p50 with the Prometheus metrics on and off (ROOMS_METRICS), side by side"
SETTINGS = {"on": "true", "off": "false"}
WARM_UP_STEPS = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each on both servers (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="workers of each server (default 2)")


def start(log_dir: Path, workers: int, metrics: str) -> LiveServer:
    port = free_port()
    command = [console_script("server"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    server = start_server(log_dir, command, env={"ROOMS_METRICS": metrics}, port=port, timeout=120)
    eventually_started(server, workers)
    return server


def step_latencies(server: LiveServer, steps: int) -> tuple[float, list[float]]:
    """Steps per second over `steps` sequential steps of one session, and each step's seconds."""
    frame = json.dumps({"type": "step", "data": {"message": "Hello, World!"}})
    with connect(server.ws_url, max_size=None) as session:
        session.send(json.dumps({"type": "reset", "data": {}}))
        session.recv()
        for _ in range(WARM_UP_STEPS):
            session.send(frame)
            session.recv()
        latencies = []
        began = time.perf_counter()
        for _ in range(steps):
            started = time.perf_counter()
            session.send(frame)
            session.recv()
            latencies.append(time.perf_counter() - started)
        return steps / (time.perf_counter() - began), latencies


def run(args: argparse.Namespace) -> int:
    rates: dict[str, list[float]] = {label: [] for label in SETTINGS}
    p50s: dict[str, list[float]] = {label: [] for label in SETTINGS}
    with tempfile.TemporaryDirectory() as log_dir:
        servers = {label: start(Path(log_dir), args.workers, value) for label, value in SETTINGS.items()}
        try:
            for round_ in range(args.rounds):
                order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
                for label in order:
                    rate, latencies = step_latencies(servers[label], args.steps)
                    rates[label].append(rate)
                    p50s[label].append(statistics.median(latencies))
        finally:
            for server in servers.values():
                server.stop()
    print_results(args, {label: statistics.median(values) for label, values in rates.items()}, p50s)
    return 0


def print_results(args: argparse.Namespace, rates: dict[str, float], p50s: dict[str, list[float]]) -> None:
    p50 = {label: statistics.median(values) * 1e6 for label, values in p50s.items()}
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    table = Table(title=f"/ws steps, one session, sequential, server --workers {args.workers} (median of rounds)")
    for column in ("metrics", "steps/s", "p50 µs"):
        table.add_column(column, justify="left" if column == "metrics" else "right")
    for label in SETTINGS:
        table.add_row(label, f"{rates[label]:,.0f}", f"{p50[label]:,.1f}")
    out = Console(width=None if sys.stdout.isatty() else 120)  # the figures: stdout, whole
    out.print(table)
    out.print(
        f"metrics on / off, {workers}: steps/s {rates['on'] / rates['off']:.3f}×, p50 {p50['on'] / p50['off']:.3f}×"
    )


__all__ = ["HELP", "add_arguments", "run"]
