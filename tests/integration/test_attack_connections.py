"""Anyone on the network against the connection limits (docs/security.md, "Connection
limits"), with raw TCP clients against a real server: slow and oversized headers, idle
connections, more connections than the cap, and `statebus serve` under a low file limit."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.client import Session
from statebus.connections import Connections
from statebus.core_messages import Snapshot
from statebus.testing.server import RunningServer, free_port, settings_for_tests
from tests.helpers import add_user, seed_plans, wait_for

pytestmark = pytest.mark.asyncio

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
UPGRADE = (
    "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.fixture
def limited(dsn: str, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Starts servers with the given settings; stops them afterwards."""
    started: list[RunningServer] = []

    def start(**changes: object) -> RunningServer:
        server = RunningServer(settings_for_tests(tmp_path, **changes), dsn).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def connect(server: RunningServer) -> Conn:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def closed_after(
    reader: asyncio.StreamReader, started: float, limit: float
) -> tuple[float, bytes]:
    """Reads to EOF (the server closed); (seconds since `started`, what was read)."""
    data = await asyncio.wait_for(reader.read(), limit)
    return time.monotonic() - started, data


@asynccontextmanager
async def idle_connections(server: RunningServer, count: int) -> AsyncIterator[list[Conn]]:
    conns = [await connect(server) for _ in range(count)]
    try:
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


def tracker(server: RunningServer) -> Connections:
    """The server's connection count, as serve.py handed it to its protocol factories."""
    assert server._server is not None
    connections = server._server.config.http.keywords["connections"]  # type: ignore[union-attr]
    assert isinstance(connections, Connections)
    return connections


async def open_count(server: RunningServer, count: int) -> None:
    """Waits until the server has accepted `count` connections (accept() is asynchronous)."""
    await wait_for(lambda: len(tracker(server)) >= count, timeout=10, what=f"{count} accepted")


async def test_headers_trickled_past_the_deadline_are_cut_off(
    limited: Callable[..., RunningServer],
) -> None:
    server = limited(header_timeout=1)
    for start_line in ("GET /healthz HTTP/1.1\r\nHost: x\r\n", UPGRADE):
        reader, writer = await connect(server)
        started = time.monotonic()
        writer.write(start_line.encode())

        async def trickle(writer: asyncio.StreamWriter) -> None:
            with suppress(ConnectionError):
                for n in range(100):  # a header every 0.2 s: never done within 1 s
                    writer.write(f"X-Slow-{n}: y\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.2)

        task = asyncio.create_task(trickle(writer))
        elapsed, answer = await closed_after(reader, started, 5)
        task.cancel()
        writer.close()
        assert 0.9 <= elapsed < 3, elapsed
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "header_timeout"


async def test_a_connection_that_sends_nothing_is_closed(
    limited: Callable[..., RunningServer],
) -> None:
    server = limited(header_timeout=1)
    reader, writer = await connect(server)
    elapsed, _ = await closed_after(reader, time.monotonic(), 5)
    writer.close()
    assert 0.9 <= elapsed < 3, elapsed


async def test_an_idle_kept_alive_connection_is_closed(
    limited: Callable[..., RunningServer],
) -> None:
    server = limited(idle_timeout=1, header_timeout=30)
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    elapsed, rest = await closed_after(reader, time.monotonic(), 5)
    writer.close()
    assert rest == b"" and 0.9 <= elapsed < 3, elapsed


async def test_headers_too_large_are_refused(limited: Callable[..., RunningServer]) -> None:
    server = limited()
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    # 70 headers of 1 KiB, past the 64 KiB limit; no more, so that the server has read
    # all of it when it closes (unread data would turn its close into a reset).
    writer.write((b"X-Big: " + b"a" * 1024 + b"\r\n") * 70)
    _, answer = await closed_after(reader, time.monotonic(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


async def test_past_the_cap_http_gets_503_and_a_socket_1013(
    limited: Callable[..., RunningServer], conn: asyncpg.Connection
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    server = limited(max_sockets=50, header_timeout=30)
    async with idle_connections(server, 50):
        await open_count(server, 50)
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            refused = await http.get("/readyz")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "overloaded"
        assert refused.headers["retry-after"] == "5"
        session = await Session.open(server.ws, server.token("alice"))
        try:
            await wait_for(lambda: session.conn.close_code is not None, what="1013")
            assert session.conn.close_code == 1013
        finally:
            await session.close()
    # The idle ones gone, the same requests succeed.
    await wait_for(lambda: len(tracker(server)) == 0, what="connections released")
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200


async def test_with_many_idle_connections_readyz_answers_and_a_socket_opens(
    limited: Callable[..., RunningServer], conn: asyncpg.Connection
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    server = limited(max_sockets=50, header_timeout=2)
    async with idle_connections(server, 40) as idle:
        for _, writer in idle[:10]:  # and some trickling an upgrade
            writer.write(UPGRADE.encode())
        await open_count(server, 40)
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            started = time.monotonic()
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and time.monotonic() - started < 1
        session = await Session.open(server.ws, server.token("alice"))
        try:
            first = await session.recv()
            assert isinstance(first, Snapshot) and first.user_id == "alice"
            # The deadline closes every idle one; the authenticated socket stays.
            for reader, _ in idle:
                await closed_after(reader, time.monotonic(), 10)
            await conn.execute(
                "UPDATE user_subscriptions SET plan = 'viral_surge' WHERE user_id = 'alice'"
            )
            assert (await session.recv()).version == first.version + 1
        finally:
            await session.close()


def limit_files(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def serve_env(dsn: str, home: Path, max_sockets: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env.update(STATEBUS_HOME=str(home), STATEBUS_DATABASE_URL=dsn)
    env["STATEBUS_MAX_SOCKETS"] = str(max_sockets)
    return env


async def test_a_cap_the_file_limit_cannot_hold_stops_serve_naming_both(
    dsn: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statebus.cli", "serve", "--port", str(free_port()),
        env=serve_env(dsn, tmp_path, 5000),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit_files(256, 1024),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    message = err.decode()
    assert "STATEBUS_MAX_SOCKETS=5000" in message and "open-file limit of 1024" in message


async def test_serve_raises_the_soft_file_limit_to_the_hard_one(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statebus.cli", "serve", "--port", str(port),
        env=serve_env(dsn, tmp_path, 600),  # fits 1,024 files, not 256
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=limit_files(256, 1024),
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=60, what="/readyz")
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3:5] == ["1024", "1024"], line
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
