"""The run's table, its sanity checks, and the plot of latency against offered load."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.results import Results
from bench.sizes import Sizes


@dataclass(frozen=True)
class Row:
    figure: str  # the --only name that produces it
    key: str
    label: str
    digits: int
    # The relay's figure it is compared with, when statebus alone measures this key
    # (a statebus setting the relay has no counterpart of).
    baseline: str | None = None

    def key_of(self, system: str) -> str:
        """The key under which `system` measured this row."""
        return self.baseline if system == "naive" and self.baseline else self.key


# Figures that may honestly be 0: the sustained rate on a starved machine, deadlocks.
CAN_BE_ZERO = frozenset({"sustained_commits_s", "contention_deadlocks"})


def rows(sizes: Sizes) -> list[Row]:
    out = [
        Row(
            "pgbench",
            f"pgbench_c{c}",
            f"single-row UPDATE commits/s, pgbench, {c} client" + ("s" if c > 1 else ""),
            0,
        )
        for c in sizes.pgbench_clients
    ]
    out += [
        Row(
            "pgbench",
            f"pgbench_nohistory_c{c}",
            f"the same with history_rows off, {c} client" + ("s" if c > 1 else ""),
            0,
            baseline=f"pgbench_c{c}",
        )
        for c in sizes.pgbench_clients
    ]
    out += [
        Row("pgbench", "split_update_ms", "single-row transaction: UPDATE round trip, ms", 3),
        Row("pgbench", "split_commit_ms", "single-row transaction: COMMIT round trip, ms", 3),
    ]
    at = f"{sizes.latency_users:,} users, {sizes.latency_rate:g} commits/s"
    users, sockets = f"{sizes.users:,}", f"{sizes.fanout_sockets:,}"
    return out + [
        Row("latency", "latency_p50_ms", f"commit-to-socket p50, ms ({at})", 2),
        Row("latency", "latency_p99_ms", f"commit-to-socket p99, ms ({at})", 2),
        Row("admin", "admin_commit_s", f"{users}-user admin UPDATE: commit, s", 2),
        Row(
            "admin",
            "admin_current_s",
            f"{users}-user admin UPDATE: all {sockets} sockets current, s",
            2,
        ),
        Row(
            "rss",
            "rss_kib_per_socket",
            f"RSS per idle socket, KiB ({sockets} sockets, one process)",
            1,
        ),
        Row(
            "broadcast",
            "broadcast_frames_s",
            f"one version to {sizes.broadcast_sockets:,} sockets of one user, frames/s",
            0,
        ),
        Row(
            "contention",
            "contention_tx_s",
            f"two-user two-table transactions/s ({sizes.contention_clients} connections, "
            f"{sizes.contention_users} users)",
            0,
        ),
        Row("contention", "contention_deadlocks", "deadlocks among those, per run", 0),
        Row(
            "contention",
            "contention_bare_tx_s",
            "the same transactions/s with every trigger disabled",
            0,
        ),
        Row(
            "hold",
            "hold_app_max_ms",
            f"app's longest single-row write during a {sizes.hold_seconds:g} s admin "
            f"transaction over {sizes.hold_users:,} users, ms",
            1,
        ),
        Row("hold", "hold_admin_commit_ms", "that admin transaction's COMMIT, ms", 1),
        Row(
            "capacity",
            "sustained_commits_s",
            f"sustained commits/s before p99 > {sizes.capacity_p99_ms:g} ms",
            0,
        ),
    ]


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary(results: Results, sizes: Sizes, selected: frozenset[str]) -> list[dict[str, object]]:
    table: list[dict[str, object]] = []
    for row in rows(sizes):
        if row.figure not in selected:
            continue
        ours = results.median("statebus", row.key_of("statebus"))
        theirs = results.median("naive", row.key_of("naive"))
        if ours is None and theirs is None and not results.errors:
            continue  # a saved run from before this figure existed
        ratio = ours / theirs if ours is not None and theirs else None
        table.append(
            {
                "key": row.key,
                "figure": row.label,
                "statebus": ours,
                "naive": theirs,
                "ratio": ratio,
                "digits": row.digits,
            }
        )
    return table


def text_table(table: list[dict[str, object]]) -> str:
    width = max([len(str(r["figure"])) for r in table] + [6])
    lines = [f"{'figure':<{width}}  {'statebus':>10}  {'naive':>10}  {'ratio':>6}"]
    for r in table:
        d = int(str(r["digits"]))
        lines.append(
            f"{r['figure']!s:<{width}}  {fmt(_f(r['statebus']), d):>10}  "
            f"{fmt(_f(r['naive']), d):>10}  {fmt(_f(r['ratio']), 2):>6}"
        )
    return "\n".join(lines)


def markdown_table(table: list[dict[str, object]]) -> str:
    lines = ["| figure | statebus | naive relay | statebus / naive |", "|---|---:|---:|---:|"]
    for r in table:
        d = int(str(r["digits"]))
        lines.append(
            f"| {r['figure']} | {fmt(_f(r['statebus']), d)} | {fmt(_f(r['naive']), d)} | "
            f"{fmt(_f(r['ratio']), 2)} |"
        )
    return "\n".join(lines)


def _f(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def problems(results: Results, sizes: Sizes, selected: frozenset[str], repeat: int) -> list[str]:
    """What makes the numbers insane: missing runs, non-finite or non-positive values,
    p50 above p99."""
    found = list(results.errors)
    for row in rows(sizes):
        if row.figure not in selected:
            continue
        for system, runs in results.runs.items():
            values = runs.get(row.key_of(system), [])
            if len(values) != repeat:
                found.append(f"{system} {row.key}: {len(values)} runs of {repeat}")
            low = 0.0 if row.key in CAN_BE_ZERO else 1e-9
            bad = [v for v in values if not math.isfinite(v) or v < low]
            if bad:
                found.append(f"{system} {row.key}: bad values {bad}")
    for system in results.runs:
        p50s = results.runs[system].get("latency_p50_ms", [])
        p99s = results.runs[system].get("latency_p99_ms", [])
        if any(a > b for a, b in zip(p50s, p99s, strict=False)):
            found.append(f"{system}: latency p50 above p99")
        if "capacity" in selected and not results.curve[system]:
            found.append(f"{system}: no step of the offered-load curve ran")
    return found


def plot(results: Results, sizes: Sizes, path: Path) -> None:
    """Commit-to-socket p50 and p99 against offered load, both systems, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    styles = {"statebus": "tab:blue", "naive": "tab:orange"}
    for system, color in styles.items():
        points = results.curve_medians(system)
        if not points:
            continue
        x = [p[0] for p in points]
        label = "statebus" if system == "statebus" else "naive relay"
        ax.plot(x, [p[1] for p in points], "o-", color=color, label=f"{label} p50")
        ax.plot(x, [p[2] for p in points], "s--", color=color, label=f"{label} p99")
    ax.axhline(sizes.capacity_p99_ms, color="grey", linewidth=0.8, linestyle=":")
    ax.text(
        ax.get_xlim()[1],
        sizes.capacity_p99_ms * 0.9,
        f"p99 bound {sizes.capacity_p99_ms:g} ms ",
        color="grey",
        fontsize=8,
        horizontalalignment="right",
        verticalalignment="top",
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("offered load, single-row commits/s")
    ax.set_ylabel("commit-to-socket latency, ms")
    ax.set_title(f"commit-to-socket latency, {sizes.latency_users:,} users, one socket each")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
