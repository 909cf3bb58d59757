"""`statebus serve --log-format json`: every line it writes is one JSON object, none
holding a secret."""

from __future__ import annotations

import asyncio
import json
import signal

import asyncpg
import httpx

from statebus.client import Session
from statebus.testing.server import SECRET
from tests.helpers import add_user, seed_plans
from tests.integration.serve_process import serve_process


async def test_json_logs_are_one_object_per_line_without_secrets(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    args = ("--log-format", "json", "--log-level", "debug")
    async with serve_process(dsn, args=args) as serve:
        token = serve.token("alice")
        async with httpx.AsyncClient(base_url=serve.http) as http:
            # A token in a query string and in a header: neither may reach the log.
            await http.get("/v1/state", params={"token": token})
            assert (
                await http.get("/v1/state", headers={"authorization": f"Bearer {token}"})
            ).is_success
        async with await Session.open(serve.ws, token) as session:
            await session.recv()
        serve.proc.send_signal(signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, serve.proc.wait) == 0
        text = serve.log.read_text()
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]  # each line alone is valid JSON
    for record in records:
        assert isinstance(record, dict)
        assert {"ts", "level", "logger", "message"} <= record.keys()
    messages = [r["message"] for r in records]
    assert any(m.startswith("serving on http://127.0.0.1:") for m in messages)
    assert any("Stripe is not configured" in m for m in messages)
    assert any("GET /v1/state" in m for m in messages), "access lines at debug"
    assert SECRET not in text and token not in text
