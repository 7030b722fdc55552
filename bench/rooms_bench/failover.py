"""`rooms-bench failover`: rollouts over several Rooms replicas, with one of them failed on purpose.

Each of `--sessions` threads is a rollout: it runs episodes of `--episode-steps` steps, one at a
time, each reset with an id of its own, on a session opened round-robin over the replicas'
addresses (`--url A --url B`, or the host-mode ports of a Swarm service's running tasks with
`--swarm-service`); a replica that refuses (gone, or at capacity) is skipped. Every step's
observation says its step number (`metadata["step"]`): it must go 1, 2, 3 ... within an episode,
and the episode's `state()` must still carry its id when it ends; an episode where either fails, or
a call that succeeds after its session was lost, continued on another session: a *switched
episode*, which must never happen. A rollout whose replica dies gets `SessionLost`: it is counted,
the same client's next `step()` must raise `SessionLost` again, and the rollout recovers by
`reset()`: on the same address first (through a load balancer that is another replica), else on a
new session on the next live replica. With `--kill-at S` one replica's container is killed
(`docker kill`) S seconds in; the report gives the errors, which replica they came from, the
switched episodes, how many rollouts recovered and how long that took, and how long Swarm took to
bring the replica count back. The exit status is 0 only if every error was a `SessionLost` from the
killed replica, no episode switched, every rollout that lost its session recovered, and (with a
kill) the replicas came back. Replicas that want an access token get the one in `--token-file`;
one that refuses it ends the load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openenv.core.client_types import StepResult
from openenv.core.env_server.types import State
from rich.console import Console
from rich.table import Table

from rooms import RoomsAction, RoomsEnv, RoomsObservation, SessionLost, SyncClient

HELP = (__doc__ or "").split("\n\n")[0].split(": ", 1)[1]

console = Console(stderr=True)
CAPACITY_REACHED = "CAPACITY_REACHED"
# How a rollout learns that its replica is gone: the call in flight, or the next one, raises `SessionLost`
# (a `ConnectionError`). A new session that cannot connect raises `ConnectionError`.
SESSION_GONE = (SessionLost,)
REPLICA_GONE = (ConnectionError,)
# How often the Swarm service's tasks are listed again while the load runs.
DISCOVERY_INTERVAL_S = 0.5

Client = SyncClient[RoomsAction, RoomsObservation, State]


class NoReplicaAvailable(ConnectionError):
    """Every address refused a new session."""


class RoundRobin:
    """Replica addresses handed out in turn to new sessions; the list may be replaced while in use."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = [url.rstrip("/") for url in urls]
        self._turn = 0
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        with self._lock:
            return list(self._urls)

    def replace(self, urls: Sequence[str]) -> None:
        with self._lock:
            self._urls = [url.rstrip("/") for url in urls]

    def candidates(self) -> list[str]:
        """Every address once, starting with the next one's turn."""
        with self._lock:
            urls, start = self._urls, self._turn
            self._turn += 1
        if not urls:
            return []
        start %= len(urls)
        return urls[start:] + urls[:start]


def close_quietly(env: Client) -> None:
    """Close a session whose replica may be gone: then there is nothing left to close."""
    with contextlib.suppress(*REPLICA_GONE, OSError):
        env.close()


def refused_for_capacity(error: RuntimeError, env: Client) -> bool:
    """Whether `error` is the server at capacity (then `env` is closed); any other server error is raised."""
    close_quietly(env)
    return CAPACITY_REACHED in str(error)


def open_session(
    pool: RoundRobin, episode_id: str, headers: dict[str, str] | None = None
) -> tuple[Client, str, StepResult[RoomsObservation]]:
    """A new session, reset to episode `episode_id`, on the first replica in turn that takes it."""
    refusals: list[str] = []
    for url in pool.candidates():
        env = RoomsEnv(base_url=url, headers=headers).sync()
        try:
            return env, url, env.reset(episode_id=episode_id)
        except REPLICA_GONE as error:
            close_quietly(env)
            refusals.append(f"{url}: {error}")
        except RuntimeError as error:
            if not refused_for_capacity(error, env):
                raise
            refusals.append(f"{url}: {CAPACITY_REACHED}")
    raise NoReplicaAvailable("no replica took a new session: " + "; ".join(refusals or ["no address"]))


@dataclass
class Until:
    """The end of the load: its deadline, or earlier when told."""

    deadline: float
    stop: threading.Event = field(default_factory=threading.Event)

    def done(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline


@dataclass
class Tally:
    """What every rollout saw, merged under one lock."""

    steps_by_url: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    episodes: int = 0
    switched: list[str] = field(default_factory=list)
    refused_opens: int = 0
    lost: int = 0
    recoveries_s: list[float] = field(default_factory=list)
    recovered_on_same_address: int = 0
    unrecovered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def switch(self, why: str) -> None:
        with self.lock:
            self.switched.append(why)


@dataclass
class Rollout:
    """One rollout's episodes, one at a time: where its session is, and what its episode has seen."""

    number: int
    pool: RoundRobin
    tally: Tally
    headers: dict[str, str] | None
    env: Client | None = None
    url: str = ""
    episode: int = 0
    episode_id: str = ""
    steps: int = 0  # steps of the current episode answered so far
    lost_at: float | None = None  # when its session was lost, until a new episode has stepped

    def next_episode_id(self) -> str:
        self.episode += 1
        return f"rollout-{self.number}-episode-{self.episode}"

    def begin(self, episode_id: str, url: str, ready: StepResult[RoomsObservation]) -> None:
        """Episode `episode_id` was reset on `url`: its observation must be a fresh episode's."""
        self.url, self.episode_id, self.steps = url, episode_id, 0
        if ready.observation.metadata.get("step") != 0:
            self.tally.switch(f"{episode_id}: reset answered step {ready.observation.metadata.get('step')}, not 0")

    def check_step(self, result: StepResult[RoomsObservation]) -> None:
        """A step must be the episode's next one: 1, 2, 3 ..."""
        self.steps += 1
        answered = result.observation.metadata.get("step")
        if answered != self.steps:
            self.tally.switch(f"{self.episode_id}: step {self.steps} answered as step {answered}")
            self.steps = answered if isinstance(answered, int) else self.steps
        if self.lost_at is not None:
            with self.tally.lock:
                self.tally.recoveries_s.append(time.monotonic() - self.lost_at)
            self.lost_at = None

    def check_end(self, env: Client) -> None:
        """The episode's session still has it: its id, and as many steps as were answered."""
        state = env.state()
        if (state.episode_id, state.step_count) != (self.episode_id, self.steps):
            self.tally.switch(
                f"{self.episode_id} after {self.steps} steps: state() is {state.episode_id} at {state.step_count}"
            )
        with self.tally.lock:
            self.tally.episodes += 1

    def lose(self, env: Client, error: Exception, action: RoomsAction) -> None:
        """The session is gone: no call but `reset()` may succeed on it; `reset()` recovers."""
        with self.tally.lock:
            self.tally.errors[(self.url, type(error).__name__)] += 1
            self.tally.lost += self.lost_at is None
        self.lost_at = self.lost_at or time.monotonic()
        try:
            answered = env.step(action)
        except SESSION_GONE:
            pass
        except Exception as again:  # counted: after a lost session, only SessionLost is right
            with self.tally.lock:
                self.tally.errors[(self.url, f"{type(again).__name__} after SessionLost")] += 1
        else:
            self.tally.switch(
                f"{self.episode_id}: a step after SessionLost was answered (step {answered.observation.metadata})"
            )
        episode_id = self.next_episode_id()
        try:
            ready = env.reset(episode_id=episode_id)  # a new session on the same address (a balancer's: another)
        except REPLICA_GONE:
            close_quietly(env)
            self.env = None  # the address is gone too: the next turn opens a session on another replica
            return
        except RuntimeError as error:
            if not refused_for_capacity(error, env):
                raise
            self.env = None
            return
        with self.tally.lock:
            self.tally.recovered_on_same_address += 1
        self.begin(episode_id, self.url, ready)

    def run(self, until: Until, action: RoomsAction, episode_steps: int, think_s: float) -> None:
        """Run episodes until told to stop, moving to another replica when one fails."""
        steps: Counter[str] = Counter()
        while not until.done():
            if self.env is None:
                episode_id = self.next_episode_id()
                try:
                    self.env, url, ready = open_session(self.pool, episode_id, self.headers)
                except PermissionError as error:  # AccessDenied: no token, or not the replicas' one
                    with self.tally.lock:
                        self.tally.errors[(getattr(error, "url", ""), type(error).__name__)] += 1
                    until.stop.set()
                    break
                except NoReplicaAvailable:
                    with self.tally.lock:
                        self.tally.refused_opens += 1
                    time.sleep(0.05)
                    continue
                self.begin(episode_id, url, ready)
            env = self.env
            try:
                if self.steps == episode_steps:
                    self.check_end(env)
                    episode_id = self.next_episode_id()
                    self.begin(episode_id, self.url, env.reset(episode_id=episode_id))
                self.check_step(env.step(action))
            except (ConnectionError, TimeoutError) as error:  # the session is gone; only SessionLost is expected
                self.lose(env, error, action)
                continue
            except Exception as error:  # counted and reported; the rollout goes on in a new session
                with self.tally.lock:
                    self.tally.errors[(self.url, type(error).__name__)] += 1
                close_quietly(env)
                self.env, self.lost_at = None, self.lost_at or time.monotonic()
                continue
            steps[self.url] += 1
            if think_s:
                time.sleep(think_s)
        if self.env is not None:
            close_quietly(self.env)
        with self.tally.lock:
            self.tally.steps_by_url.update(steps)
            self.tally.unrecovered += self.lost_at is not None


# --- Swarm: where the replicas are, and failing one ----------------------------------------------


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def swarm_replicas(service: str, host: str = "127.0.0.1") -> dict[str, str]:
    """Container id → base URL of each running task of `service` that publishes port 8000 in host mode."""
    task_ids = docker("service", "ps", "--quiet", "--filter", "desired-state=running", service).split()
    if not task_ids:
        return {}
    replicas = {}
    for line in docker("inspect", "--format", "{{json .Status}}", *task_ids).splitlines():
        status = json.loads(line)
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        published = [
            p["PublishedPort"] for p in ports if p.get("TargetPort") == 8000 and p.get("PublishMode") == "host"
        ]
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        if status.get("State") == "running" and published and container:
            replicas[container] = f"http://{host}:{published[0]}"
    return replicas


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class SwarmWatch:
    """Keeps the pool on the service's healthy replicas; notes when their number is back after a kill."""

    service: str
    pool: RoundRobin
    expected: int
    killed_at: float | None = None
    back_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(DISCOVERY_INTERVAL_S):
            try:
                live = [url for url in swarm_replicas(self.service).values() if healthy(url)]
            except subprocess.SubprocessError:
                continue
            self.pool.replace(live)
            if self.killed_at is not None and self.back_at is None and len(live) >= self.expected:
                self.back_at = time.monotonic()


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="append", default=[], help="a replica's base URL (repeat for each)")
    parser.add_argument("--swarm-service", help="find the replicas from this Swarm service's host-mode ports")
    parser.add_argument("--host", default="127.0.0.1", help="host of the host-mode ports (default 127.0.0.1)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent rollouts, a session each (default 8)")
    parser.add_argument("--episode-steps", type=int, default=20, help="steps of each episode (default 20)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--kill-at", type=float, help="docker kill one replica this many seconds in (--swarm-service)")
    parser.add_argument(
        "--stop-when-recovered",
        action="store_true",
        help="with --kill-at: end the load a second after the replica count is back",
    )
    parser.add_argument(
        "--think", type=float, default=0.0, help="seconds between a reply and the next step (default 0)"
    )
    parser.add_argument("--message-size", type=int, default=13, help="message size in bytes (default 13)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--token-file", type=Path, help="a file holding the replicas' access token (their ROOMS_API_TOKEN_FILE)"
    )


def token_headers(token_file: Path | None) -> dict[str, str] | None:
    """The `Authorization` header carrying the token in `token_file`, if one is given."""
    if token_file is None:
        return None
    return {"Authorization": f"Bearer {token_file.read_text(encoding='utf-8').strip()}"}


def argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, if anything."""
    if bool(args.url) == bool(args.swarm_service):
        return "give either --url (one or more) or --swarm-service"
    if args.kill_at is not None and not args.swarm_service:
        return "--kill-at needs --swarm-service (it kills one of the service's containers)"
    if args.sessions < 1 or args.episode_steps < 1 or args.duration <= 0 or args.message_size < 0 or args.think < 0:
        return "--sessions and --episode-steps must be ≥ 1, --duration > 0, --message-size and --think ≥ 0"
    if args.kill_at is not None and not 0 < args.kill_at < args.duration:
        return "--kill-at must fall inside --duration"
    if args.token_file is not None and not args.token_file.is_file():
        return f"--token-file {args.token_file}: no such file"
    return None


def run(args: argparse.Namespace) -> int:
    """Run the load (and the kill); print the report and return the exit status (2: bad arguments)."""
    problem = argument_problem(args)
    if problem:
        console.print(f"[red]rooms-bench failover: {problem}")
        return 2
    replicas = swarm_replicas(args.swarm_service, args.host) if args.swarm_service else {}
    pool = RoundRobin(list(replicas.values()) or args.url)
    if not pool.urls:
        console.print(f"[red]no running replica with a host-mode port in service {args.swarm_service}")
        return 1
    watch = SwarmWatch(args.swarm_service, pool, len(pool.urls)) if args.swarm_service else None
    tally = Tally()
    started = time.monotonic()
    until = Until(started + args.duration)
    headers = token_headers(args.token_file)
    action = RoomsAction(message="x" * args.message_size)
    threads = [
        threading.Thread(
            target=Rollout(number, pool, tally, headers).run,
            args=(until, action, args.episode_steps, args.think),
            daemon=True,
        )
        for number in range(args.sessions)
    ]
    if watch is not None:
        threads.append(threading.Thread(target=watch.run, daemon=True))
    for thread in threads:
        thread.start()
    killed_url = None
    if args.kill_at is not None and watch is not None:
        time.sleep(args.kill_at)
        container, killed_url = next(iter(replicas.items()))
        docker("kill", container)
        watch.killed_at = time.monotonic()
        if args.stop_when_recovered:
            while not until.done() and watch.back_at is None:
                time.sleep(DISCOVERY_INTERVAL_S)
            time.sleep(args.think + 1.0)  # the failed sessions' next calls, and some steps on the replicas back
            until.stop.set()
    for thread in threads[: args.sessions]:
        thread.join()
    if watch is not None:
        watch.stop.set()
    report = summarize(args, pool, tally, time.monotonic() - started, killed_url, watch)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["clean"] else 1


def summarize(
    args: argparse.Namespace,
    pool: RoundRobin,
    tally: Tally,
    seconds: float,
    killed_url: str | None,
    watch: SwarmWatch | None,
) -> dict[str, Any]:
    errors: list[dict[str, Any]] = [
        {"url": url, "kind": kind, "count": n} for (url, kind), n in sorted(tally.errors.items())
    ]
    elsewhere = sum(e["count"] for e in errors if e["url"] != killed_url)
    expected_kinds = {kind.__name__ for kind in SESSION_GONE}
    unexpected = sum(e["count"] for e in errors if e["kind"] not in expected_kinds)
    replica_back_s = None
    if watch is not None and watch.killed_at is not None and watch.back_at is not None:
        replica_back_s = round(watch.back_at - watch.killed_at, 2)
    steps = sum(tally.steps_by_url.values())
    replicas_back = killed_url is None or replica_back_s is not None
    return {
        "sessions": args.sessions,
        "seconds": round(seconds, 2),
        "steps": steps,
        "steps_per_s": round(steps / seconds, 1),
        "steps_by_url": dict(sorted(tally.steps_by_url.items())),
        "killed_url": killed_url,
        "errors": errors,
        "errors_on_killed_replica": sum(e["count"] for e in errors if e["url"] == killed_url),
        "errors_elsewhere": elsewhere,
        "errors_of_unexpected_kind": unexpected,
        "episodes": tally.episodes,
        "switched_episodes": len(tally.switched),
        "switched": tally.switched[:20],
        "sessions_lost": tally.lost,
        "sessions_recovered": len(tally.recoveries_s),
        "sessions_unrecovered": tally.unrecovered,
        "recovered_on_same_address": tally.recovered_on_same_address,
        "session_recovery_max_s": round(max(tally.recoveries_s), 3) if tally.recoveries_s else None,
        "session_recovery_median_s": round(statistics.median(tally.recoveries_s), 3) if tally.recoveries_s else None,
        "refused_opens": tally.refused_opens,
        "replica_back_s": replica_back_s,
        "replicas_at_end": len(pool.urls),
        "clean": elsewhere == 0
        and unexpected == 0
        and not tally.switched
        and tally.unrecovered == 0
        and len(tally.recoveries_s) == tally.lost
        and replicas_back
        and steps > 0,
    }


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"failover: {report['sessions']} rollouts, {report['seconds']} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("steps", report["steps"]),
        ("steps/s", report["steps_per_s"]),
        *((f"steps on {url}", n) for url, n in report["steps_by_url"].items()),
        ("killed replica", report["killed_url"] or "none"),
        *((f"errors on {e['url']} ({e['kind']})", e["count"]) for e in report["errors"]),
        ("errors on other replicas", report["errors_elsewhere"]),
        ("errors other than SessionLost", report["errors_of_unexpected_kind"]),
        ("episodes completed", report["episodes"]),
        ("switched episodes (went on in another session)", report["switched_episodes"]),
        *((f"switched: {why}", "") for why in report["switched"]),
        ("rollouts that lost their session", report["sessions_lost"]),
        ("rollouts stepping again after reset()", report["sessions_recovered"]),
        ("  of which reset() on the same address", report["recovered_on_same_address"]),
        ("rollouts never recovered", report["sessions_unrecovered"]),
        (
            "recovery, median / max s",
            f"{report['session_recovery_median_s']} / {report['session_recovery_max_s']}",
        ),
        ("opens refused by every replica", report["refused_opens"]),
        ("replica count back after s", report["replica_back_s"]),
        ("result", "clean" if report["clean"] else "NOT CLEAN"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rooms-bench failover", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    problem = argument_problem(args)
    if problem:
        parser.error(problem)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
