"""The OpenEnv contract of the Rooms environment, whatever its models and its reset and step do.

The example action comes from `RoomsAction`'s schema (tests/conftest.py); the reward range from
openenv.yaml. These tests pass unchanged when the models and `reset`/`step` change.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import requests
from openenv.core.client_types import StepResult
from websockets.sync.client import connect

from rooms import RoomsAction, RoomsEnv, RoomsObservation
from rooms.server.rooms_environment import RoomsEnvironment


def test_the_server_is_healthy(server_url: str) -> None:
    assert requests.get(f"{server_url}/health", timeout=10).json()["status"] == "healthy"


def test_schema_shows_the_action_and_the_observation(server_url: str) -> None:
    schema = requests.get(f"{server_url}/schema", timeout=10).json()
    assert schema["action"]["properties"].keys() == RoomsAction.model_json_schema()["properties"].keys()
    assert schema["observation"]["properties"].keys() == RoomsObservation.model_json_schema()["properties"].keys()


def test_metadata_has_the_name_and_the_readme(server_url: str) -> None:
    response = requests.get(f"{server_url}/metadata", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Rooms"
    assert response.json()["readme_content"] == resources.files("rooms").joinpath("README.md").read_text("utf-8")


def test_reset_and_step_with_the_sync_client(
    server_url: str, action: RoomsAction, reward_range: tuple[float, float]
) -> None:
    with RoomsEnv(base_url=server_url).sync() as env:
        reset = env.reset(episode_id="sync-1")
        assert isinstance(reset.observation, RoomsObservation)
        assert env.state().episode_id == "sync-1"
        assert env.state().step_count == 0
        result = env.step(action)
        assert isinstance(result, StepResult)
        assert isinstance(result.observation, RoomsObservation)
        assert env.state().step_count == 1
    assert result.reward is None or reward_range[0] <= result.reward <= reward_range[1]


async def test_reset_and_step_with_the_async_client(
    server_url: str, action: RoomsAction, reward_range: tuple[float, float]
) -> None:
    async with RoomsEnv(base_url=server_url) as env:
        reset = await env.reset()
        assert isinstance(reset.observation, RoomsObservation)
        result = await env.step(action)
        assert isinstance(result.observation, RoomsObservation)
        assert (await env.state()).step_count == 1
    assert result.reward is None or reward_range[0] <= result.reward <= reward_range[1]


def test_an_invalid_action_gets_an_error_that_names_it_and_the_session_goes_on(
    server_url: str, action: RoomsAction
) -> None:
    fields = action.model_dump(mode="json", exclude_defaults=True)
    with connect(server_url.replace("http://", "ws://") + "/ws") as session:

        def call(message: dict[str, Any]) -> dict[str, Any]:
            session.send(json.dumps(message))
            reply: dict[str, Any] = json.loads(session.recv(timeout=30))
            return reply

        assert call({"type": "reset", "data": {}})["type"] == "observation"
        error = call({"type": "step", "data": {**fields, "no_such_field": 1}})
        assert error["type"] == "error"
        assert "no_such_field" in json.dumps(error)
        assert call({"type": "step", "data": fields})["type"] == "observation"
        assert call({"type": "state"})["data"]["step_count"] == 1


def test_the_environment_directly(action: RoomsAction, reward_range: tuple[float, float]) -> None:
    env = RoomsEnvironment()
    observation = env.reset(seed=0, episode_id="episode-1")
    assert isinstance(observation, RoomsObservation)
    assert (env.state.episode_id, env.state.step_count) == ("episode-1", 0)
    observation = env.step(action)
    assert isinstance(observation, RoomsObservation)
    assert env.state.step_count == 1
    assert RoomsObservation.model_validate_json(observation.model_dump_json()) == observation
    assert observation.reward is None or reward_range[0] <= observation.reward <= reward_range[1]
    assert env.get_metadata().readme_content
