"""The server's settings: every environment variable the server reads, read once when it starts.

Settings of this package's own are prefixed by its name in capitals (`PREFIX`): a
package `wordcount` reads `WORDCOUNT_MAX_PAYLOAD_BYTES`. OpenEnv's and uvicorn's
customary names (`MAX_CONCURRENT_ENVS`, `PORT`, ...) are read unprefixed.

Access (`access.py`): `<PREFIX>API_TOKEN`, or `<PREFIX>API_TOKEN_FILE` naming a file
that holds it (a Docker or Swarm secret), and `<PREFIX>ALLOWED_ORIGINS`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

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

T = TypeVar("T", int, float)


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """What the server is configured with; `Settings.from_env()` reads it from the environment."""

    max_concurrent_envs: int = DEFAULT_MAX_CONCURRENT_ENVS
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    header_timeout_s: float = 10.0
    max_header_bytes: int = 65536
    max_json_depth: int = 64
    max_json_items: int = 100_000
    enable_web_interface: bool = False
    host: str = "0.0.0.0"
    port: int = 8000
    ws_ping_interval_s: float = DEFAULT_WS_PING_S
    ws_ping_timeout_s: float = DEFAULT_WS_PING_S
    #: The access token every route but /health wants; None: open to anyone who reaches the port.
    api_token: str | None = field(default=None, repr=False)
    #: Browser origins, other than the server's own, whose pages may open a WebSocket session.
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read `MAX_CONCURRENT_ENVS`, `SESSION_TIMEOUT_S`, `ENABLE_WEB_INTERFACE`, `HOST`, `PORT`,
        and `<PREFIX>MAX_PAYLOAD_BYTES`, `<PREFIX>WS_PING_INTERVAL_S`, `<PREFIX>WS_PING_TIMEOUT_S`,
        `<PREFIX>API_TOKEN` (or `<PREFIX>API_TOKEN_FILE`), `<PREFIX>ALLOWED_ORIGINS`;
        raise `SettingsError` for a bad value."""
        return cls(
            max_concurrent_envs=positive(environ, "MAX_CONCURRENT_ENVS", int, cls.max_concurrent_envs),
            session_timeout_s=positive(environ, "SESSION_TIMEOUT_S", float, cls.session_timeout_s),
            max_payload_bytes=positive(environ, f"{PREFIX}MAX_PAYLOAD_BYTES", int, cls.max_payload_bytes),
            header_timeout_s=positive(environ, f"{PREFIX}HEADER_TIMEOUT_S", float, cls.header_timeout_s),
            max_header_bytes=positive(environ, f"{PREFIX}MAX_HEADER_BYTES", int, cls.max_header_bytes),
            max_json_depth=positive(environ, f"{PREFIX}MAX_JSON_DEPTH", int, cls.max_json_depth),
            max_json_items=positive(environ, f"{PREFIX}MAX_JSON_ITEMS", int, cls.max_json_items),
            enable_web_interface=flag(environ, "ENABLE_WEB_INTERFACE"),
            host=environ.get("HOST", cls.host),
            port=port(environ, "PORT", cls.port),
            ws_ping_interval_s=positive(environ, f"{PREFIX}WS_PING_INTERVAL_S", float, cls.ws_ping_interval_s),
            ws_ping_timeout_s=positive(environ, f"{PREFIX}WS_PING_TIMEOUT_S", float, cls.ws_ping_timeout_s),
            api_token=api_token(environ, f"{PREFIX}API_TOKEN"),
            allowed_origins=origins(environ, f"{PREFIX}ALLOWED_ORIGINS"),
        )


def positive(environ: Mapping[str, str], name: str, kind: Callable[[str], T], default: T) -> T:
    """`environ[name]` as a positive `kind`, or `default` when unset."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = kind("0")
    if not value > 0:
        raise SettingsError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {raw!r}")
    return value


def flag(environ: Mapping[str, str], name: str) -> bool:
    """`environ[name]` as a yes/no flag (`true`/`false`, `1`/`0`, `yes`/`no`), false when unset."""
    raw = environ.get(name, "false")
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def port(environ: Mapping[str, str], name: str, default: int) -> int:
    """`environ[name]` as a TCP port number."""
    value = positive(environ, name, int, default)
    if value > 65535:
        raise SettingsError(f"{name} must be a port number (1-65535), got {value}")
    return value


def api_token(environ: Mapping[str, str], name: str) -> str | None:
    """The token in `environ[name]`, or in the file `environ[name + "_FILE"]` names; None if neither is set."""
    file_name = f"{name}_FILE"
    value, path = environ.get(name), environ.get(file_name)
    if value is not None and path is not None:
        raise SettingsError(f"{name} and {file_name} are both set: set one of them")
    source = name
    if path is not None:
        source = file_name
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"{file_name}: cannot read the token from {path!r}: {error}") from None
    if value is None:
        return None
    if value == "":
        raise SettingsError(f"{source} is empty: give a token, or unset it to leave access open")
    if not TOKEN_CHARACTERS.fullmatch(value):
        raise SettingsError(
            f"{source} must be one word of letters, digits and - . _ ~ + / (what a Bearer header carries)"
        )
    return value


def origins(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """`environ[name]` as comma-separated origins (`https://host[:port]`), lower-cased; `*` allows any."""
    listed = tuple(entry.strip().lower() for entry in environ.get(name, "").split(",") if entry.strip())
    for entry in listed:
        parts = urlsplit(entry)
        if entry != "*" and not (parts.scheme and parts.netloc and entry == f"{parts.scheme}://{parts.netloc}"):
            raise SettingsError(f"{name} lists {entry!r}, which is not an origin such as https://example.org:8443")
    return listed
