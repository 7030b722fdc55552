"""FastAPI application for the Rooms environment: HTTP and WebSocket endpoints.

Endpoints (OpenEnv's): POST /reset, POST /step, GET /state, GET /schema,
GET /metadata, GET /health, WS /ws; and GET /capacity, /docs, /redoc.

Usage:
    uv run server                       # the `server` command (kit/command.py)
    uvicorn server.app:app --reload     # from the project directory, for development

Settings are environment variables (kit/settings.py), read when the app is built.
"""

from rooms.kit.application import create_app
from rooms.models import RoomsAction, RoomsObservation
from rooms.server.rooms_environment import RoomsEnvironment

app = create_app(RoomsEnvironment, RoomsAction, RoomsObservation)
