"""Issue 17's F1 against a real `statebus serve --demo`: slow upgrades and idle connections.

Opens SLOW connections that trickle a WebSocket upgrade's headers (one line every 2 s, 32 s
in all) and IDLE connections that send nothing, all at once; meanwhile asks /readyz every
100 ms and opens one authenticated socket. Prints when the server closed them (seconds
from the attack's start) and
/readyz's latency, next to the same latency measured before the attack, in the same run.

    python scripts/attack_connections.py [--slow 1000] [--idle 1000] [--port 18201]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from statebus.auth import issue_token
from statebus.client import Session

SECRET = "attack-script-" + "x" * 40
DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"
UPGRADE_LINES = [
    "GET /v1/ws HTTP/1.1",
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    *[f"X-Slow-{n}: y" for n in range(10)],
]  # 16 lines, one every 2 s: 32 s


async def closed_at(reader: asyncio.StreamReader, opened: float, limit: float) -> float | None:
    """Seconds from `opened` until the server closed the connection (None: still open)."""
    try:
        await asyncio.wait_for(reader.read(), limit)
    except (TimeoutError, ConnectionError):
        return None
    return time.monotonic() - opened


async def slow_upgrade(port: int, began: float, limit: float) -> float | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        try:
            for line in UPGRADE_LINES:
                writer.write(line.encode() + b"\r\n")
                await writer.drain()
                await asyncio.sleep(2)
        except ConnectionError:
            pass

    task = asyncio.create_task(trickle())
    try:
        return await closed_at(reader, began, limit)
    finally:
        task.cancel()
        writer.close()


async def idle(port: int, began: float, limit: float) -> float | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await closed_at(reader, began, limit)
    finally:
        writer.close()


async def readyz_latencies(http: httpx.AsyncClient, seconds: float) -> list[float | None]:
    """/readyz every 100 ms on a fresh connection each time; None for a failure."""
    out: list[float | None] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            answer = await http.get("/readyz", headers={"Connection": "close"})
            out.append(time.monotonic() - started if answer.status_code == 200 else None)
        except httpx.HTTPError:
            out.append(None)
        await asyncio.sleep(0.1)
    return out


def summary(values: list[float | None]) -> dict[str, object]:
    ok = sorted(v for v in values if v is not None)
    if not ok:
        return {"count": len(values), "ok": 0}
    return {
        "count": len(values),
        "ok": len(ok),
        "p50_ms": round(statistics.median(ok) * 1000, 1),
        "p99_ms": round(ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000, 1),
        "max_ms": round(ok[-1] * 1000, 1),
    }


def closes(values: list[float | None]) -> dict[str, object]:
    done = sorted(v for v in values if v is not None)
    return {
        "opened": len(values),
        "closed": len(done),
        "first_s": round(done[0], 2) if done else None,
        "median_s": round(statistics.median(done), 2) if done else None,
        "last_s": round(done[-1], 2) if done else None,
    }


async def attack(port: int, slow: int, idle_count: int, limit: float) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        baseline = await readyz_latencies(http, 5)
        # Times are from here, the attack's start: a connection's connect() may wait in
        # the listen backlog, so the server's own clock starts no earlier than this.
        began = time.monotonic()
        slow_tasks = [asyncio.create_task(slow_upgrade(port, began, limit)) for _ in range(slow)]
        idle_tasks = [asyncio.create_task(idle(port, began, limit)) for _ in range(idle_count)]
        during = asyncio.create_task(readyz_latencies(http, 15))
        await asyncio.sleep(3)  # all open by now, none closed yet
        token = issue_token(SECRET, DEMO_USER, ttl=600)
        started = time.monotonic()
        session = await Session.open(f"ws://127.0.0.1:{port}/v1/ws", token)
        first = await session.recv()
        socket_s = time.monotonic() - started
        await session.close()
        return {
            "readyz_before": summary(baseline),
            "readyz_during": summary(await during),
            "socket_opened_during": {"version": first.version, "seconds": round(socket_s, 3)},
            "slow_upgrades": closes(await asyncio.gather(*slow_tasks)),
            "idle_connections": closes(await asyncio.gather(*idle_tasks)),
        }


async def serve_and_attack(args: argparse.Namespace) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="sbatk", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env.update(STATEBUS_HOME=str(home), STATEBUS_JWT_SECRET=SECRET)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statebus", "serve", "--demo", "--port", str(args.port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(600):
                try:
                    if (await http.get(f"http://127.0.0.1:{args.port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        return await attack(args.port, args.slow, args.idle, args.limit)
    finally:
        proc.terminate()
        await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18201)
    parser.add_argument("--limit", type=float, default=40.0, help="give up waiting after")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(serve_and_attack(args)), indent=2))


if __name__ == "__main__":
    main()
