"""Server settings: one reader for every variable, one kind of error that names it."""

from __future__ import annotations

import pytest

from rooms.kit.command import main
from rooms.kit.settings import (
    DEFAULT_MAX_CONCURRENT_ENVS,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_SESSION_TIMEOUT_S,
    Settings,
    SettingsError,
)
from tests.conftest import ServerFactory


def test_defaults_when_nothing_is_set() -> None:
    assert Settings.from_env({}) == Settings(
        max_concurrent_envs=DEFAULT_MAX_CONCURRENT_ENVS,
        session_timeout_s=DEFAULT_SESSION_TIMEOUT_S,
        max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
        enable_web_interface=False,
        host="0.0.0.0",
        port=8000,
    )


def test_every_variable_is_read() -> None:
    environ = {
        "MAX_CONCURRENT_ENVS": "7",
        "SESSION_TIMEOUT_S": "2.5",
        "ROOMS_MAX_PAYLOAD_BYTES": "100",
        "ENABLE_WEB_INTERFACE": "True",
        "HOST": "127.0.0.1",
        "PORT": "8123",
    }
    expected = Settings(
        max_concurrent_envs=7,
        session_timeout_s=2.5,
        max_payload_bytes=100,
        enable_web_interface=True,
        host="127.0.0.1",
        port=8123,
    )
    assert Settings.from_env(environ) == expected


def test_the_default_payload_bound_holds_a_longest_message_however_escaped() -> None:
    from rooms.models import MAX_MESSAGE_LENGTH

    assert DEFAULT_MAX_PAYLOAD_BYTES == 12 * MAX_MESSAGE_LENGTH + 64 * 1024


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("MAX_CONCURRENT_ENVS", "0", "MAX_CONCURRENT_ENVS must be a positive integer, got '0'"),
        ("MAX_CONCURRENT_ENVS", "many", "MAX_CONCURRENT_ENVS must be a positive integer, got 'many'"),
        ("SESSION_TIMEOUT_S", "-1", "SESSION_TIMEOUT_S must be a positive number, got '-1'"),
        ("SESSION_TIMEOUT_S", "soon", "SESSION_TIMEOUT_S must be a positive number, got 'soon'"),
        ("ROOMS_MAX_PAYLOAD_BYTES", "1.5", "ROOMS_MAX_PAYLOAD_BYTES must be a positive integer, got '1.5'"),
        ("ENABLE_WEB_INTERFACE", "maybe", "ENABLE_WEB_INTERFACE must be true or false, got 'maybe'"),
        ("PORT", "70000", "PORT must be a port number (1-65535), got 70000"),
    ],
)
def test_a_bad_value_raises_one_error_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value) == says
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "name, value",
    [("MAX_CONCURRENT_ENVS", "0"), ("SESSION_TIMEOUT_S", "soon"), ("ROOMS_MAX_PAYLOAD_BYTES", "x"), ("PORT", "-1")],
)
def test_the_server_refuses_to_start_on_a_bad_value_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main([])
    [line] = str(exited.value.code).splitlines()
    assert line.startswith(f"server: {name} must be")


def test_the_server_process_exits_with_that_line_alone(server_factory: ServerFactory) -> None:
    server = server_factory(env={"MAX_CONCURRENT_ENVS": "0"}, wait=False)
    assert server.process.wait(timeout=60) == 1
    assert server.log() == "server: MAX_CONCURRENT_ENVS must be a positive integer, got '0'\n"
