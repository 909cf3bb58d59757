"""Runs uvicorn's own WebSocket protocol tests against statebus's socket protocol.

    python scripts/upstream_ws_tests.py [--json REPORT] [-- PYTEST_ARGS...]

statebus.wsserver is a fork of uvicorn's websockets-sansio protocol; this keeps it honest.
It fetches the sdist of the installed uvicorn from the package index (`pip download`,
cached under .statebus/upstream/), unpacks its tests/ (never its uvicorn/: the installed
package is the one under test) and runs tests/protocols/test_websocket.py there, with
`statebus.wsserver.LeanWebSocketProtocol` put in the place of uvicorn's
`WebSocketsSansIOProtocol` before anything imports it: every test of that protocol, by
the conftest's `ws_protocol_cls` fixture or by direct import, runs the fork. Only the
websockets-sansio and httptools parameters are kept (statebus serves with httptools; the
wsproto and h11 ones test other code), and pytest-asyncio is off (uvicorn's tests use
anyio's plugin).

It exits 0 when exactly the tests listed in tests/upstream/EXPECTED_FAILURES.txt fail
(each with why it does not apply to the fork) and every other one passes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "upstream" / "EXPECTED_FAILURES.txt"
SUITE = "tests/protocols/test_websocket.py"
KEEP = ("websockets-sansio", "httptools")  # parameter ids of the fork and of our HTTP parser
DROP = ("wsproto", "h11", "zttp")


def expected_failures() -> dict[str, str]:
    """Test id -> why it does not apply, from `id -- reason` lines."""
    listed: dict[str, str] = {}
    for line in EXPECTED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test_id, sep, reason = line.partition(" -- ")
            if not sep or not reason.strip():
                raise SystemExit(f"{EXPECTED.name}: no ' -- reason' in {line!r}")
            listed[test_id.strip()] = reason.strip()
    return listed


def sdist_tests(cache: Path) -> Path:
    """The unpacked tests of the installed uvicorn's sdist (fetched once, then cached)."""
    release = version("uvicorn")
    unpacked = cache / f"uvicorn-{release}"
    if (unpacked / SUITE).exists():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"uvicorn-{release}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            + ["--no-binary", ":all:", f"uvicorn=={release}", "-d", str(cache)],
            check=True,
        )
    staging = cache / f"uvicorn-{release}.partial"
    with tarfile.open(archive) as tar:
        wanted = [
            m for m in tar.getmembers() if m.name.split("/")[1:2] in (["tests"], ["pyproject.toml"])
        ]
        tar.extractall(staging, members=wanted, filter="data")
    # Moved into place whole, so an interrupted unpack is never taken for a cached one.
    (staging / f"uvicorn-{release}").rename(unpacked)
    staging.rmdir()
    return unpacked


class ForkPlugin:
    """Puts the fork in place of uvicorn's protocol, selects its tests, records outcomes."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_load_initial_conftests(self) -> None:
        # Before the conftest and the test module import the class by name.
        import uvicorn.protocols.websockets.websockets_sansio_impl as upstream

        from statebus.wsserver import LeanWebSocketProtocol

        upstream.WebSocketsSansIOProtocol = LeanWebSocketProtocol  # type: ignore[misc,assignment]

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[Any]) -> None:
        keep: list[Any] = []
        drop: list[Any] = []
        for item in items:
            params = item.callspec.id if hasattr(item, "callspec") else ""
            wanted = any(p in params for p in KEEP) and not any(p in params for p in DROP)
            (keep if wanted else drop).append(item)
        items[:] = keep
        config.hook.pytest_deselected(items=drop)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::", 1)[1]
        if report.when == "call" or report.outcome != "passed":
            if self.outcomes.get(name) in (None, "passed"):
                self.outcomes[name] = report.outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write {test id: outcome} here")
    parser.add_argument("--cache", type=Path, default=ROOT / ".statebus" / "upstream")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    listed = expected_failures()
    suite_dir = sdist_tests(args.cache)
    os.chdir(suite_dir)
    plugin = ForkPlugin()
    pytest.main(
        [SUITE, "-p", "no:asyncio", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rfs"]
        + ["--tb=short", *args.pytest_args],
        plugins=[plugin],
    )
    if args.json:
        args.json.write_text(json.dumps(plugin.outcomes, indent=1, sort_keys=True))
    failed = {name for name, outcome in plugin.outcomes.items() if outcome != "passed"}
    passed = len(plugin.outcomes) - len(failed)
    print(f"uvicorn {version('uvicorn')} WebSocket suite against the fork:", end=" ")
    print(f"{passed} passed, {len(failed)} listed as not applying, of {len(plugin.outcomes)}")
    unexpected, fixed = sorted(failed - set(listed)), sorted(set(listed) - failed)
    for name in unexpected:
        print(f"UNEXPECTED FAILURE: {name}")
    for name in fixed:
        print(f"LISTED BUT DID NOT FAIL (remove it from {EXPECTED.name}): {name}")
    return 1 if unexpected or fixed or not plugin.outcomes else 0


if __name__ == "__main__":
    sys.exit(main())
