"""`python -m bench.scale`: the relay tier against one process and against many LISTENing
processes, measured in the same run (docs/scaling.md carries the figures).

1. Notifying commits/s (pgbench, single-row UPDATEs of tracked rows) with no server at
   all, with K `statebus serve` processes each LISTENing (the single-role way), and with
   K edges behind two relays on a 3-node NATS cluster.
2. Commit-to-socket latency at a fixed commit rate, one process vs one edge.
3. RSS per idle socket: one plain process, then one edge (its NATS interest included).

Everything runs on this machine: Postgres, NATS, servers, pgbench and socket clients
share its cores, so read the figures side by side, as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import asyncpg

from bench.context import settled_rss
from bench.database import SEED
from bench.fleet import Fleet
from bench.procs import Child, Processes, free_port
from statebus.embedded import EmbeddedPostgres, bin_dir
from statebus.migrations import migrate
from statebus.testing.nats_cluster import NatsCluster
from statebus.testing.server import SECRET

LEADING = """SELECT expires_at > now() AND EXISTS (SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = l.holder_pid AND a.backend_start = l.holder_started)
FROM statebus.relay_lease l"""
PGBENCH = """\\set u random(1, {users})
UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || :u AND metric = 'posts';
"""


async def ready(port: int, child: Child, timeout: float = 90) -> None:
    import httpx

    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if not child.alive():
                raise child.failure("exited during start-up")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise child.failure("not ready in time")
            await asyncio.sleep(0.2)


class Run:
    def __init__(self, root: Path, dsn: str, nats: NatsCluster, users: int) -> None:
        self.root, self.dsn, self.nats, self.users = root, dsn, nats, users
        self.procs = Processes(root, Path.cwd())
        self.env = {"STATEBUS_DATABASE_URL": dsn, "STATEBUS_JWT_SECRET": SECRET}
        self.env["STATEBUS_HOME"] = str(root / "home")

    async def serve(self, *, edge: bool) -> tuple[Child, int]:
        port = free_port()
        env = self.env | ({"STATEBUS_NATS_URL": self.nats.url} if edge else {})
        argv = [sys.executable, "-m", "statebus", "serve", "--port", str(port)]
        child = await self.procs.spawn("edge" if edge else "serve", argv, env=env)
        await ready(port, child)
        return child, port

    async def relays(self) -> list[Child]:
        """Two relays, once one of them leads."""
        env = self.env | {"STATEBUS_NATS_URL": self.nats.url}
        children = [
            await self.procs.spawn(
                f"relay{n}", [sys.executable, "-m", "statebus", "relay", "--name", f"r{n}"], env=env
            )
            for n in (1, 2)
        ]
        conn = await asyncpg.connect(self.dsn)
        try:
            for _ in range(600):
                if await conn.fetchval(LEADING):
                    return children
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise children[0].failure("no relay leads after 60 s")

    async def pgbench(self, clients: int, seconds: int) -> float:
        script = self.root / "update.sql"
        script.write_text(PGBENCH.format(users=self.users))
        argv = [str(bin_dir() / "pgbench"), "-n", "-f", str(script), "-c", str(clients)]
        argv += ["-j", "2", "-T", str(seconds), self.dsn]
        child = await self.procs.spawn("pgbench", argv, pipes=True)
        assert child.proc.stdout is not None
        out = (await child.proc.stdout.read()).decode()
        await child.proc.wait()
        match = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
        if match is None:
            raise child.failure(f"printed no tps: {out[-300:]}")
        return float(match[1])

    async def commits(self, label: str, clients: int, seconds: int, repeat: int) -> float:
        figures = [await self.pgbench(clients, seconds) for _ in range(repeat)]
        median = statistics.median(figures)
        print(
            f"commits/s {label:<28} {median:8.0f}  (runs: {', '.join(f'{f:.0f}' for f in figures)})"
        )
        return median

    async def rss(self, label: str, port: int, pid: int, sockets: int) -> float:
        fleet = await Fleet.start(self.procs, 2)
        try:
            url = f"ws://127.0.0.1:{port}/v1/ws"
            await fleet.connect("statebus", url, ["u1", "u2", "u3", "u4"], SECRET, 60)
            await fleet.disconnect()
            before = await settled_rss(pid)
            await fleet.connect(
                "statebus", url, [f"u{i}" for i in range(1, sockets + 1)], SECRET, 600
            )
            after = await settled_rss(pid)
        finally:
            await fleet.close()
        per_socket = (after - before) / sockets / 1024
        print(f"idle socket RSS {label:<22} {per_socket:6.1f} KiB  ({sockets} sockets)")
        return per_socket


async def latency(dsn: str, port: int, users: int, rate: int, seconds: float) -> list[float]:
    """Commit-to-socket seconds of single-row commits at `rate`/s, one socket per user;
    writer and sockets in this process (one clock)."""
    import random
    import time

    from statebus.auth import issue_token
    from statebus.client import Session
    from statebus.core_messages import Snapshot

    url = f"ws://127.0.0.1:{port}/v1/ws"
    names = [f"u{i}" for i in range(1, users + 1)]
    sessions = [await Session.open(url, issue_token(SECRET, name, ttl=3600)) for name in names]
    for session in sessions:
        await session.recv()
    # Per user, (version, time) as they arrive: a socket may skip a version when a newer
    # one was committed before the read (latest wins), so a commit counts as delivered
    # when its version or a newer one arrives.
    arrived: dict[str, list[tuple[int, float]]] = {name: [] for name in names}

    async def read(session: Session) -> None:
        while True:
            message = await session.recv(timeout=None)
            if isinstance(message, Snapshot):
                arrived[message.user_id].append((message.version, time.monotonic()))

    readers = [asyncio.create_task(read(session)) for session in sessions]
    conn = await asyncpg.connect(dsn)
    committed: dict[tuple[str, int], float] = {}
    try:
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            user = random.choice(names)
            await conn.execute(
                "UPDATE user_usage SET used = used + 1 WHERE user_id = $1 AND metric = 'posts'",
                user,
            )
            done = time.monotonic()
            version = await conn.fetchval(
                "SELECT version FROM statebus.versions WHERE user_id = $1", user
            )
            committed[(user, version)] = done
        deadline = time.monotonic() + 15
        while not all(delivered(arrived, key) for key in committed):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for session in sessions:
            await session.close()
        await conn.close()
    missing = [key for key in committed if delivered(arrived, key) is None]
    if missing:
        raise RuntimeError(f"{len(missing)} commits never reached their socket: {missing[:3]}")
    return sorted((delivered(arrived, key) or 0.0) - at for key, at in committed.items())


def delivered(arrived: dict[str, list[tuple[int, float]]], key: tuple[str, int]) -> float | None:
    """When the socket of key's user first held key's version or a newer one."""
    user, version = key
    return next((at for got, at in arrived[user] if got >= version), None)


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument(
        "--processes", type=int, nargs="*", default=[4, 16], help="none: skip commits/s"
    )
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500, help="commits/s of the latency figure")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sbscale", dir="/tmp"))
    embedded = EmbeddedPostgres(root / "pg")
    dsn = await asyncio.to_thread(embedded.start)
    nats = NatsCluster.create(3).start()
    users = max(args.sockets, 10_000)
    run = Run(root, dsn, nats, users)
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.execute("SELECT 1")
        async with conn.transaction():
            for statement in SEED.strip().split(";\n"):
                if "$1" in statement:
                    await conn.execute(statement, users)
                else:
                    await conn.execute(statement)
        await conn.close()
        c, s, r = args.clients, args.seconds, args.repeat
        if args.processes:
            await run.commits("no server", c, s, r)
        for k in args.processes:
            servers = [await run.serve(edge=False) for _ in range(k)]
            await run.commits(f"{k} LISTENing processes", c, s, r)
            for child, _port in servers:
                await run.procs.stop(child)
            relays = await run.relays()
            edges = [await run.serve(edge=True) for _ in range(k)]
            await run.commits(f"{k} edges + 2 relays", c, s, r)
            for child, _port in edges:
                await run.procs.stop(child)
            for relay in relays:
                await run.procs.stop(relay)
        single, port = await run.serve(edge=False)
        direct = await latency(dsn, port, 200, args.rate, args.seconds)
        await run.rss("one process", port, single.pid, args.sockets)
        await run.procs.stop(single)
        relays = await run.relays()
        edge, port = await run.serve(edge=True)
        tiered = await latency(dsn, port, 200, args.rate, args.seconds)
        await run.rss("one edge", port, edge.pid, args.sockets)
        for label, values in (("one process", direct), ("one edge, tier", tiered)):
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            print(
                f"commit-to-socket {label:<20} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                f"  ({len(values)} commits at {args.rate}/s)"
            )
    finally:
        await run.procs.close()
        nats.stop()
        embedded.stop()
        shutil.rmtree(root / "pg", ignore_errors=True)  # the logs stay, for a failure
        print(f"logs: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
