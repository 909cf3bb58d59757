"""One run of the suite: the database, then each session for each system, repeated.

The systems take turns (statebus first on even repetitions, the naive relay first on
odd ones), never run at once, and meet the same tables, rows and load. A failing
session is recorded and the run goes on; the caller exits non-zero.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import profiling
from bench.contention import contention_session
from bench.context import Context
from bench.database import prepare, tidy
from bench.fanout import broadcast_session, fanout_session
from bench.load import writes_session
from bench.procs import Processes
from bench.results import Results
from bench.servers import SYSTEMS
from bench.sizes import Sizes

REPO = Path(__file__).resolve().parent.parent

Session = Callable[[Context, str], Awaitable[None]]
SESSIONS: tuple[tuple[frozenset[str], Session], ...] = (
    (frozenset({"pgbench", "latency", "capacity"}), writes_session),
    (frozenset({"rss", "admin"}), fanout_session),
    (frozenset({"broadcast"}), broadcast_session),
    (frozenset({"contention", "hold"}), contention_session),
)


async def run_suite(
    sizes: Sizes,
    selected: frozenset[str],
    repeat: int,
    results: Results,
    *,
    keep: bool,
    profile: bool,
) -> dict[str, str]:
    """Runs everything selected into `results`; returns facts about the database."""
    # Short: the server's Unix socket path lives in here and may not pass ~107 bytes.
    home = Path(tempfile.mkdtemp(prefix="sbbench", dir="/tmp"))
    (home / "logs").mkdir()
    procs = Processes(home / "logs", REPO)
    secret = secrets.token_urlsafe(48)
    env = {"STATEBUS_HOME": str(home / "statebus"), "STATEBUS_JWT_SECRET": secret}
    facts: dict[str, str] = {}
    try:
        print(f"run directory (logs): {home}", flush=True)
        started = time.monotonic()
        dbs = await prepare(home, sizes.users, procs, env)
        facts["postgres"] = dbs.server_version
        print(f"database ready: {sizes.users:,} users in {time.monotonic() - started:.1f}s")
        ctx = Context(sizes, procs, dbs, env, secret, home, results, selected, profile)
        try:
            for rep in range(repeat):
                order = SYSTEMS if rep % 2 == 0 else tuple(reversed(SYSTEMS))
                for system in order:
                    for figures, session in SESSIONS:
                        if not figures & selected:
                            continue
                        print(f"[{rep + 1}/{repeat}] {system}: {session.__name__}", flush=True)
                        began = time.monotonic()
                        await tidy(dbs)
                        try:
                            await session(ctx, system)
                            print(f"  ({time.monotonic() - began:.1f}s)", flush=True)
                        except Exception as exc:
                            traceback.print_exc()
                            results.errors.append(
                                f"repetition {rep + 1}, {system}, {session.__name__}: {exc}"
                            )
        finally:
            dbs.embedded.stop()
    finally:
        await procs.close()
        for path in sorted((home / "profiles").glob("*.txt")):
            print("\n" + profiling.summary(path), flush=True)
        if keep or profile or results.errors:
            print(f"kept the run directory (logs, data): {home}", flush=True)
        else:
            shutil.rmtree(home, ignore_errors=True)
    return facts
