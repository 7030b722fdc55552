"""The server's settings: every environment variable the server reads, read once when it starts.

`Settings` is a pydantic-settings model whose fields' aliases are the variables' names:
`Settings.from_env()` reads them from the environment (or from any mapping), and a bad value is
one `SettingsError` whose message names the variable.

Settings of this package's own are prefixed by its name in capitals (`PREFIX`): a
package `wordcount` reads `WORDCOUNT_MAX_PAYLOAD_BYTES`. OpenEnv's and uvicorn's
customary names (`MAX_CONCURRENT_ENVS`, `PORT`, ...) are read unprefixed.

Access (`access.py`): `<PREFIX>API_TOKEN`, or `<PREFIX>API_TOKEN_FILE` naming a file
that holds it (a Docker or Swarm secret), and `<PREFIX>ALLOWED_ORIGINS`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = f"{__name__.split('.')[0].upper()}_"

# TRL's AsyncGRPO keeps 128 rollouts in flight: 512 runs it with 4x headroom. An idle session costs
# 20-40 KB of server memory: 512 of them, about 20 MB.
DEFAULT_MAX_CONCURRENT_ENVS = 512
# Longer than a trainer's model thinks between two steps, short enough to free an abandoned slot in minutes.
DEFAULT_SESSION_TIMEOUT_S = 600.0
# uvicorn's own default for both: a peer that vanished frees its session within their sum.
DEFAULT_WS_PING_S = 20.0
# Room for a 1 MiB string field however it is escaped (12 bytes per character at most, a surrogate
# pair's escape), and 64 KiB for the rest of the message.
DEFAULT_MAX_PAYLOAD_BYTES = 12 * 1_048_576 + 64 * 1024
# What an `Authorization: Bearer` header can carry (RFC 6750's b64token), so any client can send it.
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
TOKEN = f"{PREFIX}API_TOKEN"
TOKEN_FILE = f"{TOKEN}_FILE"
ORIGINS = f"{PREFIX}ALLOWED_ORIGINS"


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names the variable."""


class Settings(BaseSettings):
    """What the server is configured with; `Settings.from_env()` reads it from the environment.

    Each field is read from the variable its alias names. `Settings(field=value, ...)` sets fields
    by name; like any pydantic-settings model, it reads the process environment for the others."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, case_sensitive=True, extra="ignore")

    max_concurrent_envs: Annotated[int, Field(gt=0)] = Field(
        default=DEFAULT_MAX_CONCURRENT_ENVS, validation_alias="MAX_CONCURRENT_ENVS"
    )
    session_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=DEFAULT_SESSION_TIMEOUT_S, validation_alias="SESSION_TIMEOUT_S"
    )
    max_payload_bytes: Annotated[int, Field(gt=0)] = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, validation_alias=f"{PREFIX}MAX_PAYLOAD_BYTES"
    )
    header_timeout_s: Annotated[float, Field(gt=0)] = Field(default=10.0, validation_alias=f"{PREFIX}HEADER_TIMEOUT_S")
    max_header_bytes: Annotated[int, Field(gt=0)] = Field(default=65536, validation_alias=f"{PREFIX}MAX_HEADER_BYTES")
    max_json_depth: Annotated[int, Field(gt=0)] = Field(default=64, validation_alias=f"{PREFIX}MAX_JSON_DEPTH")
    max_json_items: Annotated[int, Field(gt=0)] = Field(default=100_000, validation_alias=f"{PREFIX}MAX_JSON_ITEMS")
    enable_web_interface: bool = Field(default=False, validation_alias="ENABLE_WEB_INTERFACE")
    #: `GET /metrics` and the counting behind it (metrics.py); `<PREFIX>METRICS=false` leaves both out.
    metrics: bool = Field(default=True, validation_alias=f"{PREFIX}METRICS")
    host: str = Field(default="0.0.0.0", validation_alias="HOST")
    port: Annotated[int, Field(gt=0, le=65535)] = Field(default=8000, validation_alias="PORT")
    ws_ping_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=DEFAULT_WS_PING_S, validation_alias=f"{PREFIX}WS_PING_INTERVAL_S"
    )
    ws_ping_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=DEFAULT_WS_PING_S, validation_alias=f"{PREFIX}WS_PING_TIMEOUT_S"
    )
    #: The access token every route but /health wants; None: open to anyone who reaches the port.
    #: `<PREFIX>API_TOKEN`, or `<PREFIX>API_TOKEN_FILE` naming a file that holds it.
    api_token: SecretStr | None = Field(default=None, validation_alias=TOKEN)
    #: Browser origins, other than the server's own, whose pages may open a WebSocket session.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(default=(), validation_alias=ORIGINS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read `MAX_CONCURRENT_ENVS`, `SESSION_TIMEOUT_S`, `ENABLE_WEB_INTERFACE`, `HOST`, `PORT`,
        and `<PREFIX>MAX_PAYLOAD_BYTES`, `<PREFIX>METRICS`, `<PREFIX>WS_PING_INTERVAL_S`, `<PREFIX>WS_PING_TIMEOUT_S`,
        `<PREFIX>API_TOKEN` (or `<PREFIX>API_TOKEN_FILE`), `<PREFIX>ALLOWED_ORIGINS`, ... from
        `environ`; raise `SettingsError` for a bad value."""
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as error:
            raise settings_error(cls, error, environ) from None

    @model_validator(mode="before")
    @classmethod
    def read_variables(cls, values: Any) -> Any:
        """An empty variable is an unset one (but for the token's); the token may come from its file, and
        is one word that a Bearer header carries."""
        if not isinstance(values, dict):
            return values
        kept = {name: value for name, value in values.items() if value != "" or name in (TOKEN, TOKEN_FILE)}
        source = TOKEN if TOKEN in kept else "api_token"
        path = kept.pop(TOKEN_FILE, None)
        if path is not None:
            if TOKEN in kept:
                raise SettingsError(f"{TOKEN} and {TOKEN_FILE} are both set: set one of them")
            try:
                kept[TOKEN] = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise SettingsError(f"{TOKEN_FILE}: cannot read the token from {path!r}: {error}") from None
            source = TOKEN_FILE
        token = kept.get(TOKEN, kept.get("api_token"))
        if isinstance(token, str):
            if token == "":
                raise SettingsError(f"{source} is empty: give a token, or unset it to leave access open")
            if not TOKEN_CHARACTERS.fullmatch(token):
                raise SettingsError(
                    f"{source} must be one word of letters, digits and - . _ ~ + / (what a Bearer header carries)"
                )
        return kept

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def split_origins(cls, value: Any) -> Any:
        """Comma-separated origins (`https://host[:port]`), lower-cased; `*` allows any."""
        if not isinstance(value, str):
            return value
        listed = tuple(entry.strip().lower() for entry in value.split(",") if entry.strip())
        for entry in listed:
            parts = urlsplit(entry)
            if entry != "*" and not (parts.scheme and parts.netloc and entry == f"{parts.scheme}://{parts.netloc}"):
                raise SettingsError(
                    f"{ORIGINS} lists {entry!r}, which is not an origin such as https://example.org:8443"
                )
        return listed

    def token(self) -> str | None:
        """The access token's value, or None when access is open."""
        return None if self.api_token is None else self.api_token.get_secret_value()


def settings_error(settings: type[Settings], error: ValidationError, environ: Mapping[str, str]) -> SettingsError:
    """The first of `error`'s problems as one sentence that names the variable and the value it had."""
    problem = error.errors()[0]
    cause = problem.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return cause
    [name] = [str(part) for part in problem["loc"][:1]] or ["?"]
    raw = environ.get(name)
    fields = {str(field.validation_alias): field for field in settings.model_fields.values()}
    kind = fields[name].annotation if name in fields else None
    if kind is bool:
        return SettingsError(f"{name} must be true or false, got {raw!r}")
    if problem["type"] == "less_than_equal" and name == "PORT":
        return SettingsError(f"{name} must be a port number (1-65535), got {problem['input']}")
    if kind is int:
        return SettingsError(f"{name} must be a positive integer, got {raw!r}")
    if kind is float:
        return SettingsError(f"{name} must be a positive number, got {raw!r}")
    return SettingsError(f"{name}: {problem['msg']}, got {raw!r}")
