"""`rooms-bench mcp`: what a standard MCP tool call costs on one worker and on two.

With `server --workers 2` a client's HTTP connections reach either worker; a request for a
session another worker owns is handed to that worker over its Unix socket (kit/workers.py).
This measures `echo` calls of one MCP session (the official Python `mcp` SDK), sequential,
against a server of one worker and one of two, side by side, twice each in alternating order:

- with one kept-alive connection, as the SDK has it (the session's requests all reach the worker
  that owns it: no hand-over);
- with a new connection per request (as behind a load balancer without affinity): with two
  workers about half the calls are handed over, so the difference from one worker, doubled,
  is the cost of a hand-over.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from rich.table import Table

from rooms.kit.testing import LiveServer, console_script, free_port, start_server
from rooms_bench.measure import console, percentile

HELP = "standard MCP tool calls on one worker and on two (the hand-over between workers), side by side"
CONNECTIONS = {"kept alive": None, "new per request": httpx.Limits(max_keepalive_connections=0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=500, help="timed echo calls per run (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating (default 2)")


async def call_latencies(url: str, calls: int, limits: httpx.Limits | None) -> list[float]:
    """Seconds of each of `calls` echo calls of one MCP session (after 20 untimed ones)."""
    timeout = httpx.Timeout(30, read=300)
    client = httpx.AsyncClient(limits=limits, timeout=timeout) if limits else httpx.AsyncClient(timeout=timeout)
    async with (
        client,
        streamable_http_client(f"{url}/mcp", http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for _ in range(20):
            await session.call_tool("echo", {"message": "warm"})
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            result = await session.call_tool("echo", {"message": "Hello, World!"})
            latencies.append(time.perf_counter() - started)
            if result.isError:
                raise RuntimeError(f"echo failed: {result.content}")
        return latencies


def start(log_dir: Path, workers: int) -> LiveServer:
    """The `server` command with `workers` workers, once every one has started."""
    port = free_port()
    command = [console_script("server"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    server = start_server(log_dir, command, port=port, timeout=120)
    eventually_started(server, workers)
    return server


def eventually_started(server: LiveServer, workers: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count("Application startup complete.") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not start:\n{server.log()}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    results: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        servers = {workers: start(Path(log_dir), workers) for workers in (1, 2)}
        try:
            for _ in range(args.rounds):
                for label, limits in CONNECTIONS.items():
                    for workers, server in servers.items():
                        latencies = asyncio.run(call_latencies(server.url, args.calls, limits))
                        results.setdefault((workers, label), []).extend(latencies)
        finally:
            for server in servers.values():
                server.stop()
    print_results(results)
    return 0


def p50_us(latencies: list[float]) -> float:
    found = percentile(latencies, 50)
    assert found is not None, "no calls measured"
    return found * 1e6


def print_results(results: dict[tuple[int, str], list[float]]) -> None:
    table = Table(title="standard MCP echo calls, one session, sequential")
    for column in ("connections", "1 worker p50 µs", "2 workers p50 µs", "× 1 worker"):
        table.add_column(column, justify="right" if "µs" in column or "×" in column else "left")
    for label in CONNECTIONS:
        one, two = p50_us(results[(1, label)]), p50_us(results[(2, label)])
        table.add_row(label, f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}×")
    console.print(table)
    fresh_one, fresh_two = p50_us(results[(1, "new per request")]), p50_us(results[(2, "new per request")])
    console.print(f"a hand-over between workers: about {2 * (fresh_two - fresh_one):,.0f} µs per call")


__all__ = ["HELP", "add_arguments", "run"]
