"""`statebus serve` as a process: embedded PostgreSQL up, demo banner, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from statebus.embedded import EmbeddedPostgres
from statebus.testing.server import free_port
from tests.helpers import wait_for

pytestmark = pytest.mark.asyncio


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def start_serve(home: Path, port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env["STATEBUS_HOME"] = str(home)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def wait_ready(port: int) -> None:
    """Until the server on `port` answers /readyz 200 (60 s at most)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout=60, what="/readyz")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_serve_demo_runs_embedded_postgres_and_stops_it(
    home: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    proc = await start_serve(home, port)
    assert proc.stdout is not None
    banner = ""
    while "psql:" not in banner:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, f"serve exited before printing its banner: {banner!r}"
        banner += line.decode()
    assert "token:" in banner and f"http://127.0.0.1:{port}/#token=" in banner
    assert "statebus psql" in banner
    await wait_ready(port)
    postmaster = EmbeddedPostgres(home).postmaster_pid()
    assert postmaster is not None and alive(postmaster)

    proc.send_signal(stop_signal)
    await asyncio.wait_for(proc.wait(), 30)
    await wait_for(lambda: not alive(postmaster), timeout=30, what="embedded PostgreSQL stopped")


async def test_a_crashed_user_does_not_keep_the_embedded_server_alive(home: Path) -> None:
    """A pid left in the wheel's handle list by a process killed with -9 is forgotten."""
    embedded = EmbeddedPostgres(home)
    embedded.start()
    embedded.stop()
    handles = home / "pgdata" / ".handle_pids.json"
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    handles.write_text(json.dumps([dead.pid]))  # as if that process had died holding it

    port = free_port()
    proc = await start_serve(home, port)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 60)
    # The banner now comes before uvicorn starts: signal a server that is up, not one
    # still starting (what is tested is the stop, not a stop during start-up).
    await wait_ready(port)
    postmaster = EmbeddedPostgres(home).postmaster_pid()
    assert postmaster is not None
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    await wait_for(lambda: not alive(postmaster), timeout=30, what="embedded PostgreSQL stopped")
