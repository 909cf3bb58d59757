"""A load-generator process: many WebSocket clients, driven by JSON lines on stdin.

The parent (bench/fleet.py) writes one command per line and reads one JSON reply per
line on stdout; logs go to stderr. The process ends when stdin closes, so a parent that
dies never leaves it behind. Only ws://127.0.0.1 targets are accepted, and one process
holds at most MAX_SOCKETS (each process may open 20,000 files here).

Times are CLOCK_MONOTONIC nanoseconds, shared by every process on the machine, so a
writer can put its send time into a row and a client can subtract it on arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from statebus.auth import issue_token
from statebus.backoff import delay

MAX_SOCKETS = 5_000
CONNECT_ATTEMPTS = 6
STREAM_LIMIT = 1 << 28


def used_value(frame: Any) -> int | None:
    """The `used` column of the user_usage row a frame carries: at the top of the naive
    relay's row, inside `state.usage.<metric>` in statebus's snapshot. Walks the JSON
    instead of assuming the document's layout."""
    if isinstance(frame, dict):
        value = frame.get("used")
        if isinstance(value, int):
            return value
        found = [used_value(v) for v in frame.values() if isinstance(v, dict | list)]
        numbers = [v for v in found if v is not None]
        return max(numbers) if numbers else None
    if isinstance(frame, list):
        numbers = [v for v in map(used_value, frame) if v is not None]
        return max(numbers) if numbers else None
    return None


class Worker:
    def __init__(self) -> None:
        self.conns: list[ClientConnection] = []
        self.users: list[str] = []
        self.readers: list[asyncio.Task[None]] = []
        self.first: list[int] = []  # receive time of the first frame since arm, 0 if none
        self.first_frame: list[str | bytes] = []
        self.frames: list[tuple[int, str | bytes]] = []
        self.armed = self.recording = False
        self.waiting = 0
        self.all_current = asyncio.Event()
        self.closed = 0
        self.leaving = False

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "connect":
            return await self.connect(cmd)
        if name == "arm":
            self.first = [0] * len(self.conns)
            self.first_frame = [b""] * len(self.conns)
            self.frames = []
            self.waiting = len(self.conns)
            self.all_current = asyncio.Event()
            if not self.conns:
                self.all_current.set()
            self.armed, self.recording = True, bool(cmd.get("record"))
            return {"ok": True}
        if name == "wait_current":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_current.wait(), float(cmd["timeout"]))
            current = [t for t in self.first if t]
            wrong = sum(
                1
                for user, raw in zip(self.users, self.first_frame, strict=True)
                if raw and json.loads(raw).get("user_id") != user
            )
            return {
                "current": len(current),
                "total": len(self.conns),
                "last_ns": max(current, default=0),
                "wrong_user": wrong,
                "closed": self.closed,
            }
        if name == "count":
            return {"frames": len(self.frames), "closed": self.closed}
        if name == "collect":
            self.recording = False
            samples = []
            for received, raw in self.frames:
                used = used_value(json.loads(raw))
                if used is not None:
                    samples.append((used, received))
            return {"samples": samples, "frames": len(self.frames), "closed": self.closed}
        if name == "disconnect":
            await self.disconnect()
            return {"ok": True}
        raise ValueError(f"unknown command {name!r}")

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        system, url, users = str(cmd["system"]), str(cmd["url"]), list(map(str, cmd["users"]))
        if not url.startswith("ws://127.0.0.1:"):
            raise ValueError("load generators only target ws://127.0.0.1")
        if len(self.conns) + len(users) > MAX_SOCKETS:
            raise ValueError(f"one process holds at most {MAX_SOCKETS} sockets")
        gate = asyncio.Semaphore(int(cmd.get("concurrency", 100)))
        tokens: dict[str, str] = {}
        errors: list[str] = []
        started = time.monotonic()

        async def one(user: str) -> ClientConnection | None:
            if system == "statebus" and user not in tokens:
                tokens[user] = issue_token(str(cmd["secret"]), user, ttl=6 * 3600)
            for attempt in range(1, CONNECT_ATTEMPTS + 1):
                try:
                    async with gate:
                        return await asyncio.wait_for(open_socket(system, url, user, tokens), 30)
                except (OSError, TimeoutError, ConnectionClosed, ValueError) as exc:
                    if attempt == CONNECT_ATTEMPTS:
                        errors.append(f"{user}: {type(exc).__name__}: {exc}")
                        return None
                await asyncio.sleep(delay(attempt, base=0.2, cap=3.0))
            return None

        opened = await asyncio.gather(*(one(user) for user in users))
        for user, conn in zip(users, opened, strict=True):
            if conn is not None:
                index = len(self.conns)
                self.conns.append(conn)
                self.users.append(user)
                self.readers.append(asyncio.create_task(self.read(index, conn)))
        self.armed = False
        return {
            "connected": sum(conn is not None for conn in opened),
            "failed": len(errors),
            "errors": errors[:5],
            "seconds": time.monotonic() - started,
        }

    async def read(self, index: int, conn: ClientConnection) -> None:
        try:
            async for message in conn:
                now = time.monotonic_ns()
                if self.armed and not self.first[index]:
                    self.first[index], self.first_frame[index] = now, message
                    self.waiting -= 1
                    if self.waiting == 0:
                        self.all_current.set()
                if self.recording:
                    self.frames.append((now, message))
        except ConnectionClosed:
            pass
        finally:
            if not self.leaving:
                self.closed += 1

    async def disconnect(self) -> None:
        self.leaving = True
        closing = [asyncio.wait_for(conn.close(), 5) for conn in self.conns]
        await asyncio.gather(*closing, return_exceptions=True)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.conns, self.users, self.readers = [], [], []
        self.leaving, self.closed = False, 0


async def open_socket(system: str, url: str, user: str, tokens: dict[str, str]) -> ClientConnection:
    """Connects one client and waits for its first frame: statebus's snapshot (or
    `current`), the naive relay's `ready`. Compression off on both, as statebus serves."""
    target = url if system == "statebus" else f"{url}?user={user}"
    conn = await connect(
        target, compression=None, proxy=None, max_size=None, ping_interval=None, close_timeout=2
    )
    try:
        if system == "statebus":
            await conn.send(json.dumps({"type": "auth", "token": tokens[user]}))
        first = json.loads(await conn.recv())
        if first.get("type") not in ("snapshot", "current", "ready"):
            raise ValueError(f"first frame was {first!r:.200}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                break
            try:
                reply = await worker.handle(cmd)
            except Exception as exc:  # reported to the parent, which fails the figure
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await worker.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
