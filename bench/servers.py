"""The two systems under test, each one uvicorn process on 127.0.0.1.

statebus runs as a user would run it, `python -m statebus serve` against the bench
database; the naive relay runs `python -m bench.naive`. Both log to files (uvicorn logs
every socket at info level; both pay the same).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

import httpx

from bench.procs import Child, Processes, free_port

SYSTEMS = ("statebus", "naive")
READY_TIMEOUT = 60.0


@dataclass
class Server:
    system: str
    child: Child
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def ws_url(self) -> str:
        path = "/v1/ws" if self.system == "statebus" else "/ws"
        return f"ws://127.0.0.1:{self.port}{path}"


async def start(
    procs: Processes, system: str, dsn: str, env: dict[str, str], max_per_user: int
) -> Server:
    port = free_port()
    if system == "statebus":
        argv = [sys.executable, "-m", "statebus", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
        child = await procs.spawn(
            "statebus-serve",
            argv,
            env={
                **env,
                "STATEBUS_DATABASE_URL": dsn,
                "STATEBUS_MAX_SOCKETS_PER_USER": str(max_per_user),
            },
        )
    else:
        argv = [sys.executable, "-m", "bench.naive", dsn, str(port)]
        child = await procs.spawn("naive-relay", argv, env=env)
    server = Server(system, child, port)
    try:
        await wait_ready(server)
    except BaseException:
        await procs.stop(child)
        raise
    return server


async def wait_ready(server: Server) -> None:
    """statebus: /readyz answers 200 (database and LISTEN live). The naive relay: uvicorn
    binds its port only after the lifespan (its LISTEN) has started, so a connect suffices."""
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if not server.child.alive():
                raise server.child.failure("exited during start-up")
            try:
                if server.system == "statebus":
                    answer = await http.get(f"http://127.0.0.1:{server.port}/readyz")
                    if answer.status_code == 200:
                        return
                else:
                    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                    writer.close()
                    await writer.wait_closed()
                    return
            except (httpx.HTTPError, OSError):
                pass
            await asyncio.sleep(0.1)
    raise server.child.failure(f"not ready within {READY_TIMEOUT:.0f}s")
