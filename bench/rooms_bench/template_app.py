"""The `openenv init` template's environment, served with room for many sessions.

    PYTHONPATH=<directory holding rooms_template> python -m rooms_bench.template_app PORT MAX_SESSIONS

The generated `server/app.py` is `create_app(<its environment, action, observation>,
max_concurrent_envs=1)` then `uvicorn.run`, and says to raise that number to allow more
concurrent sessions; this is that app with the number raised, so that concurrent runs compare
like with like. Everything else (environment, models, client) is the generated code as is.
"""

from __future__ import annotations

import sys

import uvicorn
from openenv.core.env_server.http_server import create_app
from rooms_template import RoomsTemplateAction, RoomsTemplateObservation
from rooms_template.server import RoomsTemplateEnvironment


def main(argv: list[str]) -> int:
    port, max_sessions = (int(value) for value in argv)
    app = create_app(
        RoomsTemplateEnvironment,
        RoomsTemplateAction,
        RoomsTemplateObservation,
        env_name="rooms_template",
        max_concurrent_envs=max_sessions,
    )
    uvicorn.run(app, host="127.0.0.1", port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
