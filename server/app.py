"""FastAPI application for the Rooms environment: HTTP and WebSocket endpoints.

Endpoints (OpenEnv's): POST /reset, POST /step, GET /state, GET /schema,
GET /metadata, GET /health, WS /ws; and GET /capacity, /docs, /redoc.

Usage:
    uv run server                       # the `server` command (server/__main__.py)
    uvicorn server.app:app --reload     # from the project directory, for development

Settings are environment variables (server/settings.py), read when the app is built.
"""

from rooms.models import RoomsAction, RoomsObservation
from rooms.server.rooms_environment import RoomsEnvironment
from rooms.server.serving import create_app

app = create_app(RoomsEnvironment, RoomsAction, RoomsObservation)
