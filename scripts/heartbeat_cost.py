"""What the socket heartbeat costs the server: RSS per idle socket before and after every
socket has pinged, and server CPU per ping/pong.

    python scripts/heartbeat_cost.py --sockets 2000 --rounds 5

Starts `statebus serve` (embedded PostgreSQL, a temporary STATEBUS_HOME) on a free port,
opens the sockets from this process, and reads the server's VmRSS and CPU time from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

from statebus.auth import issue_token
from statebus.client import PING_AFTER
from statebus.testing.server import free_port

SECRET = "heartbeat-cost-" + "x" * 40


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settled_rss(pid: int) -> int:
    """The median of a few readings a moment apart (the allocator settles after bursts)."""
    readings = []
    for _ in range(5):
        await asyncio.sleep(0.4)
        readings.append(rss_kib(pid))
    return int(statistics.median(readings))


async def measure(port: int, pid: int, sockets: int, rounds: int) -> None:
    url = f"ws://127.0.0.1:{port}/v1/ws"
    warm = [await websockets.connect(url, ping_interval=None) for _ in range(20)]
    for conn in warm:
        await conn.close()
    empty = await settled_rss(pid)
    conns = []
    for i in range(sockets):
        conn = await websockets.connect(url, ping_interval=None, max_queue=4)
        await conn.send(f'{{"type":"auth","token":"{issue_token(SECRET, f"u{i}", ttl=3600)}"}}')
        await conn.recv()
        conns.append(conn)
    idle = await settled_rss(pid)
    cpu_before, started = cpu_s(pid), time.monotonic()
    for _ in range(rounds):
        for conn in conns:
            await conn.send('{"type":"ping"}')
        for conn in conns:
            assert await conn.recv() == '{"type":"pong"}'
    cpu_used, wall = cpu_s(pid) - cpu_before, time.monotonic() - started
    pinged = await settled_rss(pid)
    pings = sockets * rounds
    print(f"sockets {sockets}, pings {pings} in {wall:.2f} s")
    print(f"RSS per idle socket:            {(idle - empty) / sockets:.2f} KiB")
    print(f"RSS per socket after pinging:   {(pinged - empty) / sockets:.2f} KiB")
    print(f"server CPU per ping/pong:       {cpu_used / pings * 1e6:.1f} us")
    per_core = cpu_used / pings * 10_000 / PING_AFTER
    print(f"10,000 idle sockets, a ping each {PING_AFTER:g} s: {per_core * 100:.1f}% of one core")
    for conn in conns:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sbhc", dir="/tmp"))
    port = free_port()
    env = {**os.environ, "STATEBUS_HOME": str(home), "STATEBUS_JWT_SECRET": SECRET}
    env["STATEBUS_MAX_SOCKETS"] = str(args.sockets + 100)
    server = subprocess.Popen(
        [sys.executable, "-m", "statebus", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "serving on" in line:
                break
        else:
            raise SystemExit("the server did not start")
        asyncio.run(measure(port, server.pid, args.sockets, args.rounds))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
