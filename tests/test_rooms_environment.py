"""RoomsEnvironment: echo, lengths, exact rewards, metadata, state, episodes."""

import asyncio
import doctest
import subprocess
import sys
import uuid
from decimal import Decimal
from importlib import metadata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rooms import RoomsAction
from rooms.server import rooms_environment
from rooms.server.rooms_environment import READY_MESSAGE, RoomsEnvironment
from tests.conftest import ROOT


@pytest.fixture
def env() -> RoomsEnvironment:
    env = RoomsEnvironment()
    env.reset()
    return env


@pytest.mark.parametrize(
    "message, reward",
    [("Hi", 0.2), ("abc", 0.3), ("Hello, World!", 1.3), ("", 0.0), ("x" * 7, 0.7), ("x" * 100, 10.0)],
)
def test_reward_is_length_times_a_tenth_as_exact_decimal(env: RoomsEnvironment, message: str, reward: float) -> None:
    obs = env.step(RoomsAction(message=message))
    assert obs.reward == reward
    assert repr(obs.reward) == repr(reward)  # 0.3, not 0.30000000000000004


@pytest.mark.parametrize("length", range(0, 2000, 7))
def test_reward_prints_as_the_decimal_it_means(env: RoomsEnvironment, length: int) -> None:
    reward = env.step(RoomsAction(message="a" * length)).reward
    assert Decimal(repr(reward)) == Decimal(length) / 10


def test_reward_has_no_cap(env: RoomsEnvironment) -> None:
    assert env.step(RoomsAction(message="y" * 12_345)).reward == 1234.5


@pytest.mark.parametrize(
    "message, length",
    [("héllo", 5), ("日本語", 3), ("👋🏽", 2), ("e\u0301", 2), ("tab\tnew\nline", 12), ("\x00", 1)],
)
def test_unicode_is_echoed_exactly_and_counted_in_code_points(env: RoomsEnvironment, message: str, length: int) -> None:
    obs = env.step(RoomsAction(message=message))
    assert obs.echoed_message == message
    assert obs.echoed_message.encode("utf-8") == message.encode("utf-8")
    assert obs.message_length == length == len(message)


def test_step_metadata_carries_the_message_and_step_number(env: RoomsEnvironment) -> None:
    env.step(RoomsAction(message="one"))
    obs = env.step(RoomsAction(message="two"))
    assert obs.metadata == {"original_message": "two", "step": 2}
    assert obs.done is False


def test_reset_observation() -> None:
    obs = RoomsEnvironment().reset()
    assert (obs.echoed_message, obs.message_length, obs.reward, obs.done, obs.metadata) == (
        READY_MESSAGE,
        0,
        0.0,
        False,
        {"step": 0},
    )
    assert READY_MESSAGE == "Rooms environment ready!"


def test_state_counts_steps_and_reset_starts_over(env: RoomsEnvironment) -> None:
    for _ in range(3):
        env.step(RoomsAction(message="m"))
    assert env.state.step_count == 3
    first_episode = env.state.episode_id
    env.reset()
    assert env.state.step_count == 0
    assert env.state.episode_id != first_episode


def test_reset_uses_the_given_episode_id_or_a_fresh_uuid4() -> None:
    env = RoomsEnvironment()
    env.reset(episode_id="episode-7", seed=3)
    assert env.state.episode_id == "episode-7"
    env.reset()
    assert uuid.UUID(env.state.episode_id).version == 4


def test_environments_do_not_share_state() -> None:
    a, b = RoomsEnvironment(), RoomsEnvironment()
    a.reset(episode_id="a")
    b.reset(episode_id="b")
    a.step(RoomsAction(message="only a"))
    assert (a.state.step_count, b.state.step_count) == (1, 0)


def test_async_methods_match_the_sync_ones() -> None:
    sync_env, async_env = RoomsEnvironment(), RoomsEnvironment()
    assert asyncio.run(async_env.reset_async(episode_id="e")) == sync_env.reset(episode_id="e")
    action = RoomsAction(message="same")
    assert asyncio.run(async_env.step_async(action)) == sync_env.step(action)
    assert async_env.state == sync_env.state


def test_sessions_are_declared_concurrent() -> None:
    assert RoomsEnvironment.SUPPORTS_CONCURRENT_SESSIONS is True


def test_metadata_names_rooms_with_version_and_readme() -> None:
    meta = RoomsEnvironment().get_metadata()
    assert meta.name == "Rooms"
    assert meta.description == "Echoes each message back; the reward is its length × 0.1."
    assert meta.version == metadata.version("openenv-rooms")
    assert meta.readme_content == (ROOT / "README.md").read_text(encoding="utf-8")


def test_docstring_examples_run() -> None:
    results = doctest.testmod(rooms_environment, raise_on_error=False, verbose=False)
    assert results.attempted >= 5
    assert results.failed == 0


def test_docstring_has_the_gymnasium_sections() -> None:
    doc = RoomsEnvironment.__doc__
    assert doc is not None
    sections = [
        "Description",
        "Action Space",
        "Observation Space",
        "Rewards",
        "Starting State",
        "Episode End",
        "Arguments",
        "Examples",
    ]
    positions = [doc.index(f"## {name}\n") for name in sections]
    assert positions == sorted(positions)


def test_self_check_script_runs_from_the_project_root() -> None:
    result = subprocess.run(
        [sys.executable, "server/rooms_environment.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   reward of 'abc' is 0.3" in result.stdout
    assert "ok   state counts 4 steps" in result.stdout
    assert "FAIL" not in result.stdout


# --- properties, for any Unicode message -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(st.text(), min_size=1, max_size=20), episode_id=st.text(min_size=1) | st.none())
def test_any_messages_echo_exactly_count_code_points_and_reward_a_tenth(
    messages: list[str], episode_id: str | None
) -> None:
    env = RoomsEnvironment()
    env.reset(episode_id=episode_id)
    for step, message in enumerate(messages, start=1):
        obs = env.step(RoomsAction(message=message))
        assert obs.echoed_message == message
        assert obs.message_length == len(message)
        assert obs.reward == len(message) / 10
        assert Decimal(repr(obs.reward)) == Decimal(len(message)) / 10
        assert obs.metadata == {"original_message": message, "step": step}
        assert obs.done is False
        assert env.state.step_count == step
    assert env.state.episode_id == (episode_id or env.state.episode_id)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(min_value=0, max_value=1_048_576))
def test_reward_is_the_exact_decimal_for_every_allowed_length(length: int) -> None:
    env = RoomsEnvironment()
    reward = env.step(RoomsAction(message="a" * length)).reward
    assert Decimal(repr(reward)) == Decimal(length) / 10
