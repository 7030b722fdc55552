"""rooms-bench end to end on small numbers: it runs, reports, writes JSON and a plot."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rooms.kit.testing import InProcessServer, free_port
from rooms_bench import cli
from rooms_bench.compare import measure_cold_starts
from rooms_bench.measure import Plan, measure_side_by_side
from rooms_bench.sessions import SyncSession, SyncSessions
from tests.conftest import SharedServers
from tests.readme_blocks import run_sweep_command

# The `bench` fixture (the `rooms-bench` command, run as a user does) and `rooms_bench_main` (in this process).
Bench = Callable[..., subprocess.CompletedProcess[str]]
Report = Callable[[Path], dict[str, Any]]  # the `load_report` fixture


@pytest.mark.slow
def test_the_documented_comparison_starts_its_own_server_floor_and_template(
    load_report: Report, tmp_path: Path
) -> None:
    png = tmp_path / "r.png"
    run = run_sweep_command("rooms-bench --compare-template --sweep", tmp_path, "--plot", str(png))
    report = load_report(tmp_path / "report.json")
    names = [run["name"] for run in report["runs"]]
    assert names[:3] == ["rooms ws sync", "floor (bare websockets echo)", "template ws sync"]
    assert {"rooms ws async ×16 (vs template)", "template http sync (vs template)", "sweep 2 sessions"} <= set(names)
    for measured in report["runs"]:
        assert measured["errors"] == 0 and measured["steps"] > 0 and measured["latency_us"]["p50"] > 0
    sweep2 = next(r for r in report["runs"] if r["name"] == "sweep 2 sessions")
    assert sweep2["server_rss_per_session_kb"] is not None
    figures = {r["figure"] + " / " + r["compared_with"] for r in report["ratios"]}
    assert {
        "rooms sync steps/s / template sync steps/s",
        "rooms sync p50 latency / floor p50",
        "rooms async ×16 steps/s / template async ×16 steps/s",
        "rooms cold start / template cold start",
    } <= figures
    assert set(report["cold_start_s"]) == {"rooms", "template"} and report["cold_start_starts"] == 1
    assert "Ratios (same machine, same run)" in run.stdout and "steps/s" in run.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_documented_startup_reports_servers_and_clients_beside_the_template(
    load_report: Report, tmp_path: Path
) -> None:
    run = run_sweep_command("rooms-bench startup", tmp_path)
    startup = load_report(tmp_path / "report.json")["startup"]
    assert startup["rounds"] == 1
    servers = {server["name"]: server for server in startup["servers"]}
    assert list(servers) == ["rooms server, web interface off", "rooms server, web interface on",
                             "template server (openenv init)"]  # fmt: skip
    for server in servers.values():
        assert server["cold_start_s"] > 0 and server["idle_rss_kb"] > 0
    template = servers["template server (openenv init)"]
    assert (template["cold_start_vs_template"], template["idle_rss_vs_template"]) == (1.0, 1.0)
    clients = {client["name"]: client for client in startup["clients"]}
    assert list(clients) == ["rooms client: from rooms import RoomsEnv", "rooms client, Gradio not importable",
                             "template client: from rooms_template import RoomsTemplateEnv"]  # fmt: skip
    for client in clients.values():
        assert client["import_s"] > 0 and client["rss_kb"] > 0 and client["rss_vs_template"] > 0
    assert "Start-up (fresh processes, the median of 1 each" in run.stdout and "× template" in run.stdout


@pytest.mark.parametrize(("transport", "mode"), [("ws", "async"), ("http", "sync"), ("http", "async")])
def test_transports_and_modes_against_a_running_server(
    rooms_bench_main: Bench, load_report: Report, live_server: InProcessServer, tmp_path: Path,
    transport: str, mode: str,
) -> None:  # fmt: skip
    out = tmp_path / "r.json"
    result = rooms_bench_main("--url", live_server.url, "--transport", transport, "--mode", mode,
                              "--sessions", "3", "--steps", "40", "--warmup", "2", "--message-size", "100",
                              "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = load_report(out)["runs"]
    assert (run["transport"], run["mode"], run["sessions"], run["steps"], run["message_size"]) == (
        transport, mode, 3, 120, 100)  # fmt: skip


def test_duration_instead_of_steps(
    rooms_bench_main: Bench, load_report: Report, live_server: InProcessServer, tmp_path: Path
) -> None:
    result = rooms_bench_main("--url", live_server.url, "--duration", "0.5", "--warmup", "0",
                              "--json", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    [run] = load_report(tmp_path / "r.json")["runs"]
    assert run["steps"] > 0 and run["seconds"] >= 0.5


def test_server_down_is_counted_and_reported_without_a_traceback(
    rooms_bench_main: Bench, load_report: Report, tmp_path: Path
) -> None:
    # Returning its status at all is the command's exit without a traceback: nothing was raised.
    result = rooms_bench_main("--url", f"http://127.0.0.1:{free_port()}", "--steps", "5",
                              "--json", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    [run] = load_report(tmp_path / "r.json")["runs"]
    assert run["error_kinds"] == {"ConnectionError": 1} and run["steps"] == 0
    assert "errors {'ConnectionError': 1}" in result.stdout


def refusal(exited: pytest.ExceptionInfo[SystemExit]) -> str:
    """The line a `SystemExit` raised by the command is: a text code, which Python writes to stderr, exiting 1,
    without a traceback."""
    code = exited.value.code
    assert isinstance(code, str), f"not a one-line refusal: {code!r}"
    return code


def test_floor_against_a_server_that_is_down_says_so_without_a_traceback(
    rooms_bench_main: Bench, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        rooms_bench_main("--url", f"http://127.0.0.1:{free_port()}", "--floor", "--steps", "5")
    said = refusal(exited)
    assert said.startswith("rooms-bench: ") and "Traceback" not in said + capsys.readouterr().err


def test_capacity_errors_are_counted(
    rooms_bench_main: Bench, load_report: Report, shared_server: SharedServers, tmp_path: Path
) -> None:
    server = shared_server({"MAX_CONCURRENT_ENVS": "2"})
    result = rooms_bench_main("--url", server.url, "--sessions", "4", "--mode", "async", "--steps", "20",
                              "--json", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [run] = load_report(tmp_path / "r.json")["runs"]
    assert run["error_kinds"] == {"CAPACITY_REACHED": 2}
    assert run["steps"] == 40


def test_plot_without_matplotlib_says_how_to_get_it(
    rooms_bench_main: Bench, live_server: InProcessServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(SystemExit) as exited:
        rooms_bench_main("--url", live_server.url, "--steps", "5", "--plot", str(tmp_path / "p.png"))
    assert "--plot needs matplotlib: `uv sync --all-packages --extra plot`" in refusal(exited)


@pytest.mark.parametrize("args", [["--sessions", "0"], ["--sweep", "1,x"], ["--transport", "udp"]])
def test_bad_arguments_are_refused_clearly(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    assert "usage: rooms-bench" in capsys.readouterr().err


def test_help_describes_the_options(bench: Bench) -> None:
    """The installed console script, run as a user runs it (the other tests call its `main()` in this process)."""
    result = bench("--help")
    assert result.returncode == 0
    for option in ("--url", "--floor", "--compare-template", "--sweep", "--json", "--plot", "startup"):
        assert option in result.stdout


def test_a_subcommand_runs_in_place_of_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    monkeypatch.setitem(cli.SUBCOMMANDS, "probe", cli.Subcommand("a probe", add_arguments, run))
    assert cli.main(["probe", "--rounds", "3"]) == 7
    assert seen[0].rounds == 3
    assert cli.parse_args(["--steps", "5"]).run is cli.run_measure


def test_side_by_side_runs_every_step_asked_for_and_counts_failures() -> None:
    calls: list[str] = []

    def steady() -> SyncSession:
        return SyncSession(step=lambda: calls.append("steady"), close=lambda: calls.append("closed"))

    def failing() -> SyncSession:
        warm = iter(range(3))

        def step() -> None:
            if next(warm, None) is None:
                raise ConnectionError("server went away")

        return SyncSession(step=step, close=lambda: calls.append("failing closed"))

    def unreachable() -> SyncSession:
        raise ConnectionError("Failed to connect")

    contenders = [("steady", SyncSessions("ws", steady)), ("failing", SyncSessions("ws", failing)),
                  ("unreachable", SyncSessions("ws", unreachable))]  # fmt: skip
    steady_run, failing_run, unreachable_run = measure_side_by_side(contenders, Plan(47, None, 3, "x"), rounds=20)
    assert steady_run.steps == 47 and calls.count("steady") == 50 and calls[-1] == "closed"
    # A session that keeps failing is given up after 100 failures, as in the other loops.
    assert failing_run.steps == 0 and failing_run.errors == {"ConnectionError": 101}
    assert calls.count("failing closed") == 1
    assert unreachable_run.steps == 0 and unreachable_run.errors == {"ConnectionError": 1}


def test_cold_starts_alternate_and_report_the_median() -> None:
    order: list[str] = []
    seconds = {"a": iter([5.0, 1.0, 2.0]), "b": iter([3.0, 9.0, 4.0])}

    def launcher(name: str) -> Callable[[], float]:
        def launch() -> float:
            order.append(name)
            return next(seconds[name])

        return launch

    medians = measure_cold_starts({"a": launcher("a"), "b": launcher("b")}, rounds=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert medians == {"a": 2.0, "b": 4.0}
