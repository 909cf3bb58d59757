"""uvicorn's own WebSocket protocol tests, run against statebus's fork of its protocol
(statebus.wsserver) by scripts/upstream_ws_tests.py in a subprocess: every selected test
passes but those listed in EXPECTED_FAILURES.txt, which fail."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The selected tests of uvicorn 0.55.0's tests/protocols/test_websocket.py (the
# websockets-sansio and httptools parameters): a new release must be looked at, not
# taken on trust, so this changes with the pin in pyproject.toml.
UPSTREAM_TESTS = {"0.55.0": 79}


@pytest.mark.slow
def test_uvicorn_websocket_suite_passes_against_the_fork(tmp_path: Path) -> None:
    release = version("uvicorn")
    assert release in UPSTREAM_TESTS, f"uvicorn {release}: count its tests, then add it here"
    report = tmp_path / "outcomes.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "upstream_ws_tests.py"), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, tail
    outcomes: dict[str, str] = json.loads(report.read_text())
    expected = {
        line.partition(" -- ")[0].strip()
        for line in (ROOT / "tests" / "upstream" / "EXPECTED_FAILURES.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    failed = {name for name, outcome in outcomes.items() if outcome != "passed"}
    assert failed == expected, tail
    assert len(outcomes) == UPSTREAM_TESTS[release], tail
    assert len(outcomes) - len(failed) == UPSTREAM_TESTS[release] - len(expected)
