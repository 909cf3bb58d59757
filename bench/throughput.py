"""Single-row commit throughput with capture, against plain UPDATE + pg_notify.

    python bench/throughput.py [--seconds 10] [--clients 1,4,8]

Starts an embedded PostgreSQL, seeds 10,000 users, and runs pgbench (from the wheel)
with two scripts side by side: `plain` updates an untracked copy of user_usage and
sends one pg_notify (what a naive relay costs), `statebus` updates user_usage itself
(capture, flush, history, NOTIFY). Prints tps per client count and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from statebus.embedded import EmbeddedPostgres, bin_dir
from statebus.migrations import migrate

USERS = 10_000

PLAIN = """\\set u random(1, 10000)
UPDATE plain_usage SET used = used + 1 WHERE user_id = 'u' || :u AND metric = 'posts';
SELECT pg_notify('plain', 'u' || :u);
"""
STATEBUS = """\\set u random(1, 10000)
UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || :u AND metric = 'posts';
"""


async def setup(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, demo=True)
        await conn.execute(
            "INSERT INTO users (id, email) SELECT 'u' || i, 'u' || i || '@x.io'"
            " FROM generate_series(1, $1) i",
            USERS,
        )
        await conn.execute(
            "INSERT INTO user_usage (user_id, metric, used) SELECT id, 'posts', 0 FROM users"
            " WHERE id LIKE 'u%'"
        )
        await conn.execute("CREATE TABLE plain_usage AS SELECT * FROM user_usage")
        await conn.execute("ALTER TABLE plain_usage ADD PRIMARY KEY (user_id, metric)")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def pgbench(dsn: str, script: Path, clients: int, seconds: int) -> float:
    out = subprocess.run(
        [
            str(bin_dir() / "pgbench"),
            "-n",
            "-f",
            str(script),
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match[1])


def main(seconds: int, clients: list[int]) -> None:
    home = Path(tempfile.mkdtemp(prefix="sbt", dir="/tmp"))
    embedded = EmbeddedPostgres(home)
    dsn = embedded.start()
    try:
        asyncio.run(setup(dsn))
        plain, ours = home / "plain.sql", home / "statebus.sql"
        plain.write_text(PLAIN)
        ours.write_text(STATEBUS)
        print(f"{'clients':>7} {'plain+notify tps':>17} {'statebus tps':>13} {'ratio':>6}")
        for n in clients:
            a = pgbench(dsn, plain, n, seconds)
            b = pgbench(dsn, ours, n, seconds)
            print(f"{n:>7} {a:>17.0f} {b:>13.0f} {b / a:>6.2f}")
    finally:
        embedded.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="1,4,8")
    args = parser.parse_args()
    main(args.seconds, [int(c) for c in args.clients.split(",")])
