"""The OpenEnv contract of the __ENV_TITLE_NAME__ environment, whatever its models and its reset and step do;
then, below `# Your game's own tests`, the game's own rules.

The example action comes from `__ENV_CLASS_NAME__Action`'s schema (tests/conftest.py); the reward range from
openenv.yaml. The contract's tests pass unchanged when the models and `reset`/`step` change.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi.testclient import TestClient
from openenv.core.client_types import StepResult

from __ENV_NAME__ import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Env, __ENV_CLASS_NAME__Observation
from __ENV_NAME__.server.__ENV_NAME___environment import __ENV_CLASS_NAME__Environment


def fields(action: __ENV_CLASS_NAME__Action) -> dict[str, Any]:
    return action.model_dump(mode="json", exclude_defaults=True)


def within(reward: float | None, reward_range: tuple[float, float]) -> bool:
    return reward is None or reward_range[0] <= reward <= reward_range[1]


def test_the_server_is_healthy(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "healthy"


def test_schema_shows_the_action_and_the_observation(client: TestClient) -> None:
    schema = client.get("/schema").json()
    assert schema["action"]["properties"].keys() == __ENV_CLASS_NAME__Action.model_json_schema()["properties"].keys()
    observation = __ENV_CLASS_NAME__Observation.model_json_schema()["properties"].keys()
    assert schema["observation"]["properties"].keys() == observation


def test_metadata_has_the_name_and_the_readme(client: TestClient) -> None:
    response = client.get("/metadata")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "__ENV_TITLE_NAME__"
    readme = resources.files("__ENV_NAME__").joinpath("README.md").read_text("utf-8")
    assert response.json()["readme_content"] == readme


def test_a_step_over_plain_http_without_a_reset(
    client: TestClient, action: __ENV_CLASS_NAME__Action, reward_range: tuple[float, float]
) -> None:
    """OpenEnv's HTTP `POST /step` steps a new environment, never reset: what `step` reads starts in `__init__`."""
    response = client.post("/step", json={"action": fields(action)})
    assert response.status_code == 200, response.text
    observation = __ENV_CLASS_NAME__Observation.model_validate(
        {**response.json()["observation"], "reward": response.json()["reward"], "done": response.json()["done"]}
    )
    assert within(observation.reward, reward_range)


def test_a_reset_over_plain_http(client: TestClient) -> None:
    response = client.post("/reset", json={})
    assert response.status_code == 200, response.text
    assert response.json()["done"] is False


def test_steps_over_the_websocket_after_a_reset_and_an_invalid_action_gets_an_error_that_names_it(
    client: TestClient, action: __ENV_CLASS_NAME__Action, reward_range: tuple[float, float]
) -> None:
    with client.websocket_connect("/ws") as session:

        def call(message: dict[str, Any]) -> dict[str, Any]:
            session.send_json(message)
            reply: dict[str, Any] = session.receive_json()
            return reply

        assert call({"type": "reset", "data": {}})["type"] == "observation"
        error = call({"type": "step", "data": {**fields(action), "no_such_field": 1}})
        assert error["type"] == "error"
        assert "no_such_field" in str(error)
        for count in (1, 2):
            reply = call({"type": "step", "data": fields(action)})
            assert reply["type"] == "observation", reply
            assert within(reply["data"].get("reward"), reward_range)
            assert call({"type": "state"})["data"]["step_count"] == count


def test_reset_and_step_with_the_sync_client(
    server_url: str, action: __ENV_CLASS_NAME__Action, reward_range: tuple[float, float]
) -> None:
    with __ENV_CLASS_NAME__Env(base_url=server_url).sync() as env:
        reset = env.reset(episode_id="sync-1")
        assert isinstance(reset.observation, __ENV_CLASS_NAME__Observation)
        assert (env.state().episode_id, env.state().step_count) == ("sync-1", 0)
        result = env.step(action)
        assert isinstance(result, StepResult)
        assert isinstance(result.observation, __ENV_CLASS_NAME__Observation)
        assert env.state().step_count == 1
    assert within(result.reward, reward_range)


async def test_reset_and_step_with_the_async_client(
    server_url: str, action: __ENV_CLASS_NAME__Action, reward_range: tuple[float, float]
) -> None:
    async with __ENV_CLASS_NAME__Env(base_url=server_url) as env:
        reset = await env.reset()
        assert isinstance(reset.observation, __ENV_CLASS_NAME__Observation)
        result = await env.step(action)
        assert isinstance(result.observation, __ENV_CLASS_NAME__Observation)
        assert (await env.state()).step_count == 1
    assert within(result.reward, reward_range)


def test_the_environment_directly(action: __ENV_CLASS_NAME__Action, reward_range: tuple[float, float]) -> None:
    env = __ENV_CLASS_NAME__Environment()
    observation = env.step(action)  # without a reset, as a plain HTTP `POST /step` does
    assert env.state.step_count == 1
    observation = env.reset(seed=0, episode_id="episode-1")
    assert isinstance(observation, __ENV_CLASS_NAME__Observation)
    assert (env.state.episode_id, env.state.step_count) == ("episode-1", 0)
    observation = env.step(action)
    assert isinstance(observation, __ENV_CLASS_NAME__Observation)
    assert env.state.step_count == 1
    assert __ENV_CLASS_NAME__Observation.model_validate_json(observation.model_dump_json()) == observation
    assert within(observation.reward, reward_range)
    assert env.get_metadata().readme_content


# Your game's own tests: the exact rewards of your `step` and when an episode ends. Replace the echo's below.


def test_the_reward_is_the_message_length_over_ten_and_the_episode_never_ends() -> None:
    env = __ENV_CLASS_NAME__Environment()
    env.reset()
    observation = env.step(__ENV_CLASS_NAME__Action(message="Hello, World!"))
    assert (observation.echoed_message, observation.reward, observation.done) == ("Hello, World!", 1.3, False)
