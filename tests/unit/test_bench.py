"""The benchmark suite's own arithmetic: what it reads from frames and how it judges runs."""

from __future__ import annotations

from bench.report import problems
from bench.results import Results, percentile
from bench.sizes import QUICK
from bench.sockets import used_value


def test_used_is_found_in_the_naive_row_and_inside_the_statebus_snapshot() -> None:
    row = {"user_id": "u1", "metric": "posts", "used": 42, "period_start": "..."}
    snapshot = {
        "type": "snapshot",
        "user_id": "u1",
        "version": 3,
        "state": {"usage": {"posts": {"used": 42, "period_start": "..."}}, "system": None},
    }
    assert used_value(row) == 42
    assert used_value(snapshot) == 42
    assert used_value({"type": "ready"}) is None
    assert used_value({"state": None}) is None


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7


def test_the_curve_is_the_median_per_step_in_load_order() -> None:
    results = Results()
    for p50, p99 in ((1.0, 5.0), (3.0, 9.0), (2.0, 7.0)):
        results.point("statebus", 500, {"p50_ms": p50, "p99_ms": p99})
    results.point("statebus", 250, {"p50_ms": 0.5, "p99_ms": 1.0})
    assert results.curve_medians("statebus") == [(250.0, 0.5, 1.0), (500.0, 2.0, 7.0)]


def test_a_missing_or_insane_figure_is_a_problem() -> None:
    results = Results()
    for system in ("statebus", "naive"):
        results.add(system, "latency_p50_ms", 2.0)
        results.add(system, "latency_p99_ms", 5.0)
    assert problems(results, QUICK, frozenset({"latency"}), repeat=1) == []
    results.runs["naive"]["latency_p99_ms"] = [1.0]  # below its p50
    results.runs["statebus"]["latency_p50_ms"] = [float("nan")]
    found = problems(results, QUICK, frozenset({"latency"}), repeat=1)
    assert any("p50 above p99" in p for p in found)
    assert any("bad values" in p for p in found)
    assert any("0 runs" in p for p in problems(Results(), QUICK, frozenset({"rss"}), 1))


def test_no_deadlock_is_a_figure_not_a_problem() -> None:
    results = Results()
    for system in ("statebus", "naive"):
        for key in ("contention_tx_s", "contention_bare_tx_s"):
            results.add(system, key, 100.0)
        results.add(system, "contention_deadlocks", 0.0)
    assert problems(results, QUICK, frozenset({"contention"}), repeat=1) == []
    results.runs["statebus"]["contention_tx_s"] = [0.0]
    assert problems(results, QUICK, frozenset({"contention"}), repeat=1) == [
        "statebus contention_tx_s: bad values [0.0]"
    ]
