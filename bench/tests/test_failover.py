"""`rooms-bench failover`'s rollouts against servers of this test's own: a server killed mid-episode and
started again on its address, so that a client which silently reconnected would step a new episode."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from openenv.core.client_types import StepResult

from rooms import RoomsAction, RoomsObservation
from rooms.kit.testing import InProcessServer, ServerFactory
from rooms_bench.failover import Rollout, RoundRobin, SwarmWatch, Tally, Until, summarize


def run_rollouts(urls: list[str], rollouts: int, episode_steps: int, during: Any = None) -> tuple[Tally, float]:
    """`rollouts` rollouts over `urls` until `during()` has returned and they have stepped a while longer."""
    pool, tally = RoundRobin(urls), Tally()
    until = Until(time.monotonic() + 120)
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=Rollout(number, pool, tally, None).run,
            args=(until, RoomsAction(message="x"), episode_steps, 0.002),
        )
        for number in range(rollouts)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    if during is not None:
        during()
    time.sleep(1.5)
    until.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return tally, time.monotonic() - started


def report_of(tally: Tally, seconds: float, rollouts: int, killed_url: str | None = None) -> dict[str, Any]:
    # The killed server is back (the test started it again before the rollouts stopped).
    back = SwarmWatch("", RoundRobin([]), 1, killed_at=0.0, back_at=0.0) if killed_url else None
    return summarize(argparse.Namespace(sessions=rollouts), RoundRobin([]), tally, seconds, killed_url, back)


def test_a_server_restarted_on_its_address_switches_no_episode(
    server_factory: ServerFactory, live_server: InProcessServer
) -> None:
    """Killed mid-run and back on the same port: each of its rollouts gets SessionLost, the client's next step
    SessionLost again (not a new episode's step 1), and reset() recovers, on that address or the other.

    The server killed is a process (SIGKILL, then started again on its port); the other only has to run."""
    first, second = server_factory(), live_server

    def kill_and_restart() -> None:
        first.stop(signal.SIGKILL)
        time.sleep(0.3)
        server_factory(port=first.port)

    tally, seconds = run_rollouts([first.url, second.url], 6, 5, kill_and_restart)
    report = report_of(tally, seconds, 6, first.url)
    assert report["switched_episodes"] == 0, report
    assert report["episodes"] > 6, report
    assert {e["kind"] for e in report["errors"]} == {"SessionLost"}, report
    assert report["errors_elsewhere"] == 0, report
    # Round-robin: three of the six rollouts were on the server killed, each lost its session once.
    assert report["sessions_lost"] == 3 == report["errors_on_killed_replica"], report
    assert (report["sessions_recovered"], report["sessions_unrecovered"]) == (3, 0), report
    assert report["clean"], report


def test_no_failure_no_error(live_server: InProcessServer) -> None:
    tally, seconds = run_rollouts([live_server.url], 3, 4)
    report = report_of(tally, seconds, 3)
    assert report["errors"] == [] and report["switched_episodes"] == 0 and report["sessions_lost"] == 0, report
    assert report["episodes"] >= 3 and report["clean"], report


class Replaying:
    """A client that answers as one silently reconnected would: after its 3rd step, a new episode's step 1."""

    def __init__(self) -> None:
        self.step_number = 0

    def reset(self, episode_id: str) -> StepResult[RoomsObservation]:
        self.step_number = 0
        return self.result()

    def step(self, action: RoomsAction) -> StepResult[RoomsObservation]:
        self.step_number = 1 if self.step_number == 3 else self.step_number + 1
        return self.result()

    def result(self) -> StepResult[RoomsObservation]:
        observation = RoomsObservation(echoed_message="", message_length=0, metadata={"step": self.step_number})
        return StepResult(observation=observation, reward=0.0, done=False)


def test_a_step_from_another_session_is_counted_as_a_switched_episode() -> None:
    tally = Tally()
    rollout = Rollout(0, RoundRobin([]), tally, None)
    client = Replaying()
    rollout.begin("rollout-0-episode-1", "http://replica", client.reset("rollout-0-episode-1"))
    for _ in range(5):
        rollout.check_step(client.step(RoomsAction(message="x")))
    assert tally.switched == ["rollout-0-episode-1: step 4 answered as step 1"]
