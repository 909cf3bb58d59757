"""N2: a second `statebus serve` on a taken port says so before printing anything, names
who holds the port and a free `--port`, and leaves the running server's files alone."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from statebus import address
from statebus.testing.server import free_port

pytestmark = pytest.mark.asyncio


def serve_env(home: Path, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    return {**env, "STATEBUS_HOME": str(home), "STATEBUS_DATABASE_URL": dsn}


async def serve(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        "serve",
        "--demo",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_second_serve_on_the_same_port_fails_first_and_touches_nothing(
    home: Path, dsn: str
) -> None:
    env = serve_env(home, dsn)
    port = free_port()
    first = await serve(env, port)
    assert first.stdout is not None
    try:
        while b"serving on" not in (line := await asyncio.wait_for(first.stdout.readline(), 60)):
            assert line, "the first server did not start"
        recorded = (home / address.FILE).read_text()
        assert recorded == f"ws://127.0.0.1:{port}/v1/ws\npid {first.pid}\n"

        second = await serve(env, port)
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1
        assert out == b"", out  # no banner, no token, no page URL for someone else's port
        message = err.decode()
        assert message.startswith(f"statebus serve: port {port} on 127.0.0.1 is already in use")
        assert f"this checkout's statebus server (pid {first.pid}," in message
        suggested = int(message.rsplit("--port ", 1)[1].split()[0])
        assert suggested > port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", suggested))  # the suggestion is free
        assert "Traceback" not in message and "Errno" not in message
        # The running server's address is still there for `statebus tail`.
        assert (home / address.FILE).read_text() == recorded
        assert address.socket_url(home) == f"ws://127.0.0.1:{port}/v1/ws"
    finally:
        first.terminate()
        await asyncio.wait_for(first.wait(), 30)
    assert not (home / address.FILE).exists()  # the first one cleans up its own file


async def test_a_port_held_by_another_program_is_named(home: Path, dsn: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = await serve(serve_env(home, dsn), port)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and out == b""
    message = err.decode()
    assert f"already in use by pid {os.getpid()} (" in message, message
    assert "statebus serve --demo --port " in message


async def test_a_server_leaves_a_file_it_no_longer_owns(home: Path) -> None:
    with address.recorded(home, "127.0.0.1", 8123):
        assert address.recorded_by(home) == ("ws://127.0.0.1:8123/v1/ws", os.getpid())
        (home / address.FILE).write_text("ws://127.0.0.1:8124/v1/ws\npid 1\n")
    assert address.socket_url(home) == "ws://127.0.0.1:8124/v1/ws"
