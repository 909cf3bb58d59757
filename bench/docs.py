"""docs/benchmarks.md: the run's table, command, machine and plot, written by the run.

Everything from the "## What binds" heading on is written by people (from profiles)
and is carried over from the existing file unchanged.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.report import fmt, markdown_table
from bench.results import Results
from bench.servers import SYSTEMS
from bench.sizes import Sizes

BINDS = "## What binds"


def machine(facts: dict[str, str], repo: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": round(_meminfo_kib() / 2**20, 1),
        "cpu": _cpu_model(),
        "postgres": facts.get("postgres", "?"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "statebus_commit": _git(repo, "rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(_git(repo, "status", "--porcelain", "--", "server", "sql", "bench")),
    }
    for package in ("uvicorn", "websockets", "starlette", "asyncpg"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "?"
    return info


def _meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip()


def write(
    path: Path,
    *,
    table: list[dict[str, object]],
    results: Results,
    sizes: Sizes,
    run: dict[str, Any],
    plot_name: str | None,
) -> None:
    kept = ""
    if path.exists():
        old = path.read_text()
        if BINDS in old:
            kept = old[old.index(BINDS) :]
    if not kept:
        kept = f"{BINDS}\n\nNot profiled yet.\n"
    m = run["machine"]
    parts = [
        "# Benchmarks\n",
        "statebus side by side with the naive relay anyone writes first (`bench/naive.py`: a "
        "row trigger doing `pg_notify('naive', row_to_json(NEW)::text)`, one asyncpg LISTEN "
        "connection, a Starlette socket endpoint that relays each row to its user's sockets, "
        "uvicorn with its defaults). Both run against the same embedded PostgreSQL, with the "
        "same tables and rows, under the same load, in the same run, one after the other.\n",
        f"**These figures are from one run on {run['started_at']}** "
        f"({run['repeat']} repetition{'s' if run['repeat'] > 1 else ''}, medians; wall time {run['wall_s'] / 60:.1f} min; "
        f"load average at start {m['load_average_at_start']}). "
        + (
            "The machine was shared with other work during this run: read the ratios, not "
            "the absolute numbers, and re-run on a quiet machine before quoting them.\n"
            if run.get("noisy")
            else "\n"
        ),
        "## Figures\n",
        markdown_table(table) + "\n",
        "Ratio is statebus / naive: above 1 is better for statebus on commits/s and frames/s, "
        "below 1 is better on times, latency and KiB.\n",
    ]
    if run["problems"]:
        parts.append(
            "**Problems in this run:**\n\n" + "\n".join(f"- {p}" for p in run["problems"]) + "\n"
        )
    parts += [
        "## Command\n",
        f"    {run['command']}\n",
        f"Full run: `python -m bench` (3 repetitions, about 20 minutes on this machine). "
        f"Flags: `--repeat N`; `--only NAME` (pgbench, latency, admin, rss, broadcast, "
        f"capacity, contention, hold; repeatable); `--quick` (the CI smoke test: small sizes, one repetition, "
        f"numbers not meaningful, under 2 minutes); `--profile` (py-spy samples the server "
        f"during each measured phase); `--keep` (keep the run directory: logs, data, "
        f"profiles; kept anyway when a run fails); `--time-limit SECONDS`; `--json PATH`, "
        f"`--docs PATH`; `--from-json PATH` (write this page again from a saved run, keeping "
        f'the hand-written "What binds"). JSON of this run: `{run["json"]}`.\n',
        "## Machine\n",
        "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in m.items()) + "\n",
    ]
    if plot_name:
        parts += [
            "## Latency against offered load\n",
            f"![commit-to-socket latency against offered load]({plot_name})\n",
            curve_table(results) + "\n",
        ]
    parts += [method(sizes), kept.rstrip() + "\n"]
    path.write_text("\n".join(parts))


def curve_table(results: Results) -> str:
    """p50 / p99 per offered step, and the rate the writer achieved (a step whose rate
    was not achieved measured a saturated system; stepping stops after two misses)."""
    lines = [
        "| offered commits/s | statebus p50 / p99 ms (achieved/s) "
        "| naive p50 / p99 ms (achieved/s) |",
        "|---:|---:|---:|",
    ]
    sides = {system: {p[0]: p for p in results.curve_medians(system)} for system in SYSTEMS}
    for rate in sorted({r for side in sides.values() for r in side}):
        cells = []
        for system, side in sides.items():
            p = side.get(rate)
            reached = results.achieved(system, rate)
            cells.append(
                "-" if p is None else f"{fmt(p[1], 2)} / {fmt(p[2], 2)} ({fmt(reached, 0)})"
            )
        lines.append(f"| {rate:,.0f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def method(s: Sizes) -> str:
    return f"""## What each figure measures

- Set-up: one embedded PostgreSQL (the wheel's), default settings. `bench_statebus` is
  migrated by `statebus migrate` and seeded in one transaction with {s.users:,} users (a
  subscription, a `user_usage` row `posts`, a `user_system_data` row each);
  `bench_naive` is a template copy of it without statebus's schema, plus the naive row
  trigger on the four `user_*` tables. statebus runs as `python -m statebus serve`, the
  relay as `python -m bench.naive`, each one process; they never run at the same time.
  Socket clients (Python `websockets`, compression off) and the paced writer are separate
  processes; each load-generator process holds at most 5,000 sockets.
- Commits/s: `pgbench -n -c N -j min(N,2) -T {s.pgbench_seconds}`, script
  `UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || random(1..{s.users:,})`
  (autocommit), while the system's server is up and LISTENing with no socket open.
  The session starts right after a `CHECKPOINT`, so the first run of each system pays
  the full-page writes of every page it touches first. Each statebus run at N clients
  is followed by one with the `history_rows` setting off (no per-version history row),
  compared with the same relay figure.
- Commit-to-socket: {s.latency_users:,} sockets, one per user; a writer process commits
  single-row UPDATEs to random users of those at a fixed offered rate (open loop,
  {s.writer_connections} connections) and writes its CLOCK_MONOTONIC send time into the
  row; each client subtracts it on arrival. {s.warmup:g} s warm-up, then
  {s.latency_seconds:g} s counted at {s.latency_rate:g} commits/s.
- Admin UPDATE: `UPDATE user_system_data SET onboarding_completed = NOT
  onboarding_completed` over all {s.users:,} users, with {s.fanout_sockets:,} sockets
  (users u1..u{s.fanout_sockets}) open on one server process; commit = the statement's
  round trip; current = from its start until the last socket has a frame for its user.
- RSS per idle socket: the server process's RSS (VmRSS, settled) with the
  {s.fanout_sockets:,} sockets open minus before them (after 4 sockets opened and closed),
  divided by the sockets.
- Broadcast: {s.broadcast_sockets:,} sockets of one user (statebus's
  `STATEBUS_MAX_SOCKETS_PER_USER` raised to match); one UPDATE of that user; sockets /
  seconds from the statement's start until the last socket has the frame; median of
  {s.broadcast_versions} versions.
- Two-user two-table transactions: `pgbench -n -c {s.contention_clients} -j 2 -T
  {s.contention_seconds} --failures-detailed`, each transaction `BEGIN; UPDATE user_usage
  ... WHERE user_id = 'u' || a; UPDATE user_system_data ... WHERE user_id = 'u' || b; END`
  with a and b two different users of u1..u{s.contention_users}. Deadlocks are pgbench's
  deadlock failures (not retried). "Every trigger disabled" runs the same script in the
  same database first, with `ALTER TABLE ... DISABLE TRIGGER USER` on both tables: what
  the application sees without statebus or the relay.
- Long admin transaction: one connection runs `BEGIN; UPDATE user_subscriptions ...`
  over users u1..u{s.hold_users:,}, stays open {s.hold_seconds:g} s, then `COMMIT`;
  meanwhile {s.hold_app_connections} connections write single-row autocommit `user_usage`
  UPDATEs of random users among them. Longest write = the slowest of those round trips,
  from the admin's UPDATE until 0.2 s after its COMMIT returned.
- Sustained commits/s: the offered load steps through
  {", ".join(f"{r:g}" for r in s.capacity_rates)} commits/s ({s.capacity_seconds:g} s
  each, same set-up as commit-to-socket); the highest step whose p99 stays under
  {s.capacity_p99_ms:g} ms while the writer achieves the offered rate (within 5%).
"""
