"""Soak a local Rooms server: many steps, many sessions, sessions coming and going.

    uv run python scripts/soak.py [--steps 1000000] [--sessions 64] [--churn-every 2000]

Starts a server, runs `--sessions` concurrent WebSocket sessions (asyncio) until
`--steps` steps are done; each session closes and a new one opens every
`--churn-every` steps. Prints the server's RSS at the start, after the first
round of sessions (warm), and at the end, the error count, and the verdict
against the goal: RSS growth from warm to end under 10 %, zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rooms import RoomsAction, RoomsEnv
from rooms.kit.testing import LiveServer, start_server


async def soak(
    url: str, total_steps: int, sessions: int, churn_every: int, on_warm: Callable[[], None]
) -> tuple[int, Counter[str]]:
    done = 0
    errors: Counter[str] = Counter()
    warm = asyncio.Event()
    messages = [RoomsAction(message="soak " * n) for n in range(32)]

    async def worker(index: int) -> None:
        nonlocal done
        while done < total_steps:
            try:
                async with RoomsEnv(base_url=url) as env:
                    await env.reset(episode_id=f"soak-{index}")
                    for i in range(churn_every):
                        if done >= total_steps:
                            break
                        result = await env.step(messages[(index + i) % len(messages)])
                        if result.observation.metadata["step"] != i + 1:
                            errors["wrong step count"] += 1
                        done += 1
                        if done >= sessions * churn_every and not warm.is_set():
                            warm.set()
                            on_warm()
            except Exception as exc:  # counted; the soak goes on with a new session
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.1)

    progress = asyncio.create_task(report_progress(lambda: done, total_steps))
    await asyncio.gather(*(worker(i) for i in range(sessions)))
    progress.cancel()
    return done, errors


async def report_progress(done: Callable[[], int], total: int) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(10)
        elapsed = time.monotonic() - started
        print(f"  {done():>9,} / {total:,} steps, {done() / elapsed:,.0f} steps/s", flush=True)


def resident_kb(server: LiveServer) -> int:
    """The server's resident memory in KiB; the soak stops if the server has exited."""
    kb = server.rss_kb()
    if kb is None:
        raise SystemExit(f"the server has exited; its log:\n{server.log()}")
    return kb


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--churn-every", type=int, default=2000)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="rooms-soak-"))
    server = start_server(log_dir, env={"MAX_CONCURRENT_ENVS": str(max(64, args.sessions))})
    print(f"server log: {server.log_path}", flush=True)
    rss = {"start": resident_kb(server)}
    print(f"server RSS at start: {rss['start'] / 1024:.1f} MiB", flush=True)

    def on_warm() -> None:
        rss["warm"] = resident_kb(server)
        print(
            f"server RSS warm (after {args.sessions * args.churn_every:,} steps): {rss['warm'] / 1024:.1f} MiB",
            flush=True,
        )

    started = time.monotonic()
    try:
        done, errors = asyncio.run(soak(server.url, args.steps, args.sessions, args.churn_every, on_warm))
        rss["end"] = resident_kb(server)
    finally:
        server.stop()
    seconds = time.monotonic() - started
    sessions_opened = args.sessions * -(-args.steps // (args.sessions * args.churn_every))
    warm = rss.get("warm", rss["start"])  # fewer steps than one round of sessions: no warm point
    growth = (rss["end"] - warm) / warm * 100
    print(
        f"steps: {done:,} in {seconds:.0f} s ({done / seconds:,.0f} steps/s), {args.sessions} concurrent sessions, "
        f"about {sessions_opened:,} sessions opened and closed"
    )
    print(
        f"server RSS at end: {rss['end'] / 1024:.1f} MiB; growth from warm: {growth:+.1f} %; "
        f"from start: {(rss['end'] - rss['start']) / rss['start'] * 100:+.1f} %"
    )
    print(f"errors: {sum(errors.values())} {dict(errors) if errors else ''}")
    ok = growth < 10 and not errors and done >= args.steps
    print("goal (growth < 10 %, zero errors):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
