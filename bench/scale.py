"""`python -m bench --only scale` (or `python -m bench.scale`): the relay tier against one
process and against many LISTENing processes, measured in the same run.

1. Notifying commits/s (pgbench, single-row UPDATEs of tracked rows) with no server at
   all (measured before and after the others), with K `statebus serve` processes each
   LISTENing (the single-role way), and with K edges behind two relays on a 3-node NATS
   cluster, for each K: with those processes running here, then paused (SIGSTOP), which
   takes their own CPU off this machine as separate servers would and leaves what they
   cost inside Postgres.
2. The relay leader's publishing under a pgbench burst: notifications/s it kept up with,
   JetStream messages/s it got acknowledged, and its backlog when the burst ended.
3. Commit-to-socket latency at a fixed commit rate: one process, then sockets spread
   over the tier's edges, taking turns; CPU of each process meanwhile.
4. The all-users admin UPDATE (every seeded user) delivered to many sockets: one
   process, then the same sockets spread over the edges; RSS per idle socket of both.

Everything runs on this machine: Postgres, NATS, servers, pgbench and socket clients
share its cores, so read the figures side by side, as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.context import settled_rss
from bench.database import SEED
from bench.fleet import Fleet
from bench.procs import Child, Processes, free_port, rss_bytes
from statebus.embedded import EmbeddedPostgres, bin_dir
from statebus.migrations import migrate
from statebus.testing.nats_cluster import NatsCluster
from statebus.testing.server import SECRET

REPO = Path(__file__).resolve().parent.parent
LEADER = "SELECT holder FROM statebus.relay_lease WHERE expires_at > now()"
PGBENCH = """\\set u random(1, {users})
UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || :u AND metric = 'posts';
"""
ADMIN_UPDATE = "UPDATE user_system_data SET onboarding_completed = NOT onboarding_completed"
# While pgbench measures the writers, every statebus and NATS process runs at this
# niceness: on one machine their own CPU would otherwise be taken from Postgres and
# pgbench, and in a deployment it is on other machines. What stays is what they cost
# inside Postgres: a LISTENing session per serve process, one for the whole tier.
WRITERS_FIRST = 19
# 64 serve processes hold ~5 connections each: more than the default 100.
MAX_CONNECTIONS = 800
READY_TIMEOUT = 300.0  # dozens of processes starting at once on two cores


@dataclass(frozen=True)
class ScaleSizes:
    processes: tuple[int, ...]  # K: LISTENing processes, then edges
    clients: int  # pgbench connections
    seconds: int  # one pgbench run
    repeat: int  # pgbench runs per row; turns of latency and of the admin UPDATE
    users: int  # seeded; the admin UPDATE touches all of them
    edges: int  # for latency and the admin UPDATE
    rate: int  # commits/s of the latency figure
    latency_seconds: float
    latency_sockets: int
    fanout_sockets: int
    fanout_workers: int
    burst_clients: int  # pgbench connections of the relay's burst


FULL = ScaleSizes(
    processes=(1, 4, 16, 64),
    clients=4,
    seconds=5,
    repeat=3,
    users=100_000,
    edges=4,
    rate=500,
    latency_seconds=5,
    latency_sockets=200,
    fanout_sockets=15_000,
    fanout_workers=4,
    burst_clients=8,
)
QUICK = ScaleSizes(
    processes=(1, 2),
    clients=2,
    seconds=1,
    repeat=1,
    users=2_000,
    edges=2,
    rate=100,
    latency_seconds=1,
    latency_sockets=20,
    fanout_sockets=200,
    fanout_workers=1,
    burst_clients=2,
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ready(port: int, child: Child, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if not child.alive():
                raise child.failure("exited during start-up")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise child.failure("not ready in time")
            await asyncio.sleep(0.3)


@dataclass
class Server:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"


class Run:
    def __init__(self, root: Path, dsn: str, nats: NatsCluster, sizes: ScaleSizes) -> None:
        self.root, self.dsn, self.nats, self.sizes = root, dsn, nats, sizes
        self.procs = Processes(root, REPO)
        self.env = {"STATEBUS_DATABASE_URL": dsn, "STATEBUS_JWT_SECRET": SECRET}
        self.env["STATEBUS_HOME"] = str(root / "home")
        self.relay_ports: dict[str, int] = {}
        self.figures: dict[str, Any] = {}
        self.niceness = 0  # of the statebus processes started from now on

    def _argv(self, *args: str) -> list[str]:
        return ["nice", "-n", str(self.niceness), sys.executable, "-m", "statebus", *args]

    def note(self, key: str, value: Any) -> None:
        self.figures[key] = value

    async def serve(self, *, edge: bool) -> Server:
        port = free_port()
        env = self.env | ({"STATEBUS_NATS_URL": self.nats.url} if edge else {})
        argv = self._argv("serve", "--port", str(port))
        child = await self.procs.spawn("edge" if edge else "serve", argv, env=env)
        await ready(port, child)
        return Server(child, port)

    async def servers(self, count: int, *, edge: bool) -> list[Server]:
        return list(await asyncio.gather(*(self.serve(edge=edge) for _ in range(count))))

    async def stop(self, servers: Sequence[Server]) -> None:
        await asyncio.gather(*(self.procs.stop(s.child, grace=3.0) for s in servers))

    async def relays(self) -> list[Child]:
        """Two relays with metrics, once one of them leads."""
        env = self.env | {"STATEBUS_NATS_URL": self.nats.url}
        children = []
        for name in ("r1", "r2"):
            port = self.relay_ports[name] = free_port()
            argv = self._argv("relay", "--name", name, "--metrics-port", str(port))
            children.append(await self.procs.spawn(f"relay-{name}", argv, env=env))
        if await self.leader(timeout=60) is None:
            raise children[0].failure("no relay leads after 60 s")
        return children

    async def leader(self, timeout: float = 0.0) -> str | None:
        deadline = time.monotonic() + timeout
        conn = await asyncpg.connect(self.dsn)
        try:
            while True:
                holder = await conn.fetchval(LEADER)
                if holder is not None or time.monotonic() >= deadline:
                    return str(holder) if holder is not None else None
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def relay_metrics(self, name: str) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{self.relay_ports[name]}/metrics")).text
        found = re.findall(r"^(statebus_relay_\w+) ([\d.e+-]+)$", text, re.MULTILINE)
        return {name: float(value) for name, value in found}

    async def pgbench(self, clients: int, seconds: int) -> float:
        script = self.root / "update.sql"
        script.write_text(PGBENCH.format(users=self.sizes.users))
        argv = [str(bin_dir() / "pgbench"), "-n", "-f", str(script), "-c", str(clients)]
        argv += ["-j", str(min(clients, 2)), "-T", str(seconds), self.dsn]
        child = await self.procs.spawn("pgbench", argv, pipes=True)
        assert child.proc.stdout is not None
        out = (await asyncio.wait_for(child.proc.stdout.read(), seconds * 5 + 120)).decode()
        await child.proc.wait()
        match = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
        if match is None:
            raise child.failure(f"printed no tps: {out[-300:]}")
        return float(match[1])

    async def commits(self, label: str) -> list[float]:
        s = self.sizes
        figures = [await self.pgbench(s.clients, s.seconds) for _ in range(s.repeat)]
        runs = ", ".join(f"{f:.0f}" for f in figures)
        print(f"commits/s {label:<32} {statistics.median(figures):8.0f}  (runs: {runs})")
        return figures


def renice(nats: NatsCluster, niceness: int) -> None:
    for node in nats.nodes:
        if node.process is not None:
            os.setpriority(os.PRIO_PROCESS, node.process.pid, niceness)


async def commit_rates(run: Run) -> None:
    """Section 1: no server (before and after), K LISTENing processes, K edges; every
    statebus and NATS process at niceness WRITERS_FIRST meanwhile."""
    run.niceness = WRITERS_FIRST
    renice(run.nats, WRITERS_FIRST)
    run.note("niceness_during_commits", WRITERS_FIRST)
    print(f"(statebus and NATS processes at nice {WRITERS_FIRST} while pgbench runs)")
    try:
        await _commit_rates(run)
    finally:
        run.niceness = 0
        renice(run.nats, 0)


async def _commit_rates(run: Run) -> None:
    baseline = await run.commits("no server")
    listening: dict[str, float] = {}
    tiered: dict[str, float] = {}
    listening_paused: dict[str, float] = {}
    tiered_paused: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {}
    for k in run.sizes.processes:
        free_before = mem_available_mib()
        servers = await run.servers(k, edge=False)
        rss = sum(rss_bytes(s.child.pid) for s in servers) / 2**20
        memory[f"listen_{k}"] = {"rss_mib": rss, "available_mib": mem_available_mib()}
        print(f"  {k} serve processes: {rss:.0f} MiB RSS; {free_before:.0f} MiB was available")
        listening[str(k)] = statistics.median(await run.commits(f"{k} LISTENing processes"))
        async with paused([s.child for s in servers]):
            label = f"{k} LISTENing, paused"
            listening_paused[str(k)] = statistics.median(await run.commits(label))
        await run.stop(servers)
        relays = await run.relays()
        edges = await run.servers(k, edge=True)
        rss = sum(rss_bytes(s.child.pid) for s in edges) / 2**20
        memory[f"tier_{k}"] = {"rss_mib": rss, "available_mib": mem_available_mib()}
        tiered[str(k)] = statistics.median(await run.commits(f"{k} edges + 2 relays"))
        async with paused([s.child for s in edges] + relays):
            label = f"{k} edges + 2 relays, paused"
            tiered_paused[str(k)] = statistics.median(await run.commits(label))
        await run.stop(edges)
        for relay in relays:
            await run.procs.stop(relay)
    baseline += await run.commits("no server (again)")
    run.note("commits_no_server", statistics.median(baseline))
    run.note("commits_no_server_runs", baseline)
    run.note("commits_listening", listening)
    run.note("commits_tier", tiered)
    run.note("commits_listening_paused", listening_paused)
    run.note("commits_tier_paused", tiered_paused)
    run.note("memory", memory)


@contextlib.asynccontextmanager
async def paused(children: Sequence[Child]) -> AsyncIterator[None]:
    """The processes stopped (SIGSTOP) meanwhile: their own CPU leaves this machine, as on
    servers of their own, while their Postgres sessions stay: a LISTENing session is
    still signalled and sent every notification (the kernel buffers what its process
    does not read). Continued afterwards, they catch up."""
    for child in children:
        os.kill(child.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for child in children:
            if child.alive():
                os.kill(child.pid, signal.SIGCONT)
        await asyncio.sleep(1)  # a moment to read what queued, before they are stopped


async def relay_burst(run: Run) -> None:
    """Section 2: the leader's publishing while pgbench writes as fast as it can."""
    s = run.sizes
    leader = await run.leader(timeout=30)
    assert leader is not None
    before = await run.relay_metrics(leader)
    started = time.monotonic()
    tps = await run.pgbench(s.burst_clients, s.seconds * 2)
    ended = time.monotonic()
    after = await run.relay_metrics(leader)
    # The backlog gauge is refreshed with each lease renewal (0.4 s): wait for one.
    await asyncio.sleep(0.5)
    backlog = (await run.relay_metrics(leader))["statebus_relay_oldest_unpublished_seconds"]
    acked = after["statebus_relay_acknowledged_total"] - before["statebus_relay_acknowledged_total"]
    messages_s = acked / (ended - started)
    print(
        f"relay leader under pgbench ({s.burst_clients} clients): {tps:.0f} notifications/s"
        f" published in {messages_s:.0f} acknowledged messages/s"
        f" ({tps / max(messages_s, 1e-9):.1f} per message); backlog after: {backlog:.2f} s"
    )
    run.note(
        "relay_burst",
        {
            "notifications_s": tps,
            "messages_s": messages_s,
            "backlog_s": backlog,
            "retried": after["statebus_relay_retried_total"]
            - before["statebus_relay_retried_total"],
        },
    )


async def latency(
    dsn: str, urls: Sequence[str], users: int, rate: int, seconds: float
) -> list[float]:
    """Commit-to-socket seconds of single-row commits at `rate`/s, one socket per user,
    sockets spread over `urls`; writer and sockets in this process (one clock)."""
    import random

    from statebus.auth import issue_token
    from statebus.client import Session
    from statebus.core_messages import Snapshot

    names = [f"u{i}" for i in range(1, users + 1)]
    sessions = [
        await Session.open(urls[n % len(urls)], issue_token(SECRET, name, ttl=3600))
        for n, name in enumerate(names)
    ]
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


async def latencies(run: Run, single: Server, edges: list[Server], relays: list[Child]) -> None:
    """Section 3: the single process and the tier take turns at the same commit rate."""
    s = run.sizes
    shown = {"direct": "one process", "tier": f"{len(edges)} edges, tier"}
    p50s: dict[str, list[float]] = {"direct": [], "tier": []}
    p99s: dict[str, list[float]] = {"direct": [], "tier": []}
    cpu: dict[str, float] = {}
    for _ in range(s.repeat):
        for side, servers in (("direct", [single]), ("tier", edges)):
            watched = [srv.child for srv in servers] + (relays if side == "tier" else [])
            before = {c.name + str(c.pid): cpu_seconds(c.pid) for c in watched}
            began = time.monotonic()
            values = await latency(
                run.dsn, [srv.url for srv in servers], s.latency_sockets, s.rate, s.latency_seconds
            )
            took = time.monotonic() - began
            for c in watched:
                key = c.name + str(c.pid)
                cpu[f"{side}:{key}"] = (cpu_seconds(c.pid) - before[key]) / took
            p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
            p50s[side].append(p50)
            p99s[side].append(p99)
            print(
                f"commit-to-socket {shown[side]:<18} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                f"  ({len(values)} commits at {s.rate}/s)"
            )
    edge_cpu = [v for k, v in cpu.items() if k.startswith("tier:edge")]
    relay_cpu = max((v for k, v in cpu.items() if k.startswith("tier:relay")), default=0.0)
    single_cpu = next((v for k, v in cpu.items() if k.startswith("direct:")), 0.0)
    run.note(
        "latency",
        {
            side: {"p50_ms": statistics.median(p50s[side]), "p99_ms": statistics.median(p99s[side])}
            for side in p50s
        }
        | {
            "runs": {"p50_ms": p50s, "p99_ms": p99s},
            "cpu_single": single_cpu,
            "cpu_edge": statistics.median(edge_cpu) if edge_cpu else 0.0,
            "cpu_relay_leader": relay_cpu,
        },
    )
    print(
        f"CPU at {s.rate} commits/s: one process {single_cpu:.0%}, one edge"
        f" {statistics.median(edge_cpu) if edge_cpu else 0:.0%}, relay leader {relay_cpu:.0%}"
    )


async def admin_fanout(run: Run, single: Server, edges: list[Server]) -> None:
    """Section 4: the all-users UPDATE to the same sockets, on one process, then spread
    over the edges; RSS per idle socket of each."""
    s = run.sizes
    users = [f"u{i}" for i in range(1, s.fanout_sockets + 1)]
    figures: dict[str, Any] = {}
    for side, servers in (("direct", [single]), ("tier", edges)):
        fleet = await Fleet.start(run.procs, s.fanout_workers)
        try:
            for srv in servers:  # first-connection costs before "before", as bench/fanout.py
                await fleet.connect("statebus", srv.url, ["u1", "u2"], SECRET, 60)
            await fleet.disconnect()
            before = [await settled_rss(srv.child.pid) for srv in servers]
            for n, srv in enumerate(servers):
                await fleet.connect("statebus", srv.url, users[n :: len(servers)], SECRET, 600)
            after = [await settled_rss(srv.child.pid) for srv in servers]
            times = []
            for _ in range(s.repeat):
                times.append(await admin_update(run, fleet))
        finally:
            await fleet.close()
        per_socket = (sum(after) - sum(before)) / len(users) / 1024
        figures[side] = {
            "current_s": statistics.median(times),
            "runs": times,
            "kib_per_socket": per_socket,
            "rss_before_mib": statistics.mean(before) / 2**20,
        }
        print(
            f"{s.users:,}-user UPDATE to {len(users):,} sockets on {len(servers)} process(es):"
            f" all current in {statistics.median(times):.2f} s (runs: "
            + ", ".join(f"{t:.2f}" for t in times)
            + f"); idle socket {per_socket:.1f} KiB"
        )
    run.note("admin", figures)


async def admin_update(run: Run, fleet: Fleet) -> float:
    """Seconds from the start of the all-users UPDATE until every socket has a frame."""
    conn = await asyncpg.connect(run.dsn, command_timeout=600)
    try:
        await fleet.arm()
        started = time.monotonic_ns()
        status = await conn.execute(ADMIN_UPDATE)
    finally:
        await conn.close()
    if status != f"UPDATE {run.sizes.users}":
        raise RuntimeError(f"the admin UPDATE said {status!r}")
    current, total, last = await fleet.wait_current(180)
    if current != total:
        raise RuntimeError(f"{current} of {total} sockets current after the admin UPDATE")
    return (last - started) / 1e9


async def prepare(root: Path, users: int) -> tuple[EmbeddedPostgres, str]:
    embedded = EmbeddedPostgres(root / "pg")
    dsn = await asyncio.to_thread(embedded.start)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    finally:
        await conn.close()
    await asyncio.to_thread(embedded.stop)  # max_connections takes a restart
    dsn = await asyncio.to_thread(embedded.start)
    conn = await asyncpg.connect(dsn, command_timeout=600)
    try:
        await migrate(conn)
        async with conn.transaction():  # one transaction: one version per user
            for statement in SEED.strip().split(";\n"):
                await conn.execute(statement, *([users] if "$1" in statement else []))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return embedded, dsn


async def measure(sizes: ScaleSizes, *, commits: bool = True) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sbscale", dir="/tmp"))
    print(f"run directory (logs): {root}", flush=True)
    embedded, dsn = await prepare(root, sizes.users)
    nats = NatsCluster.create(3).start()
    run = Run(root, dsn, nats, sizes)
    try:
        if commits and sizes.processes:
            await commit_rates(run)
        relays = await run.relays()
        single = await run.serve(edge=False)
        edges = await run.servers(sizes.edges, edge=True)
        await relay_burst(run)
        await latencies(run, single, edges, relays)
        await admin_fanout(run, single, edges)
    finally:
        await run.procs.close()
        nats.stop()
        embedded.stop()
        shutil.rmtree(root / "pg", ignore_errors=True)  # the logs stay, for a failure
    return run.figures


def judged(figures: dict[str, Any], sizes: ScaleSizes) -> list[str]:
    """The acceptance lines of the tier, each with its numbers and met / NOT met."""
    lines = []
    base = figures.get("commits_no_server")
    for how, suffix in (("running here", ""), ("paused", "_paused")):
        for k, rate in figures.get("commits_tier" + suffix, {}).items():
            listen = figures["commits_listening" + suffix][k]
            ratio = rate / base
            verdict = "met" if ratio >= 0.9 else "NOT met"
            lines.append(
                f"commits/s with {k} edges ({how}) {rate:.0f} = {ratio:.2f} of no server"
                f" ({base:.0f}); {k} LISTENing: {listen:.0f} = {listen / base:.2f}"
                f" (edges >= 0.9 of no server: {verdict})"
            )
    lat = figures["latency"]
    p50 = lat["tier"]["p50_ms"] / lat["direct"]["p50_ms"]
    lines.append(
        f"latency at {sizes.rate}/s, {sizes.edges} edges: p50 {lat['tier']['p50_ms']:.1f} ms ="
        f" {p50:.2f}x one process ({lat['direct']['p50_ms']:.1f} ms; <= 1.5x:"
        f" {'met' if p50 <= 1.5 else 'NOT met'}), p99 {lat['tier']['p99_ms']:.1f} ms"
        f" (< 50 ms: {'met' if lat['tier']['p99_ms'] < 50 else 'NOT met'})"
    )
    admin = figures["admin"]
    ratio = admin["tier"]["current_s"] / admin["direct"]["current_s"]
    lines.append(
        f"{sizes.users:,}-user UPDATE to {sizes.fanout_sockets:,} sockets: {sizes.edges} edges"
        f" {admin['tier']['current_s']:.2f} s = {ratio:.2f}x one process"
        f" ({admin['direct']['current_s']:.2f} s; <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})"
    )
    return lines


def plan(
    figures: dict[str, Any], sizes: ScaleSizes, edges: int = 100, sockets: int = 1_000_000
) -> list[str]:
    """A deployment of `edges` edges holding `sockets` sockets, computed from this run's
    per-process figures (each line says which)."""
    per_edge = sockets / edges
    admin, lat, burst = figures["admin"], figures["latency"], figures["relay_burst"]
    rss_mib = admin["tier"]["rss_before_mib"] + per_edge * admin["tier"]["kib_per_socket"] / 1024
    # CPU per commit/s: the single process handles every notification and every
    # delivery; an edge of the run every message and 1/edges of the deliveries (each
    # user's socket on one edge). Two equations give the two costs.
    rate = sizes.rate
    single, edge = lat["cpu_single"] / rate, lat["cpu_edge"] / rate
    delivery = max(0.0, (single - edge) * sizes.edges / (sizes.edges - 1))
    message = max(0.0, single - delivery)
    lines = [
        f"plan for {edges} edges, {sockets:,} sockets ({per_edge:,.0f} per edge):",
        f"  edge RSS: {admin['tier']['rss_before_mib']:.0f} MiB idle + {per_edge:,.0f} x"
        f" {admin['tier']['kib_per_socket']:.1f} KiB = {rss_mib:,.0f} MiB each,"
        f" {rss_mib * edges / 1024:,.0f} GiB for the fleet",
        "  Postgres: 1 LISTENing session (the leading relay) whatever the number of edges;"
        " envelope reads: one per commit per edge holding a socket of its user"
        " (1 when a user's sockets share an edge)",
    ]
    for commits in (rate, burst["notifications_s"]):
        # Messages: one per notification while the relay keeps up (measured at `rate`);
        # fewer, fuller ones under a burst (measured notifications per message).
        per_message = 1.0 if commits == rate else commits / max(burst["messages_s"], 1e-9)
        messages = commits / per_message
        cpu = messages * message + commits / edges * delivery
        lines.append(
            f"  at {commits:,.0f} commits/s: NATS {messages:,.0f} messages/s in,"
            f" {messages * edges:,.0f} deliveries/s out to edges (+2 replica copies);"
            f" edge CPU ~{cpu:.0%} of a core each ({message * 1e3:.2f} ms per message,"
            f" {delivery * 1e3:.2f} ms per delivery, from the latency run);"
            f" relay leader ~{lat['cpu_relay_leader'] * commits / rate:.0%} of a core"
        )
    return lines


def plot(figures: dict[str, Any], path: Path) -> bool:
    """Commits/s against processes, LISTENing vs edges, the no-server rate as a line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plot (pip install -e '.[dev]')")
        return False
    listening, tiered = figures.get("commits_listening"), figures.get("commits_tier")
    if not listening or not tiered:
        return False
    ks = sorted(int(k) for k in listening)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    # One colour per layout: solid with its processes running here, dashed paused.
    listen, tier = "tab:blue", "tab:orange"
    ax.plot(ks, [listening[str(k)] for k in ks], "o-", color=listen, label="K LISTENing serve")
    ax.plot(ks, [tiered[str(k)] for k in ks], "s-", color=tier, label="K edges + 2 relays")
    for key, marker, colour, label in (
        ("commits_listening_paused", "o--", listen, "K LISTENing serve, paused"),
        ("commits_tier_paused", "s--", tier, "K edges + 2 relays, paused"),
    ):
        if figures.get(key):
            ax.plot(ks, [figures[key][str(k)] for k in ks], marker, color=colour, label=label)
    base = figures["commits_no_server"]
    ax.axhline(base, color="grey", linestyle="--", label="no server")
    ax.axhline(0.9 * base, color="grey", linestyle=":", label="0.9 of no server")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("server processes (K)")
    ax.set_ylabel("notifying commits/s (pgbench)")
    ax.set_ylim(bottom=0)
    ax.set_title("Writers' commits/s as server processes are added")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def run_scale(
    *,
    quick: bool,
    repeat: int | None = None,
    limit: float | None = None,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    command: str = "python -m bench --only scale",
    processes: Sequence[int] | None = None,
) -> int:
    """Measures, prints the table and the acceptance lines, writes JSON and the plot."""
    sizes = QUICK if quick else FULL
    if repeat is not None:
        sizes = replace(sizes, repeat=repeat)
    if processes is not None:
        sizes = replace(sizes, processes=tuple(processes))
    results = REPO / "bench" / "results"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = json_path or results / ("scale-quick.json" if quick else f"scale-{stamp}.json")
    plot_path = plot_path or (
        results / "scale-quick.png" if quick else REPO / "docs" / "scaling-commits.png"
    )
    load = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    try:
        figures = asyncio.run(asyncio.wait_for(measure(sizes), limit or 3600.0))
    except TimeoutError:
        print("python -m bench --only scale: passed its time limit", file=sys.stderr)
        return 1
    lines = judged(figures, sizes)
    planned = plan(figures, sizes)
    print("\n" + "\n".join(lines + planned))
    saved = {
        "command": command,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.monotonic() - started,
        "load_average_at_start": load,
        "sizes": asdict(sizes),
        "figures": figures,
        "acceptance": lines,
        "plan": planned,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(saved, indent=1) + "\n")
    drew = plot(figures, plot_path)
    print(f"\nJSON {json_path}" + (f"; plot {plot_path}" if drew else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--processes", type=int, nargs="*", help="K values (none: skip)")
    args = parser.parse_args(argv)
    command = "python -m bench.scale" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    return run_scale(
        quick=args.quick, repeat=args.repeat, processes=args.processes, command=command
    )


if __name__ == "__main__":
    sys.exit(main())
