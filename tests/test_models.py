"""RoomsAction and RoomsObservation: what they accept and what they reject."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from rooms import RoomsAction, RoomsObservation
from rooms.models import DEFAULT_MAX_MESSAGE_LENGTH, MAX_MESSAGE_LENGTH


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


def test_default_message_bound_is_one_mebichar() -> None:
    assert MAX_MESSAGE_LENGTH == DEFAULT_MAX_MESSAGE_LENGTH == 1_048_576
    assert len(RoomsAction(message="x" * MAX_MESSAGE_LENGTH).message) == MAX_MESSAGE_LENGTH
    with pytest.raises(ValidationError, match="at most 1048576 characters"):
        RoomsAction(message="x" * (MAX_MESSAGE_LENGTH + 1))


def _import_models(bound: str) -> subprocess.CompletedProcess[str]:
    code = "from rooms.models import RoomsAction; RoomsAction(message='123456')"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"ROOMS_MAX_MESSAGE_LENGTH": bound, "PATH": ""},
        capture_output=True,
        text=True,
    )


def test_message_bound_follows_the_environment_variable() -> None:
    result = _import_models("5")
    assert result.returncode != 0
    assert "String should have at most 5 characters" in result.stderr


@pytest.mark.parametrize("bound", ["zero", "0", "-3", "1.5"])
def test_bad_message_bound_names_the_variable(bound: str) -> None:
    result = _import_models(bound)
    assert result.returncode != 0
    assert f"ROOMS_MAX_MESSAGE_LENGTH must be a positive integer, got {bound!r}" in result.stderr


def test_observation_has_echo_fields_and_base_fields() -> None:
    obs = RoomsObservation(echoed_message="Hi", message_length=2, reward=0.2)
    assert (obs.echoed_message, obs.message_length, obs.reward, obs.done, obs.metadata) == ("Hi", 2, 0.2, False, {})


def test_observation_requires_its_fields_and_a_non_negative_length() -> None:
    with pytest.raises(ValidationError, match="echoed_message"):
        RoomsObservation(message_length=0)  # type: ignore[call-arg]  # the missing field is the point
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        RoomsObservation(echoed_message="", message_length=-1)
