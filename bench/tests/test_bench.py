"""rooms-bench end to end on small numbers: it runs, reports, writes JSON and a plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port

BENCH = str(ROOT / ".venv" / "bin" / "rooms-bench")


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([BENCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def load(path) -> dict:
    report = json.loads(path.read_text())
    assert report["schema"] == "rooms-bench/1"
    for run in report["runs"]:
        assert set(run) >= {"name", "transport", "mode", "sessions", "steps", "errors", "steps_per_s", "latency_us"}
        assert set(run["latency_us"]) == {"p50", "p90", "p99", "max"}
    return report


def test_starts_its_own_server_with_floor_and_template(tmp_path):
    result = bench("--steps", "60", "--warmup", "5", "--compare-template", "--sweep", "1,4",
                   "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = load(tmp_path / "r.json")
    names = [run["name"] for run in report["runs"]]
    assert names[:3] == ["rooms ws sync", "floor (bare websockets echo)", "template ws sync"]
    assert {"rooms ws async ×16 (vs template)", "template http sync (vs template)", "sweep 4 sessions"} <= set(names)
    for run in report["runs"]:
        assert run["errors"] == 0 and run["steps"] == 60 * run["sessions"] and run["latency_us"]["p50"] > 0
    sweep4 = next(r for r in report["runs"] if r["name"] == "sweep 4 sessions")
    assert sweep4["server_rss_per_session_kb"] is not None
    figures = {r["figure"] + " / " + r["compared_with"] for r in report["ratios"]}
    assert {"rooms sync steps/s / template sync steps/s", "rooms sync p50 latency / floor p50",
            "rooms async ×16 steps/s / template async ×16 steps/s", "rooms cold start / template cold start"} <= figures
    assert set(report["cold_start_s"]) == {"rooms", "template"} and report["cold_start_starts"] == 5
    assert "Ratios (same machine, same run)" in result.stdout and "steps/s" in result.stdout
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("transport, mode", [("ws", "async"), ("http", "sync"), ("http", "async")])
def test_transports_and_modes_against_a_running_server(live_server, tmp_path, transport, mode):
    out = tmp_path / "r.json"
    result = bench("--url", live_server.url, "--transport", transport, "--mode", mode, "--sessions", "3",
                   "--steps", "40", "--warmup", "2", "--message-size", "100", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = load(out)["runs"]
    assert (run["transport"], run["mode"], run["sessions"], run["steps"], run["message_size"]) == (transport, mode, 3, 120, 100)


def test_duration_instead_of_steps(live_server, tmp_path):
    result = bench("--url", live_server.url, "--duration", "0.5", "--warmup", "0", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    [run] = load(tmp_path / "r.json")["runs"]
    assert run["steps"] > 0 and 0.5 <= run["seconds"] < 5


def test_server_down_is_counted_and_reported_without_a_traceback(tmp_path):
    result = bench("--url", f"http://127.0.0.1:{free_port()}", "--steps", "5", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    [run] = load(tmp_path / "r.json")["runs"]
    assert run["error_kinds"] == {"ConnectionError": 1} and run["steps"] == 0
    assert "errors {'ConnectionError': 1}" in result.stdout


def test_capacity_errors_are_counted(server_factory, tmp_path):
    server = server_factory(env={"MAX_CONCURRENT_ENVS": "2"})
    result = bench("--url", server.url, "--sessions", "4", "--mode", "async", "--steps", "20", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [run] = load(tmp_path / "r.json")["runs"]
    assert run["error_kinds"] == {"CAPACITY_REACHED": 2}
    assert run["steps"] == 40


def test_plot_without_matplotlib_says_how_to_get_it(live_server, tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from rooms_bench.cli import main\n"
        f"sys.exit(main(['--url', '{live_server.url}', '--steps', '5', '--plot', '{tmp_path / 'p.png'}']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--plot needs matplotlib: `uv sync --extra plot`" in result.stderr


@pytest.mark.parametrize("args", [["--sessions", "0"], ["--sweep", "1,x"], ["--transport", "udp"]])
def test_bad_arguments_are_refused_clearly(args):
    result = bench(*args)
    assert result.returncode == 2
    assert "usage: rooms-bench" in result.stderr


def test_side_by_side_runs_every_step_asked_for_and_counts_failures():
    from rooms_bench.cli import Plan, measure_side_by_side

    calls = []

    def steady():
        return (lambda: calls.append("steady")), (lambda: calls.append("closed"))

    def failing():
        warm = iter(range(3))

        def step():
            if next(warm, None) is None:
                raise ConnectionError("server went away")

        return step, (lambda: calls.append("failing closed"))

    def unreachable():
        raise ConnectionError("Failed to connect")

    steady_run, failing_run, unreachable_run = measure_side_by_side(
        [("steady", steady), ("failing", failing), ("unreachable", unreachable)], Plan(47, None, 3, "x"), rounds=20)
    assert steady_run.steps == 47 and calls.count("steady") == 50 and calls[-1] == "closed"
    # A session that keeps failing is given up after 100 failures, as in the other loops.
    assert failing_run.steps == 0 and failing_run.errors == {"ConnectionError": 101}
    assert calls.count("failing closed") == 1
    assert unreachable_run.steps == 0 and unreachable_run.errors == {"ConnectionError": 1}


def test_cold_starts_alternate_and_report_the_median():
    from rooms_bench.cli import Server, measure_cold_starts

    order, seconds = [], {"a": iter([5.0, 1.0, 2.0]), "b": iter([3.0, 9.0, 4.0])}

    def launcher(name):
        def launch():
            order.append(name)
            return Server("http://127.0.0.1:1", start_seconds=next(seconds[name]))
        return launch

    medians = measure_cold_starts({"a": launcher("a"), "b": launcher("b")}, rounds=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert medians == {"a": 2.0, "b": 4.0}
