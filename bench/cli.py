"""`python -m bench`: run the suite, print the table, write JSON and the docs page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import docs, profiling, scale
from bench.report import plot, problems, summary, text_table
from bench.results import Results
from bench.run import REPO, run_suite
from bench.sizes import FIGURES, FULL, QUICK, Sizes

SCALE = "scale"  # not in FIGURES: the suite without --only leaves it out (it takes long)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one repetition: a smoke test of the suite (<2 min)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these figures (repeatable or comma list): {', '.join(FIGURES)};"
        " or scale, the relay tier (bench/scale.py: its own Postgres, NATS cluster and"
        " dozens of processes), which runs only when named",
    )
    parser.add_argument("--repeat", type=int, help="repetitions (medians are reported)")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    parser.add_argument(
        "--docs",
        type=Path,
        help="where to write the Markdown page (default: docs/benchmarks.md, "
        "or bench/results/quick.md with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory and its logs")
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="end the run (cleanly) after this long; default 600 with --quick, else 2400 a repetition",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="run nothing: write the page and plot again from a saved run's JSON",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every server process with py-spy (pip install py-spy)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        return rewrite_page(args.from_json, args.docs or REPO / "docs" / "benchmarks.md")
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat or sizes.repeat
    if repeat < 1:
        print("python -m bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    names = [n.strip() for arg in args.only or [] for n in arg.split(",") if n.strip()]
    unknown = sorted(set(names) - {*FIGURES, SCALE})
    if unknown:
        print(
            f"python -m bench: unknown figure(s) {unknown}; pick from {(*FIGURES, SCALE)}",
            file=sys.stderr,
        )
        return 2
    command = "python -m bench" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    if SCALE in names:
        # Its own run (its own database, NATS cluster, relays and edges), table and JSON.
        code = scale.run_scale(
            quick=args.quick, repeat=args.repeat, limit=args.time_limit, command=command
        )
        names = [n for n in names if n != SCALE]
        if code or not names:
            return code
    selected = frozenset(names or FIGURES)
    if args.profile and not profiling.available():
        print("python -m bench: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    results_dir = REPO / "bench" / "results"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or results_dir / ("quick.json" if args.quick else f"{stamp}.json")
    docs_path = args.docs or (
        results_dir / "quick.md" if args.quick else REPO / "docs" / "benchmarks.md"
    )

    # A bound on the whole run, so a hang anywhere ends (and cleans up) instead of
    # holding a CI job: generous, since every step also has its own deadline.
    limit = args.time_limit or (600.0 if args.quick else 2400.0 * repeat)
    results = Results()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()
    facts: dict[str, str] = {}
    try:
        facts = asyncio.run(_run(sizes, selected, repeat, results, args.keep, args.profile, limit))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("python -m bench: interrupted; every child process was stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(
            f"python -m bench: the run passed its time limit ({limit:.0f}s);"
            " every child process was stopped",
            file=sys.stderr,
        )
        return 1
    wall = time.monotonic() - started

    table = summary(results, sizes, selected)
    found = problems(results, sizes, selected, repeat)
    print("\n" + text_table(table))
    run = {
        "command": command,
        "started_at": started_at,
        "wall_s": wall,
        "quick": args.quick,
        "repeat": repeat,
        "selected": sorted(selected),
        "sizes": dataclasses.asdict(sizes),
        "machine": {**docs.machine(facts, REPO), "load_average_at_start": load_at_start},
        "summary": table,
        "problems": found,
        # Other work on the machine: the page then says to read ratios, not numbers.
        "noisy": load_at_start[0] > 0.25 * (os.cpu_count() or 1),
        "json": _shown(json_path),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({**run, **results.to_json()}, indent=1) + "\n")
    plot_path = write_page(docs_path, run, results, sizes)
    print(
        f"\nwall time {wall:.1f}s; JSON {_shown(json_path)}; page {_shown(docs_path)}"
        + (f"; plot {_shown(plot_path)}" if plot_path else "")
    )
    if found:
        print("\nPROBLEMS:\n" + "\n".join(f"  - {p}" for p in found), file=sys.stderr)
        return 1
    return 0


def write_page(path: Path, run: dict[str, Any], results: Results, sizes: Sizes) -> Path | None:
    """The Markdown page, and its plot when the run has a latency curve."""
    plot_path = path.with_name(path.stem + "-latency.png")
    drew = any(results.curve.values())
    if drew:
        plot(results, sizes, plot_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = summary(results, sizes, frozenset(run["selected"]))
    docs.write(
        path,
        table=table,
        results=results,
        sizes=sizes,
        run=run,
        plot_name=plot_path.name if drew else None,
    )
    return plot_path if drew else None


def rewrite_page(json_path: Path, docs_path: Path) -> int:
    saved = json.loads(json_path.read_text())
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in saved["sizes"].items()
    }
    # Sizes added since the run was saved take today's defaults.
    base = dataclasses.asdict(QUICK if saved.get("quick") else FULL)
    sizes = Sizes(**{**base, **{k: v for k, v in fields.items() if k in base}})
    results = Results.from_json(saved)
    write_page(docs_path, saved, results, sizes)
    print(f"page {_shown(docs_path)} written again from {_shown(json_path)}")
    return 0


async def _run(
    sizes: Sizes,
    selected: frozenset[str],
    repeat: int,
    results: Results,
    keep: bool,
    profile: bool,
    limit: float,
) -> dict[str, str]:
    # SIGTERM and SIGHUP cancel the run like Ctrl-C does, so every finally block (child
    # processes, the embedded PostgreSQL) runs before the process ends.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await asyncio.wait_for(
            run_suite(sizes, selected, repeat, results, keep=keep, profile=profile), limit
        )
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
