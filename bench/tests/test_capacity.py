"""`rooms-bench capacity` on small numbers: failure kinds, the JSON it writes, replicas round-robin."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from rooms.kit.testing import InProcessServer, free_port
from rooms_bench import capacity
from rooms_bench.measure import percentile
from tests.conftest import SharedServers
from tests.readme_blocks import run_sweep_command

Bench = Callable[..., subprocess.CompletedProcess[str]]  # the `rooms_bench_main` fixture: `rooms-bench` in process
Sweep = Callable[..., dict[str, Any]]  # the `sweep` fixture


@pytest.fixture
def sweep(rooms_bench_main: Bench, tmp_path: Path) -> Sweep:
    """`sweep(ARGS...)`: `rooms-bench capacity ARGS --json ...` run in this process, its JSON report (the command
    must exit 0)."""

    def run(*args: str) -> dict[str, Any]:
        report = tmp_path / "capacity.json"
        result = rooms_bench_main("capacity", *args, "--json", str(report))
        assert result.returncode == 0, result.stdout + result.stderr
        document: dict[str, Any] = json.loads(report.read_text())
        return document

    return run


def by_size(document: dict[str, Any], target: str) -> dict[int, dict[str, Any]]:
    return {row["sessions"]: row for row in document["targets"][target]["sizes"]}


def test_sessions_past_the_limit_fail_as_capacity_reached(sweep: Sweep, shared_server: SharedServers) -> None:
    server = shared_server({"MAX_CONCURRENT_ENVS": "6"})
    # Every session holds its slot for the 2 s think time, so the 8 overlap.
    document = sweep("--url", server.url, "--sizes", "4,8", "--reps", "1", "--wait", "2")
    rows = by_size(document, "given")
    assert rows[4]["success_rate"] == 1.0 and rows[4]["failures"] == {}
    assert rows[8]["failures"] == {"CAPACITY_REACHED": 2}
    assert rows[8]["successes"] == 6 and rows[8]["success_rate"] == 0.75
    assert document["targets"]["given"]["max_batch_95"] == 4
    assert document["targets"]["given"]["max_batch_99"] == 4


def test_json_report_shape(sweep: Sweep, live_server: InProcessServer) -> None:
    document = sweep("--url", live_server.url, "--sizes", "2,4", "--reps", "2", "--wait", "0.2", "--settle", "0.2")
    assert document["method"] | {"cores": 0} == {
        "wait_s": 0.2,
        "reps": 2,
        "sizes": [2, 4],
        "connect_timeout_s": 10.0,
        "reply_timeout_s": 60.0,
        "cores": 0,
    }
    rows = by_size(document, "given")
    assert set(rows) == {2, 4}
    for sessions, row in rows.items():
        assert row["requests"] == 2 * sessions and row["successes"] == 2 * sessions
        for key in ("connect_p50_s", "reset_p50_s", "step_p50_s", "request_p99_s"):
            assert 0 < row[key] < 60
        # At the report's precision (4 decimals): 0.0264 + 0.2 is 0.22640000000000002 in floating point.
        assert round(row["request_with_wait_p99_s"] - row["request_p99_s"], 4) >= 0.2
        assert row["rss_per_session_kb"] is None, "memory is measured only for servers the sweep started"
        assert row["batch_per_core"] == sessions / document["method"]["cores"]
    assert document["ratios_to_floor"] == []


def test_replicas_share_sessions_round_robin(sweep: Sweep, new_server: Callable[..., InProcessServer]) -> None:
    replicas = [new_server({"MAX_CONCURRENT_ENVS": "4"}) for _ in range(2)]
    document = sweep("--url", replicas[0].url, "--url", replicas[1].url, "--sizes", "8", "--reps", "1", "--wait", "2")
    # One replica alone would refuse 4 of the 8.
    assert by_size(document, "given")[8]["failures"] == {}
    for replica in replicas:
        assert requests.get(f"{replica.url}/capacity", timeout=10).json()["max_sessions"] == 4


@pytest.mark.slow
def test_the_documented_sweep_starts_rooms_floor_and_template_side_by_side(tmp_path: Path) -> None:
    document = run_sweep_command("rooms-bench capacity", tmp_path).report
    assert set(document["targets"]) == {"rooms", "floor", "template"}
    for target in ("rooms", "floor", "template"):
        row = by_size(document, target)[4]
        assert row["success_rate"] == 1.0
        assert row["rss_per_session_kb"] is not None and row["server_cpu_s"] is not None
    ratios = {ratio["target"]: ratio for ratio in document["ratios_to_floor"]}
    assert set(ratios) == {"rooms", "template"}
    assert ratios["rooms"]["sessions"] == 4 and ratios["rooms"]["p99_over_floor"] > 0


# --- failure kinds, one request at a time ---------------------------------------------------------


def one(url: str, wait: float = 0.0) -> capacity.RequestResult:
    result: capacity.RequestResult = capacity.run_loop(capacity.one_request(url, wait))
    return result


def test_nobody_listening_is_refused() -> None:
    result = one(f"ws://127.0.0.1:{free_port()}/ws")
    assert (result.ok, result.failure) == (False, "refused")


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"


def test_unanswered_handshake_is_a_connect_timeout(silent_listener: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "CONNECT_TIMEOUT_S", 0.5)
    result = one(silent_listener)
    assert (result.ok, result.failure, result.connect_s) == (False, "connect timeout", None)


def serve_in_thread(handler: Callable[..., Any]) -> Iterator[str]:
    """A websockets server running `handler` in a background thread; yields its /ws address."""
    import threading

    from websockets.asyncio.server import serve

    port = free_port()
    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"ws://127.0.0.1:{port}/ws"
    stop.set()
    thread.join(10)


@pytest.fixture
def mute_server() -> Iterator[str]:
    async def never_answer(ws: Any) -> None:
        async for _ in ws:
            pass

    yield from serve_in_thread(never_answer)


@pytest.fixture
def hanging_up_server() -> Iterator[str]:
    async def hang_up(ws: Any) -> None:
        await ws.recv()
        await ws.close()

    yield from serve_in_thread(hang_up)


def test_unanswered_frame_is_a_reply_timeout(mute_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "REPLY_TIMEOUT_S", 0.5)
    result = one(mute_server)
    assert (result.ok, result.failure) == (False, "reply timeout")
    assert result.connect_s is not None and result.reset_s is None


def test_server_hanging_up_is_closed(hanging_up_server: str) -> None:
    result = one(hanging_up_server)
    assert (result.ok, result.failure) == (False, "closed")


def test_success_times_every_part(live_server: InProcessServer) -> None:
    result = one(live_server.ws_url, wait=0.3)
    assert result.ok and result.failure is None
    assert result.connect_s is not None and result.reset_s is not None and len(result.step_s) == 2
    assert result.total_s is not None and result.total_with_wait_s is not None
    assert result.total_with_wait_s - result.total_s >= 0.3


def test_the_wait_is_never_short_on_the_sweeps_loop() -> None:
    async def pauses() -> list[float]:
        slept = []
        for _ in range(50):
            time.sleep(0.002)  # work done in the same loop iteration, as parsing a reply is
            slept.append(await capacity.pause(0.003))
        return slept

    assert min(capacity.run_loop(pauses())) >= 0.003


def test_percentiles_and_max_batch() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([], 99) is None
    # One definition for every figure: statistics.quantiles' inclusive method (linear interpolation).
    assert (
        percentile([10.0, 20.0, 30.0, 40.0], 90)
        == statistics.quantiles([10, 20, 30, 40], n=100, method="inclusive")[89]
    )
    assert (percentile([3.0, 1.0, 2.0], 0), percentile([3.0, 1.0, 2.0], 100), percentile([7.0], 99)) == (1.0, 3.0, 7.0)
    rows = [
        capacity.summarize("t", n, [[capacity.RequestResult(ok=i < ok) for i in range(n)]], 2, [], 0.0, None)
        for n, ok in ((10, 10), (20, 19), (40, 39), (80, 60))
    ]
    assert capacity.max_batch(rows, 0.95) == 40
    assert capacity.max_batch(rows, 0.99) == 10
    assert capacity.max_batch(rows[3:], 0.95) is None


def test_bad_sizes_are_refused_with_the_option_name(
    rooms_bench_main: Bench, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        rooms_bench_main("capacity", "--sizes", "4,lots")
    assert exited.value.code == 2
    assert "--sizes takes comma-separated integers, got '4,lots'" in capsys.readouterr().err
