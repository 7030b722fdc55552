"""Comparisons run in one go, so that their ratios hold: Rooms against the floor and the template."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rooms_bench.measure import Plan, Run, measure, measure_side_by_side, progress_bar
from rooms_bench.sessions import EnvClasses, SyncSessions, env_client_async, env_client_sync, http_sync

# Servers whose cold starts are compared are each started this many times, in alternating order.
COLD_START_ROUNDS = 5

T = TypeVar("T")


@dataclass(frozen=True)
class Ratio:
    figure: str
    compared_with: str
    value: float


@dataclass(frozen=True)
class StartupFigure:
    """A process's median start (cold start, or the client's import) and memory, and their ratios to the template's."""

    name: str
    seconds: float
    rss_kb: float
    seconds_vs_template: float
    rss_vs_template: float


@dataclass(frozen=True)
class Startup:
    """Servers' cold starts and idle memory, clients' imports: each the median of `rounds` fresh processes."""

    servers: list[StartupFigure]
    clients: list[StartupFigure]
    rounds: int
    settle_s: float


@dataclass(frozen=True)
class Contender:
    """An env server to compare, and the classes of its client."""

    classes: EnvClasses
    url: str


def p50_ratio(run: Run, against: Run) -> float:
    mine, theirs = run.percentile_us(50), against.percentile_us(50)
    return mine / theirs if mine and theirs else float("nan")


def steps_ratio(run: Run, against: Run) -> float:
    return run.steps_per_s / against.steps_per_s if against.steps_per_s else float("nan")


def compare_sync_side_by_side(
    plan: Plan, rooms: Contender, floor: SyncSessions, template: Contender | None
) -> tuple[list[Run], list[Ratio]]:
    """Rooms, the floor and (optionally) the template, one sync session each, side by side."""
    contenders = [
        ("rooms ws sync", env_client_sync(rooms.classes, rooms.url, plan.message)),
        ("floor (bare websockets echo)", floor),
    ]
    if template is not None:
        contenders.append(("template ws sync", env_client_sync(template.classes, template.url, plan.message)))
    runs = measure_side_by_side(contenders, plan)
    rooms_run, floor_run = runs[0], runs[1]
    ratios = [Ratio("rooms sync p50 latency", "floor p50", p50_ratio(rooms_run, floor_run))]
    if template is not None:
        template_run = runs[2]
        ratios += [
            Ratio("rooms sync steps/s", "template sync steps/s", steps_ratio(rooms_run, template_run)),
            Ratio("template sync p50 latency", "floor p50", p50_ratio(template_run, floor_run)),
        ]
    return runs, ratios


def compare_with_template(plan: Plan, rooms: Contender, template: Contender) -> tuple[list[Run], list[Ratio]]:
    """The template and Rooms under load: async 16 sessions, and HTTP.

    Each scenario runs in two halves per server, template-rooms-rooms-template,
    so a machine that drifts steadily during the run weighs on both alike.
    """
    contenders = {"template": template, "rooms": rooms}
    measured: dict[tuple[str, str], Run] = {}
    for scenario, count in (("async", 16), ("http", 1)):
        halves = list(plan.halves())
        for who in ("template", "rooms", "rooms", "template"):
            server = contenders[who]
            if scenario == "async":
                name = f"{who} ws async ×{count} (vs template)"
                run = measure(
                    name,
                    count,
                    halves[(who, scenario) in measured],
                    env_client_async(server.classes, server.url, plan.message),
                )
            else:
                name = f"{who} http sync (vs template)"
                run = measure(name, count, halves[(who, scenario) in measured], http_sync(server.url, plan.message))
            if (who, scenario) in measured:
                measured[who, scenario].absorb(run)
            else:
                measured[who, scenario] = run
    ratios = [
        Ratio(
            "rooms async ×16 steps/s",
            "template async ×16 steps/s",
            steps_ratio(measured["rooms", "async"], measured["template", "async"]),
        ),
        Ratio(
            "rooms http steps/s",
            "template http steps/s",
            steps_ratio(measured["rooms", "http"], measured["template", "http"]),
        ),
    ]
    return list(measured.values()), ratios


def measure_cold_starts(launchers: dict[str, Callable[[], float]], rounds: int = COLD_START_ROUNDS) -> dict[str, float]:
    """Median seconds from process start to `/health` 200; each launcher starts and stops a server."""
    samples = alternate(launchers, rounds, "cold starts")
    return {name: statistics.median(values) for name, values in samples.items()}


def alternate(launchers: dict[str, Callable[[], T]], rounds: int, label: str) -> dict[str, list[T]]:
    """Each launcher's results over `rounds` rounds, run in alternating order (A B, B A, A B, ...).

    Neither always runs first, on the coldest file cache, nor always last.
    """
    samples: dict[str, list[T]] = {name: [] for name in launchers}
    names = list(launchers)
    with progress_bar(f"{label:<28}") as progress:
        task = progress.add_task(label, total=rounds * len(names))
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                samples[name].append(launchers[name]())
                progress.update(task, advance=1)
    return samples
