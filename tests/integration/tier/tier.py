"""Relays and edges as real processes (so they can be killed -9), and sockets that
follow users across edges, recording every version they are sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import websockets

from statebus.auth import issue_token
from statebus.client import Session, SessionClosed
from statebus.core_messages import Snapshot
from statebus.testing.server import SECRET, free_port
from tests.helpers import wait_for


def tier_environment(dsn: str, nats_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env |= {
        "STATEBUS_DATABASE_URL": dsn,
        "STATEBUS_NATS_URL": nats_url,
        "STATEBUS_JWT_SECRET": SECRET,
        "STATEBUS_HOME": str(home),
    }
    return env


class Process:
    """A `statebus ...` child in its own process group, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "statebus", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Relay(Process):
    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.metrics_port = free_port()
        args = ["relay", "--name", name, "--log-level", "info"]
        super().__init__(
            [*args, "--metrics-port", str(self.metrics_port)], env, home / f"{name}.log"
        )
        self.name = name

    async def metric(self, name: str) -> float:
        return await metric_of(f"http://127.0.0.1:{self.metrics_port}/metrics", name)


async def metric_of(url: str, name: str) -> float:
    """One sample of a Prometheus text page (-1: not there)."""
    async with httpx.AsyncClient(timeout=2) as http:
        text = (await http.get(url)).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


class Edge(Process):
    def __init__(self, name: str, env: dict[str, str], home: Path) -> None:
        self.port = free_port()
        super().__init__(["serve", "--port", str(self.port)], env, home / f"{name}.log")
        self.name = name

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def readyz(self) -> tuple[int, str]:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                answer = await http.get(f"{self.http}/readyz")
        except httpx.HTTPError as exc:
            return 0, type(exc).__name__
        return answer.status_code, answer.text

    async def wait_ready(self, timeout: float = 30) -> None:
        async def ready() -> bool:
            return (await self.readyz())[0] == 200

        await wait_for(ready, timeout=timeout, what=f"edge {self.name} ready")


async def leader(conn: asyncpg.Connection) -> str | None:
    """The relay that holds a live lease from a live session (None: nobody leads)."""
    holder: str | None = await conn.fetchval(
        "SELECT holder FROM statebus.relay_lease l WHERE expires_at > now() AND EXISTS"
        " (SELECT 1 FROM pg_stat_activity a"
        "  WHERE a.pid = l.holder_pid AND a.backend_start = l.holder_started)"
    )
    return holder


async def write(conn: asyncpg.Connection, user_id: str) -> int:
    """One committed change to the user's state; returns the version it made."""
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'clicks', 1)"
        " ON CONFLICT (user_id, metric) DO UPDATE SET used = user_usage.used + 1",
        user_id,
    )
    version: int = await conn.fetchval(
        "SELECT version FROM statebus.versions WHERE user_id = $1", user_id
    )
    return version


@dataclass
class Follower:
    """One socket of one user, reconnecting to the next edge (with `since`) whenever
    its edge goes away; records every snapshot it is sent."""

    user_id: str
    urls: list[str]
    seen: list[tuple[str, int]] = field(default_factory=list)
    reconnects: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def version(self) -> int:
        return self.seen[-1][1] if self.seen else -1

    def start(self) -> Follower:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        turn = 0
        while True:
            url = self.urls[turn % len(self.urls)]
            since = self.version if self.seen else None
            try:
                token = issue_token(SECRET, self.user_id, ttl=3600)
                async with await Session.open(url, token, since=since) as session:
                    while True:
                        message = await session.recv(timeout=None)
                        if isinstance(message, Snapshot):
                            self.seen.append((message.user_id, message.version))
            except (SessionClosed, OSError, TimeoutError, websockets.InvalidHandshake):
                pass
            self.reconnects += 1
            turn += 1
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def latest_versions(conn: asyncpg.Connection, users: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT user_id, version FROM statebus.versions WHERE user_id = ANY($1)", users
    )
    return {row["user_id"]: row["version"] for row in rows}


async def assert_all_current(
    conn: asyncpg.Connection, followers: list[Follower], *, timeout: float = 15
) -> None:
    """Every socket ends at its user's latest version, having been sent only its own
    user's snapshots, in strictly increasing versions."""
    latest = await latest_versions(conn, [f.user_id for f in followers])
    try:
        await wait_for(
            lambda: all(f.version == latest[f.user_id] for f in followers),
            timeout=timeout,
            what="every socket at its user's latest version",
        )
    except AssertionError:
        behind = [(f.user_id, f.version, latest[f.user_id]) for f in followers]
        raise AssertionError(f"sockets behind (user, at, latest): {behind}") from None
    for f in followers:
        assert all(user == f.user_id for user, _ in f.seen), f"{f.user_id} got another user's"
        versions = [version for _, version in f.seen]
        assert versions == sorted(set(versions)), f"{f.user_id}: not strictly increasing"


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
