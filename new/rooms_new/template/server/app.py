"""FastAPI application for the __ENV_TITLE_NAME__ environment: HTTP and WebSocket endpoints.

Endpoints (OpenEnv's): POST /reset, POST /step, GET /state, GET /schema,
GET /metadata, GET /health, WS /ws; and GET /capacity, /docs, /redoc.

Usage:
    uv run server                       # the `server` command (kit/command.py)
    uvicorn server.app:app --reload     # from the project directory, for development

Settings are environment variables (kit/settings.py), read when the app is built.
"""

from __ENV_NAME__.kit.application import create_app
from __ENV_NAME__.models import __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation
from __ENV_NAME__.server.__ENV_NAME___environment import __ENV_CLASS_NAME__Environment

app = create_app(__ENV_CLASS_NAME__Environment, __ENV_CLASS_NAME__Action, __ENV_CLASS_NAME__Observation)
