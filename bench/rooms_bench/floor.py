"""The floor: a bare `websockets` server answering every frame with one fixed reply.

    python -m rooms_bench.floor PORT RESPONSE [RESET_RESPONSE]

With RESET_RESPONSE, a reset frame gets that reply instead. It answers `GET /health` with 200,
so the harness can wait for it like any env server. As Rooms' `server` command, it compresses
nothing and queues connections deeply, so that storms of new sessions compare like with like.
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


async def serve_floor(port: int, response: str, reset_response: str | None = None) -> None:
    async def answer(websocket: ServerConnection) -> None:
        async for frame in websocket:
            is_reset = reset_response is not None and '"reset"' in str(frame)
            await websocket.send(reset_response if is_reset and reset_response is not None else response)

    async with serve(answer, "127.0.0.1", port, process_request=health, max_size=None, compression=None, backlog=65535):
        await asyncio.Future()  # until the process is signalled


def main(argv: list[str]) -> int:
    port, response, *reset_response = argv
    asyncio.run(serve_floor(int(port), response, *reset_response))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
