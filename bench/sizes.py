"""How big each figure runs: the full suite, and `--quick` (a smoke test of the suite)."""

from __future__ import annotations

from dataclasses import dataclass

FIGURES = ("pgbench", "latency", "admin", "rss", "broadcast", "capacity", "contention", "hold")


@dataclass(frozen=True)
class Sizes:
    users: int  # seeded users; the admin UPDATE touches all of them
    pgbench_clients: tuple[int, ...]
    pgbench_seconds: int
    split_transactions: int  # single-row transactions timed statement by statement
    latency_users: int  # one socket per user, for latency and capacity
    latency_rate: float  # commits/s for the latency figure
    latency_seconds: float
    warmup: float  # seconds written before samples count
    capacity_rates: tuple[float, ...]  # offered commits/s, stepped up until p99 > 50 ms
    capacity_seconds: float
    capacity_p99_ms: float
    writer_connections: int
    latency_workers: int  # load-generator processes
    fanout_sockets: int  # idle sockets for RSS and the admin UPDATE
    fanout_workers: int
    broadcast_sockets: int  # sockets of one user
    broadcast_versions: int
    broadcast_workers: int
    current_timeout: float  # seconds for every socket to get a frame
    repeat: int
    # Two-user two-table transactions: users drawn from u1..uN, pgbench connections.
    contention_users: int = 50
    contention_clients: int = 8
    contention_seconds: int = 25
    # The long admin transaction: its users, how long it stays open after its UPDATE,
    # and the app's connections writing those users meanwhile.
    hold_users: int = 10_000
    hold_seconds: float = 3.0
    hold_app_connections: int = 2


FULL = Sizes(
    users=100_000,
    pgbench_clients=(1, 4, 8),
    pgbench_seconds=10,
    split_transactions=2_000,
    latency_users=1_000,
    latency_rate=500,
    latency_seconds=10,
    warmup=1.0,
    capacity_rates=(250, 500, 1000, 1500, 2000, 2500, 3000, 4000),
    capacity_seconds=4,
    capacity_p99_ms=50,
    writer_connections=8,
    latency_workers=2,
    fanout_sockets=15_000,
    fanout_workers=4,
    broadcast_sockets=3_000,
    broadcast_versions=10,
    broadcast_workers=4,
    current_timeout=120,
    repeat=3,
)

QUICK = Sizes(
    users=2_000,
    pgbench_clients=(1, 4, 8),
    pgbench_seconds=1,
    split_transactions=200,
    latency_users=200,
    latency_rate=200,
    latency_seconds=1.5,
    warmup=0.3,
    capacity_rates=(100, 300),
    capacity_seconds=1,
    capacity_p99_ms=50,
    writer_connections=4,
    latency_workers=1,
    fanout_sockets=500,
    fanout_workers=2,
    broadcast_sockets=200,
    broadcast_versions=2,
    broadcast_workers=2,
    current_timeout=30,
    repeat=1,
    contention_seconds=1,
    hold_users=1_000,
    hold_seconds=0.5,
)
