"""The floor: a bare `websockets` server answering every frame with one fixed reply.

    python -m rooms_bench.floor PORT RESPONSE

It answers `GET /health` with 200, so the harness can wait for it like any env server.
"""

from __future__ import annotations

import asyncio
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/health":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def serve_floor(port: int, response: str) -> None:
    async def answer(websocket: ServerConnection) -> None:
        async for _ in websocket:
            await websocket.send(response)

    async with serve(answer, "127.0.0.1", port, process_request=health, max_size=None):
        await asyncio.Future()  # until the process is signalled


def main(argv: list[str]) -> int:
    port, response = argv
    asyncio.run(serve_floor(int(port), response))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
