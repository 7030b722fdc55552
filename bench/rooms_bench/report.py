"""The results: rich tables on stdout, a JSON report, a PNG plot."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rooms_bench.compare import Ratio, Startup, StartupFigure
from rooms_bench.measure import Run

RUN_COLUMNS = ("run", "transport", "mode", "sessions", "steps", "errors", "steps/s",
               "p50 µs", "p90 µs", "p99 µs", "max µs", "server KB/session")  # fmt: skip
LEFT_ALIGNED = ("run", "transport", "mode")


@dataclass
class Results:
    """Everything one benchmark invocation measured."""

    target: str
    runs: list[Run] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    cold_starts: dict[str, float] = field(default_factory=dict)
    starts: int = 1  # each cold start figure is the median of this many starts
    startup: Startup | None = None

    @property
    def failed(self) -> bool:
        return any(run.errors for run in self.runs)


def print_results(results: Results) -> None:
    out = Console(width=None if sys.stdout.isatty() else 170)
    if results.startup is not None:
        out.print(startup_table(results.startup))
    if results.ratios:
        out.print(ratio_table(results.ratios))
    if results.runs:
        out.print(run_table(results.runs))
    for run in results.runs:
        if run.errors:
            out.print(f"[yellow]{run.name}: errors {dict(run.errors)}[/yellow]")
    of_starts = f", median of {results.starts} starts"
    for name, seconds in results.cold_starts.items():
        out.print(f"cold start (process start → /health 200{of_starts}), {name}: {seconds:.2f} s")


def ratio_table(ratios: list[Ratio]) -> Table:
    table = Table(title="Ratios (same machine, same run)")
    table.add_column("figure")
    table.add_column("compared with")
    table.add_column("ratio", justify="right")
    for ratio in ratios:
        table.add_row(ratio.figure, ratio.compared_with, f"{ratio.value:.2f}×")
    return table


def startup_table(startup: Startup) -> Table:
    table = Table(
        title=f"Start-up (fresh processes, the median of {startup.rounds} each; same machine, same run)",
        caption=(
            f"server: process start → /health 200, then RSS of its one worker after {startup.settle_s:g} s idle; "
            "client: the import in a fresh interpreter, then RSS of that process"
        ),
    )
    for column in ("process", "seconds", "× template", "RSS MiB", "× template"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for figures in (startup.servers, startup.clients):
        for item in figures:
            table.add_row(item.name, f"{item.seconds:.2f}", f"{item.seconds_vs_template:.2f}×",
                          f"{item.rss_kb / 1024:.0f}", f"{item.rss_vs_template:.2f}×")  # fmt: skip
        table.add_section()
    return table


def run_table(runs: list[Run]) -> Table:
    table = Table(title="Runs (absolute figures are machine-specific)")
    for column in RUN_COLUMNS:
        table.add_column(column, justify="left" if column in LEFT_ALIGNED else "right")
    for run in runs:
        summary = run.summary()
        latency = summary["latency_us"]
        table.add_row(
            run.name, run.transport, run.mode, str(run.sessions), str(run.steps), str(summary["errors"]),
            f"{run.steps_per_s:,.0f}", *(figure(latency[k]) for k in ("p50", "p90", "p99", "max")),
            figure(summary["server_rss_per_session_kb"]),
        )  # fmt: skip
    return table


def figure(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def write_json(path: Path, results: Results) -> None:
    report: dict[str, Any] = {
        "schema": "rooms-bench/1",
        "target": results.target,
        "runs": [run.summary() for run in results.runs],
        "ratios": [
            {"figure": r.figure, "compared_with": r.compared_with, "ratio": round(r.value, 3)} for r in results.ratios
        ],
        "cold_start_s": {name: round(seconds, 3) for name, seconds in results.cold_starts.items()},
        "cold_start_starts": results.starts if results.cold_starts else 0,
    }
    if results.startup is not None:
        report["startup"] = startup_report(results.startup)
    path.write_text(json.dumps(report, indent=2))


def startup_report(startup: Startup) -> dict[str, Any]:
    def figures(items: list[StartupFigure], seconds: str, rss: str) -> list[dict[str, Any]]:
        return [
            {"name": item.name, f"{seconds}_s": round(item.seconds, 3), f"{rss}_kb": round(item.rss_kb),
             f"{seconds}_vs_template": round(item.seconds_vs_template, 3),
             f"{rss}_vs_template": round(item.rss_vs_template, 3)}
            for item in items
        ]  # fmt: skip

    return {
        "rounds": startup.rounds,
        "settle_s": startup.settle_s,
        "servers": figures(startup.servers, "cold_start", "idle_rss"),
        "clients": figures(startup.clients, "import", "rss"),
    }


def write_plot(path: Path, runs: list[Run]) -> None:
    """A latency histogram of every run and, with a sweep, throughput against sessions."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        hint = "`uv sync --all-packages --extra plot` in the checkout, or `pip install 'rooms-bench[plot]'`"
        raise SystemExit(f"--plot needs matplotlib: {hint}") from None
    sweep = sorted((run.sessions, run.steps_per_s) for run in runs if run.name.startswith("sweep"))
    with_sweep = len(sweep) > 1
    fig, axes = plt.subplots(1, 2 if with_sweep else 1, figsize=(12 if with_sweep else 7, 4.5), squeeze=False)
    histogram = axes[0][0]
    for run in runs:
        if run.latencies_ns:
            latencies_us = [ns / 1000 for ns in run.latencies_ns]
            histogram.hist(latencies_us, bins=80, alpha=0.5, label=run.name, histtype="stepfilled")
    histogram.set(xlabel="step latency (µs)", ylabel="steps", title="Step latency", xscale="log")
    histogram.legend(fontsize=7)
    if with_sweep:
        sessions, steps_per_s = zip(*sweep, strict=True)
        axes[0][1].plot(sessions, steps_per_s, marker="o")
        axes[0][1].set(xlabel="concurrent sessions", ylabel="steps/s", title="Throughput vs sessions", xscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
