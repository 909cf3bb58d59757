"""What a run measured: one value per repetition per figure and system, and the curve."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.servers import SYSTEMS


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Results:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, list[float]]] = {s: {} for s in SYSTEMS}
        # system -> offered commits/s -> one point per repetition
        self.curve: dict[str, dict[str, list[dict[str, float]]]] = {s: {} for s in SYSTEMS}
        self.details: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def add(self, system: str, key: str, value: float) -> None:
        self.runs[system].setdefault(key, []).append(value)

    def point(self, system: str, rate: float, point: dict[str, float]) -> None:
        self.curve[system].setdefault(f"{rate:g}", []).append(point)

    def median(self, system: str, key: str) -> float | None:
        values = self.runs[system].get(key)
        return statistics.median(values) if values else None

    def curve_medians(self, system: str) -> list[tuple[float, float, float]]:
        """(offered, p50 ms, p99 ms) per step, medians over repetitions, by offered load."""
        rows = []
        for rate, points in self.curve[system].items():
            rows.append(
                (
                    float(rate),
                    statistics.median(p["p50_ms"] for p in points),
                    statistics.median(p["p99_ms"] for p in points),
                )
            )
        return sorted(rows)

    def achieved(self, system: str, rate: float) -> float | None:
        """Median commits/s the writer reached at one offered step."""
        points = self.curve[system].get(f"{rate:g}", [])
        return statistics.median(p["achieved"] for p in points) if points else None

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Results:
        results = cls()
        results.runs, results.curve = saved["runs"], saved["curve"]
        results.details, results.errors = saved["details"], saved["errors"]
        return results

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "curve": self.curve,
            "details": self.details,
            "errors": self.errors,
        }
