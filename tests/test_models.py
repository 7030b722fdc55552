"""RoomsAction and RoomsObservation: what they accept and what they reject."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from rooms import RoomsAction, RoomsObservation
from rooms.models import MAX_MESSAGE_LENGTH


def test_action_keeps_the_message() -> None:
    assert RoomsAction(message="Hello, World!").message == "Hello, World!"


def test_action_requires_a_message() -> None:
    with pytest.raises(ValidationError, match="message\n  Field required"):
        RoomsAction()  # type: ignore[call-arg]  # the missing field is the point


def test_action_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RoomsAction(message="hi", mesage="typo")  # type: ignore[call-arg]  # the typo is the point


@pytest.mark.parametrize("value", [123, None, ["a"], {"text": "a"}])
def test_action_message_must_be_a_string(value: object) -> None:
    with pytest.raises(ValidationError, match="message"):
        RoomsAction(message=value)  # type: ignore[arg-type]  # the wrong type is the point


def test_importing_the_models_reads_no_server_setting() -> None:
    """A training process with a bad server setting in its environment can still use the client."""
    code = "from rooms import RoomsAction, RoomsEnv; print(len(RoomsAction(message='123456').message))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"ROOMS_MAX_PAYLOAD_BYTES": "5", "MAX_CONCURRENT_ENVS": "bad", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "6\n", "")


def test_action_message_is_bounded_by_max_message_length() -> None:
    assert len(RoomsAction(message="x" * MAX_MESSAGE_LENGTH).message) == MAX_MESSAGE_LENGTH
    with pytest.raises(ValidationError, match=f"at most {MAX_MESSAGE_LENGTH} characters"):
        RoomsAction(message="x" * (MAX_MESSAGE_LENGTH + 1))


def test_observation_has_echo_fields_and_base_fields() -> None:
    obs = RoomsObservation(echoed_message="Hi", message_length=2, reward=0.2)
    assert (obs.echoed_message, obs.message_length, obs.reward, obs.done, obs.metadata) == ("Hi", 2, 0.2, False, {})


def test_observation_requires_its_fields_and_a_non_negative_length() -> None:
    with pytest.raises(ValidationError, match="echoed_message"):
        RoomsObservation(message_length=0)  # type: ignore[call-arg]  # the missing field is the point
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        RoomsObservation(echoed_message="", message_length=-1)
