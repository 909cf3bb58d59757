"""The naive relay, statebus's peer in every figure: what anyone writes first.

A row trigger sends each changed row as JSON, one asyncpg connection LISTENs, and a
Starlette socket endpoint relays each row to the sockets of its user. No versions, no
snapshot, no catch-up: a yardstick, not a design. Served by uvicorn with its defaults:
`python -m bench.naive DSN PORT` (always on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

TABLES = ("user_subscriptions", "user_billing", "user_usage", "user_system_data")
SQL = """CREATE FUNCTION naive_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('naive', row_to_json(NEW)::text); RETURN NULL; END $$;
""" + "".join(
    f"CREATE TRIGGER naive AFTER INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION naive_notify();\n"
    for t in TABLES
)

queues: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)


def relay(_conn: object, _pid: int, _channel: str, payload: object) -> None:
    for queue in queues.get(json.loads(str(payload))["user_id"], ()):
        queue.put_nowait(str(payload))


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    user, queue = ws.query_params["user"], asyncio.Queue[str]()
    queues[user].add(queue)
    try:
        await ws.send_text('{"type": "ready"}')
        while True:
            await ws.send_text(await queue.get())
    except WebSocketDisconnect:
        pass
    finally:
        queues[user].discard(queue)


def app(dsn: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        conn = await asyncpg.connect(dsn)
        await conn.add_listener("naive", relay)
        yield
        await conn.close()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]))
